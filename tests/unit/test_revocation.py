"""smime_proxy.revocation without a network: OCSP responses built in-process with
`OCSPResponseBuilder` and CRLs with `CertificateRevocationListBuilder`, handed to the checker
through its `fetch` parameter. The real servers (openssl ocsp, an HTTP server) are in
tests/integration/test_revocation.py."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509 import ocsp

from smime_proxy.errors import UsageError
from smime_proxy.revocation import (
    DEFAULT_MAX_BYTES,
    Fetch,
    FetchRefused,
    RevocationChecker,
    RevocationResult,
    http_fetcher,
)
from support.pki import NOW, Identity, make_ca
from support.revocation_pki import issue_user, responder_cert

OCSP_URL = "http://ocsp.example.test/"
CRL_URL = "http://crl.example.test/ca.crl"
GOOD, REVOKED, UNKNOWN = (ocsp.OCSPCertStatus.GOOD, ocsp.OCSPCertStatus.REVOKED,
                          ocsp.OCSPCertStatus.UNKNOWN)


@dataclass
class Keys:
    ca: Identity
    responder: Identity  # delegated, issued by ca
    no_eku: Identity  # issued by ca, but not for OCSP signing
    other_ca: Identity
    foreign: Identity  # OCSP signing, issued by other_ca
    ec_ca: Identity


@pytest.fixture(scope="module")
def keys() -> Keys:
    ca = make_ca("Unit Revocation CA")
    other = make_ca("Unit Other CA")
    return Keys(ca, responder_cert(ca, now=NOW), responder_cert(ca, "No EKU", eku=False, now=NOW),
                other, responder_cert(other, "Foreign", now=NOW),
                make_ca("Unit EC CA", kind="p256"))


@dataclass
class Responder:
    """A `Fetch`: OCSP requests answered as the attributes say, CRLs served from `crls`."""

    issuer: Identity
    signer: Identity
    status: ocsp.OCSPCertStatus = GOOD
    this_update: dt.datetime = NOW - dt.timedelta(minutes=10)
    next_update: dt.datetime | None = NOW + dt.timedelta(hours=4)
    nonce: Literal["echo", "other", "none"] = "echo"
    serial_delta: int = 0  # answer for another serial
    include_signer: bool = True
    by_hash: bool = False
    algorithm: hashes.HashAlgorithm = field(default_factory=hashes.SHA1)
    crls: dict[str, bytes] = field(default_factory=dict)
    calls: list[str] = field(default_factory=list)
    tamper: Callable[[bytes], bytes] = lambda body: body

    def __call__(self, url: str, body: bytes | None, timeout: float) -> bytes:
        self.calls.append(url)
        if body is None:
            if url not in self.crls:
                raise OSError("404")
            return self.crls[url]
        request = ocsp.load_der_ocsp_request(body)
        name_hash, key_hash = request.issuer_name_hash, request.issuer_key_hash
        if not isinstance(self.algorithm, hashes.SHA1):
            name_hash = _digest(self.algorithm, self.issuer.cert.subject.public_bytes())
            key_hash = _digest(self.algorithm, _key_bits(self.issuer.cert))
        builder = ocsp.OCSPResponseBuilder().add_response_by_hash(
            name_hash, key_hash, request.serial_number + self.serial_delta, self.algorithm,
            self.status, self.this_update, self.next_update,
            NOW - dt.timedelta(days=2) if self.status == REVOKED else None, None)
        encoding = ocsp.OCSPResponderEncoding.HASH if self.by_hash \
            else ocsp.OCSPResponderEncoding.NAME
        builder = builder.responder_id(encoding, self.signer.cert)
        if self.include_signer and self.signer is not self.issuer:
            builder = builder.certificates([self.signer.cert])
        if self.nonce != "none":
            theirs = request.extensions.get_extension_for_class(x509.OCSPNonce).value.nonce
            nonce = theirs if self.nonce == "echo" else bytes(16)
            builder = builder.add_extension(x509.OCSPNonce(nonce), critical=False)
        response = builder.sign(self.signer.key, hashes.SHA256())
        return self.tamper(response.public_bytes(serialization.Encoding.DER))


def _digest(algorithm: hashes.HashAlgorithm, data: bytes) -> bytes:
    h = hashes.Hash(algorithm)
    h.update(data)
    return h.finalize()


def _key_bits(cert: x509.Certificate) -> bytes:
    """The subjectPublicKey BIT STRING's value: the point (EC) or the PKCS#1 key (RSA)."""
    key = cert.public_key()
    if isinstance(key, ec.EllipticCurvePublicKey):
        return key.public_bytes(serialization.Encoding.X962,
                                serialization.PublicFormat.UncompressedPoint)
    assert isinstance(key, rsa.RSAPublicKey)
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.PKCS1)


def user(keys: Keys, *, ocsp_url: str | None = OCSP_URL, crl_url: str | None = None,
         issuer: Identity | None = None) -> x509.Certificate:
    return issue_user(issuer or keys.ca, "user@example.test", ocsp_url=ocsp_url,
                      crl_url=crl_url, now=NOW, kind="p256").cert


def crl_of(issuer: Identity, *, revoked: tuple[int, ...] = (), signer: Identity | None = None,
           next_update: dt.datetime = NOW + dt.timedelta(days=7),
           delta: bool = False) -> x509.CertificateRevocationList:
    builder = (x509.CertificateRevocationListBuilder().issuer_name(issuer.cert.subject)
               .last_update(NOW - dt.timedelta(days=1)).next_update(next_update))
    for serial in revoked:
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(serial)
            .revocation_date(NOW - dt.timedelta(days=3)).build())
    if delta:
        builder = builder.add_extension(x509.DeltaCRLIndicator(1), critical=True)
    return builder.sign((signer or issuer).key, hashes.SHA256())


def der(crl: x509.CertificateRevocationList) -> bytes:
    return crl.public_bytes(serialization.Encoding.DER)


def check(keys: Keys, fetch: Responder, cert: x509.Certificate, *,
          now: dt.datetime = NOW, issuer: Identity | None = None) -> RevocationResult:
    return RevocationChecker(fetch=fetch).check(cert, (issuer or keys.ca).cert, now)


# --- nothing to ask --------------------------------------------------------------------------


def test_a_certificate_without_aia_or_cdp_is_unknown_without_a_fetch(keys: Keys) -> None:
    fetch = Responder(keys.ca, keys.responder)
    result = check(keys, fetch, user(keys, ocsp_url=None))
    assert result == RevocationResult("unknown", "none",
                                      "no OCSP responder or CRL distribution point")
    assert fetch.calls == []


@pytest.mark.parametrize("url", [
    "https://ocsp.example.test/", "ldap://ldap.example.test/cn=CA", "file:///etc/passwd",
    "http://user:secret@ocsp.example.test/", "http://ocsp.example.test/a b", "http:///nohost",
])
def test_urls_other_than_plain_http_are_never_fetched(keys: Keys, url: str) -> None:
    fetch = Responder(keys.ca, keys.responder)
    result = check(keys, fetch, user(keys, ocsp_url=url, crl_url=url))
    assert result == RevocationResult("unknown", "none", "OCSP: no http URL; CRL: no http URL")
    assert fetch.calls == []
    assert "secret" not in result.detail


def test_the_default_fetch_refuses_other_schemes_itself() -> None:
    fetch = http_fetcher()
    for url in ("https://example.test/", "file:///etc/passwd", "ftp://example.test/x"):
        with pytest.raises(FetchRefused, match="not an http URL"):
            fetch(url, None, 1.0)


def test_a_naive_now_is_a_usage_error(keys: Keys) -> None:
    with pytest.raises(UsageError):
        check(keys, Responder(keys.ca, keys.responder), user(keys), now=NOW.replace(tzinfo=None))


# --- OCSP answers ----------------------------------------------------------------------------


def test_good_from_a_delegated_responder(keys: Keys) -> None:
    result = check(keys, Responder(keys.ca, keys.responder), user(keys))
    assert result == RevocationResult("good", "ocsp", f"OCSP: good (responder {OCSP_URL})")


def test_good_signed_by_the_issuer_itself_named_by_key_hash(keys: Keys) -> None:
    result = check(keys, Responder(keys.ca, keys.ca, by_hash=True), user(keys))
    assert (result.status, result.source) == ("good", "ocsp")


def test_an_ec_issuer_and_a_sha256_cert_id(keys: Keys) -> None:
    fetch = Responder(keys.ec_ca, keys.ec_ca, algorithm=hashes.SHA256())
    cert = user(keys, issuer=keys.ec_ca)
    assert check(keys, fetch, cert, issuer=keys.ec_ca).status == "good"


def test_revoked_names_the_date(keys: Keys) -> None:
    result = check(keys, Responder(keys.ca, keys.responder, status=REVOKED), user(keys))
    assert result == RevocationResult(
        "revoked", "ocsp", f"OCSP: revoked 2026-05-30 12:00 UTC (responder {OCSP_URL})")


def test_unknown_status_then_the_crl_decides(keys: Keys) -> None:
    cert = user(keys, crl_url=CRL_URL)
    fetch = Responder(keys.ca, keys.responder, status=UNKNOWN, crls={CRL_URL: der(crl_of(keys.ca))})
    result = check(keys, fetch, cert)
    assert result == RevocationResult(
        "good", "crl", f"OCSP: certificate unknown to the responder (responder {OCSP_URL}); "
        f"CRL: good ({CRL_URL})")
    assert fetch.calls == [OCSP_URL, CRL_URL]


@pytest.mark.parametrize(("change", "reason"), [
    ({"signer": "foreign"}, "responder not authorised by the issuer"),
    ({"signer": "no_eku"}, "responder not authorised for OCSP signing"),
    ({"signer": "other_ca"}, "responder not authorised by the issuer"),
    ({"include_signer": False}, "responder not authorised by the issuer"),
    ({"nonce": "other"}, "nonce mismatch"),
    ({"serial_delta": 1}, "response is not for this certificate"),
    ({"this_update": NOW + dt.timedelta(minutes=6)},
     "from the future, thisUpdate 2026-06-01 12:06 UTC"),
    ({"next_update": NOW - dt.timedelta(minutes=6)}, "stale, nextUpdate 2026-06-01 11:54 UTC"),
    ({"next_update": None, "this_update": NOW - dt.timedelta(days=7, minutes=6)},
     "stale, nextUpdate 2026-06-01 11:54 UTC"),
    ({"signer": "ca", "tamper": lambda body: body[:-1] + bytes([body[-1] ^ 1])},
     "bad signature"),
    ({"tamper": lambda body: b"<html>not found</html>"}, "unreadable response"),
    ({"tamper": lambda body: body[: len(body) // 2]}, "unreadable response"),
    ({"tamper": lambda body: b"0\x03\n\x01\x03"}, "responder answered try_later"),
])
def test_an_untrusted_ocsp_response_is_no_answer(keys: Keys, change: dict[str, object],
                                                 reason: str) -> None:
    signer = change.pop("signer", "responder")
    fetch = Responder(keys.ca, getattr(keys, str(signer)), **change)  # type: ignore[arg-type]
    result = check(keys, fetch, user(keys))
    assert result == RevocationResult("unknown", "ocsp", f"OCSP: {reason} (responder {OCSP_URL})")


def test_within_the_clock_skew_and_without_next_update_is_fresh(keys: Keys) -> None:
    cert = user(keys)
    for this_update, next_update in ((NOW + dt.timedelta(minutes=4), None),
                                     (NOW - dt.timedelta(days=6), None),
                                     (NOW - dt.timedelta(hours=1),
                                      NOW - dt.timedelta(minutes=4))):
        fetch = Responder(keys.ca, keys.responder, this_update=this_update,
                          next_update=next_update)
        assert check(keys, fetch, cert).status == "good", (this_update, next_update)


def test_a_response_without_a_nonce_is_accepted(keys: Keys) -> None:
    assert check(keys, Responder(keys.ca, keys.responder, nonce="none"), user(keys)).status \
        == "good"


def test_the_request_carries_a_fresh_nonce_of_16_to_32_bytes(keys: Keys) -> None:
    seen: list[bytes] = []

    def fetch(url: str, body: bytes | None, timeout: float) -> bytes:
        assert body is not None and timeout == 2.5
        request = ocsp.load_der_ocsp_request(body)
        seen.append(request.extensions.get_extension_for_class(x509.OCSPNonce).value.nonce)
        raise OSError("down")

    checker = RevocationChecker(fetch=fetch, timeout=2.5)
    cert = user(keys)
    checker.check(cert, keys.ca.cert, NOW)
    checker.clear()
    checker.check(cert, keys.ca.cert, NOW)
    assert len(seen) == 2 and seen[0] != seen[1]
    assert all(16 <= len(nonce) <= 32 for nonce in seen)


def test_every_prefix_and_byte_flip_of_a_response_is_handled(keys: Keys) -> None:
    cert = user(keys)
    body = Responder(keys.ca, keys.responder)(OCSP_URL, _request(cert, keys), 1.0)
    variants = [body[:n] for n in range(0, len(body), 7)]
    variants += [body[:i] + bytes([body[i] ^ 0xFF]) + body[i + 1:]
                 for i in range(0, len(body), 11)]
    for variant in variants:
        checker = RevocationChecker(fetch=_answering(variant))
        # the nonce is ours no more (the request is another), so nothing may be good
        assert checker.check(cert, keys.ca.cert, NOW).status == "unknown"


def _answering(body: bytes) -> Fetch:
    return lambda url, request, timeout: body


def _request(cert: x509.Certificate, keys: Keys) -> bytes:
    request = (ocsp.OCSPRequestBuilder()
               .add_certificate(cert, keys.ca.cert, hashes.SHA1())  # noqa: S303 (OCSP CertID)
               .add_extension(x509.OCSPNonce(bytes(20)), critical=False).build())
    return request.public_bytes(serialization.Encoding.DER)


def test_unreachable_and_oversized_responses(keys: Keys) -> None:
    cert = user(keys)

    def down(url: str, body: bytes | None, timeout: float) -> bytes:
        raise ConnectionRefusedError("refused")

    result = RevocationChecker(fetch=down).check(cert, keys.ca.cert, NOW)
    assert result == RevocationResult("unknown", "ocsp",
                                      f"OCSP: unreachable (responder {OCSP_URL})")
    checker = RevocationChecker(fetch=lambda url, body, timeout: bytes(101), max_bytes=100)
    assert checker.check(cert, keys.ca.cert, NOW).detail == \
        f"OCSP: response too large (responder {OCSP_URL})"
    assert DEFAULT_MAX_BYTES == 4 * 1024 * 1024


# --- caching ---------------------------------------------------------------------------------


def test_an_answer_is_cached_until_next_update_or_an_hour(keys: Keys) -> None:
    cert = user(keys)
    fetch = Responder(keys.ca, keys.responder, next_update=NOW + dt.timedelta(minutes=20))
    checker = RevocationChecker(fetch=fetch)
    for minutes, calls in ((0, 1), (19, 1), (21, 2)):
        assert checker.check(cert, keys.ca.cert, NOW + dt.timedelta(minutes=minutes)).status \
            == "good"
        assert len(fetch.calls) == calls, minutes
    fetch.next_update = NOW + dt.timedelta(days=1)
    checker.clear()
    for minutes, calls in ((0, 3), (59, 3), (61, 4)):
        checker.check(cert, keys.ca.cert, NOW + dt.timedelta(minutes=minutes))
        assert len(fetch.calls) == calls, minutes


def test_a_failure_is_remembered_a_minute_at_most(keys: Keys) -> None:
    cert = user(keys)
    fetch = Responder(keys.ca, keys.responder, nonce="other")
    checker = RevocationChecker(fetch=fetch)
    assert checker.check(cert, keys.ca.cert, NOW).status == "unknown"
    assert checker.check(cert, keys.ca.cert, NOW + dt.timedelta(seconds=59)).status == "unknown"
    assert len(fetch.calls) == 1
    fetch.nonce = "echo"
    assert checker.check(cert, keys.ca.cert, NOW + dt.timedelta(seconds=61)).status == "good"
    assert len(fetch.calls) == 2


def test_the_cache_holds_max_cache_entries(keys: Keys) -> None:
    fetch = Responder(keys.ca, keys.responder)
    checker = RevocationChecker(fetch=fetch, max_cache=2)
    certs = [user(keys) for _ in range(3)]
    for cert in certs:
        checker.check(cert, keys.ca.cert, NOW)
    checker.check(certs[2], keys.ca.cert, NOW)
    assert len(fetch.calls) == 3
    checker.check(certs[0], keys.ca.cert, NOW)  # the oldest went
    assert len(fetch.calls) == 4


# --- CRLs ------------------------------------------------------------------------------------


def test_a_crl_listing_the_serial_revokes(keys: Keys) -> None:
    cert = user(keys, ocsp_url=None, crl_url=CRL_URL)
    fetch = Responder(keys.ca, keys.responder,
                      crls={CRL_URL: der(crl_of(keys.ca, revoked=(5, cert.serial_number)))})
    result = check(keys, fetch, cert)
    assert result == RevocationResult("revoked", "crl",
                                      f"CRL: revoked 2026-05-29 12:00 UTC ({CRL_URL})")


def test_a_pem_crl_is_read(keys: Keys) -> None:
    cert = user(keys, ocsp_url=None, crl_url=CRL_URL)
    pem = crl_of(keys.ca).public_bytes(serialization.Encoding.PEM)
    assert check(keys, Responder(keys.ca, keys.responder, crls={CRL_URL: pem}), cert) == \
        RevocationResult("good", "crl", f"CRL: good ({CRL_URL})")


@pytest.mark.parametrize(("body", "reason"), [
    (lambda k: der(crl_of(k.other_ca)), "issued by another CA"),
    (lambda k: der(crl_of(k.ca, signer=k.other_ca)), "bad signature"),
    (lambda k: der(crl_of(k.ca, delta=True)), "partial or delta CRL"),
    (lambda k: der(crl_of(k.ca, next_update=NOW - dt.timedelta(minutes=6))),
     "stale, nextUpdate 2026-06-01 11:54 UTC"),
    (lambda k: b"\x30\x82\x01\x00garbage", "unreadable CRL"),
    (lambda k: b"-----BEGIN X509 CRL-----\nbm90IGEgQ1JM\n-----END X509 CRL-----\n",
     "unreadable CRL"),
    (None, "unreachable"),
])
def test_an_untrusted_crl_is_no_answer(keys: Keys, body: Callable[[Keys], bytes] | None,
                                       reason: str) -> None:
    cert = user(keys, ocsp_url=None, crl_url=CRL_URL)
    crls = {CRL_URL: body(keys)} if body else {}
    result = check(keys, Responder(keys.ca, keys.responder, crls=crls), cert)
    assert result == RevocationResult("unknown", "crl", f"CRL: {reason} ({CRL_URL})")


def test_a_verified_crl_is_cached_until_its_next_update(keys: Keys) -> None:
    cert = user(keys, ocsp_url=None, crl_url=CRL_URL)
    fetch = Responder(keys.ca, keys.responder,
                      crls={CRL_URL: der(crl_of(keys.ca, next_update=NOW + dt.timedelta(days=2)))})
    checker = RevocationChecker(fetch=fetch)
    for days, calls in ((0, 1), (1, 1), (3, 2)):
        checker.check(cert, keys.ca.cert, NOW + dt.timedelta(days=days))
        assert len(fetch.calls) == calls, days
