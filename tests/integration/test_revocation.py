"""smime_proxy.revocation against real servers: `openssl ocsp` answering from an OpenSSL
index.txt, and CRLs served over HTTP by a stdlib server (support/revocation_pki.py).

The responder stamps its answers with the real clock, so these tests check at the real time
(`real_now()`), not at support/pki.py's fixed NOW. `fetch` is wrapped only to count calls or
to play a hostile network; the default urllib fetch does the talking.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp

from smime_proxy.revocation import Fetch, RevocationChecker, RevocationResult, http_fetcher
from support.pki import Identity
from support.revocation_pki import RevocationPki, Signer, free_port, real_now, revocation_pki


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RevocationPki]:
    with revocation_pki(tmp_path_factory.mktemp("revocation")) as it:
        yield it


def counting(calls: list[str], fetch: Fetch | None = None) -> Fetch:
    inner = fetch or http_fetcher()

    def wrapped(url: str, body: bytes | None, timeout: float) -> bytes:
        calls.append(url)
        return inner(url, body, timeout)

    return wrapped


def check(pki: RevocationPki, who: Identity, *, now: dt.datetime | None = None,
          checker: RevocationChecker | None = None) -> RevocationResult:
    checker = checker or RevocationChecker(timeout=5)
    return checker.check(who.cert, pki.ca.cert, now or real_now())


# --- answers from the responder --------------------------------------------------------------


@pytest.mark.parametrize("signer", ["delegated", "ca"])
def test_good(pki: RevocationPki, signer: Signer) -> None:
    port = free_port()
    alice = pki.user("alice@example.test", ocsp_port=port)
    with pki.ocsp_responder(port, signer=signer) as url:
        assert check(pki, alice) == RevocationResult("good", "ocsp",
                                                     f"OCSP: good (responder {url})")


def test_revoked_in_the_index(pki: RevocationPki) -> None:
    port = free_port()
    when = real_now().replace(second=0, microsecond=0) - dt.timedelta(days=2)
    mallory = pki.user("mallory@example.test", ocsp_port=port, index="R", revoked_at=when)
    with pki.ocsp_responder(port, validity=("-ndays", "1")) as url:
        result = check(pki, mallory)
    stamp = when.strftime("%Y-%m-%d %H:%M UTC")
    assert result == RevocationResult("revoked", "ocsp", f"OCSP: revoked {stamp} (responder {url})")


def test_revoked_on_the_crl_of_a_certificate_without_ocsp(pki: RevocationPki) -> None:
    trudy = pki.user("trudy@example.test", crl_path="trudy.crl", index=None)
    crl_url = pki.publish("trudy.crl", pki.crl(revoked=[trudy]))
    result = check(pki, trudy)
    assert result.status == "revoked" and result.source == "crl"
    assert result.detail.startswith("CRL: revoked ") and result.detail.endswith(f"({crl_url})")


def test_unknown_to_the_responder_asks_the_crl(pki: RevocationPki) -> None:
    port = free_port()
    listed = pki.user("listed@example.test", ocsp_port=port, crl_path="ca.crl", index=None)
    unlisted = pki.user("unlisted@example.test", ocsp_port=port, crl_path=None, index=None)
    with pki.ocsp_responder(port) as url:
        # not in index.txt: openssl answers "unknown"; the CA's CRL does not list it
        assert check(pki, listed) == RevocationResult(
            "good", "crl", f"OCSP: certificate unknown to the responder (responder {url}); "
            f"CRL: good ({pki.crls.url('ca.crl')})")
        # and without a CRL distribution point nothing else can answer
        assert check(pki, unlisted) == RevocationResult(
            "unknown", "ocsp", f"OCSP: certificate unknown to the responder (responder {url})")


# --- servers down ----------------------------------------------------------------------------


def test_responder_down_falls_back_to_the_crl(pki: RevocationPki) -> None:
    port = free_port()  # nothing listens there
    bob = pki.user("bob@example.test", ocsp_port=port)
    assert check(pki, bob) == RevocationResult(
        "good", "crl", f"OCSP: unreachable (responder http://127.0.0.1:{port}/); "
        f"CRL: good ({pki.crls.url('ca.crl')})")


def test_both_down_is_unknown_naming_both(pki: RevocationPki) -> None:
    ocsp_port, http_port = free_port(), free_port()
    crl_url = f"http://127.0.0.1:{http_port}/ca.crl"
    carol = pki.user("carol@example.test", ocsp_port=ocsp_port, crl_path=crl_url)
    missing = pki.user("dora@example.test", ocsp_port=ocsp_port, crl_path="missing.crl")
    assert check(pki, carol) == RevocationResult(
        "unknown", "crl", f"OCSP: unreachable (responder http://127.0.0.1:{ocsp_port}/); "
        f"CRL: unreachable ({crl_url})")
    result = check(pki, missing)
    assert result.status == "unknown"
    assert result.detail.endswith(f"CRL: HTTP status 404 ({pki.crls.url('missing.crl')})")


def test_a_responder_that_comes_back_is_asked_again_within_a_minute(pki: RevocationPki) -> None:
    port = free_port()
    erin = pki.user("erin@example.test", ocsp_port=port, crl_path=None)
    calls: list[str] = []
    checker = RevocationChecker(fetch=counting(calls))
    now = real_now()
    assert check(pki, erin, checker=checker, now=now).status == "unknown"
    with pki.ocsp_responder(port):
        assert check(pki, erin, checker=checker, now=now + dt.timedelta(seconds=30)).status \
            == "unknown"  # the failure is remembered...
        assert len(calls) == 1
        later = now + dt.timedelta(seconds=61)  # ...for a minute at most
        assert check(pki, erin, checker=checker, now=later).status == "good"
        assert len(calls) == 2


# --- stale answers ---------------------------------------------------------------------------


def test_a_response_past_its_next_update_is_stale(pki: RevocationPki) -> None:
    port = free_port()
    frank = pki.user("frank@example.test", ocsp_port=port, crl_path=None)
    with pki.ocsp_responder(port, validity=("-nmin", "10")) as url:
        assert check(pki, frank).status == "good"
        result = check(pki, frank, now=real_now() + dt.timedelta(minutes=16))
    assert result.status == "unknown" and result.source == "ocsp"
    assert result.detail.startswith("OCSP: stale, nextUpdate ")
    assert result.detail.endswith(f"(responder {url})")


def test_a_response_without_next_update_is_good_for_seven_days(pki: RevocationPki) -> None:
    port = free_port()
    grace = pki.user("grace@example.test", ocsp_port=port, crl_path=None)
    with pki.ocsp_responder(port, validity=()):
        assert check(pki, grace, now=real_now() + dt.timedelta(days=6)).status == "good"
        result = check(pki, grace, now=real_now() + dt.timedelta(days=8))
    assert result.status == "unknown" and "stale" in result.detail


def test_a_stale_crl_is_unknown(pki: RevocationPki) -> None:
    heidi = pki.user("heidi@example.test", crl_path="stale.crl", index=None)
    then = real_now() - dt.timedelta(days=10)
    crl_url = pki.publish("stale.crl", pki.crl(this_update=then,
                                               next_update=then + dt.timedelta(days=7)))
    stamp = (then + dt.timedelta(days=7)).strftime("%Y-%m-%d %H:%M UTC")
    assert check(pki, heidi) == RevocationResult("unknown", "crl",
                                                 f"CRL: stale, nextUpdate {stamp} ({crl_url})")


def test_a_pem_crl_and_one_of_another_ca(pki: RevocationPki) -> None:
    ivan = pki.user("ivan@example.test", crl_path="pem.crl", index=None)
    pki.publish("pem.crl", pki.crl(revoked=[ivan]), serialization.Encoding.PEM)
    assert check(pki, ivan).status == "revoked"
    judy = pki.user("judy@example.test", crl_path="other.crl", index=None)
    pki.publish("other.crl", pki.crl(signer=pki.other_ca))
    forged = pki.user("ken@example.test", crl_path="forged.crl", index=None)
    pki.publish("forged.crl", pki.crl(signer=pki.other_ca, issuer_name=pki.ca.cert.subject))
    assert check(pki, judy).detail.startswith("CRL: issued by another CA")
    assert check(pki, forged).detail.startswith("CRL: bad signature")


def test_a_redirect_to_https_is_not_followed(pki: RevocationPki) -> None:
    leo = pki.user("leo@example.test", crl_path="moved.crl", index=None)
    pki.crls.redirects["moved.crl"] = "https://127.0.0.1:1/ca.crl"
    pki.crls.redirects["moved-http.crl"] = pki.crls.url("ca.crl")
    assert check(pki, leo).detail == f"CRL: HTTP status 302 ({pki.crls.url('moved.crl')})"
    mia = pki.user("mia@example.test", crl_path="moved-http.crl", index=None)
    assert check(pki, mia).status == "good"


# --- hostile responders ----------------------------------------------------------------------


def test_a_signer_the_issuer_never_authorised_is_no_answer(pki: RevocationPki) -> None:
    port = free_port()
    nick = pki.user("nick@example.test", ocsp_port=port, crl_path=None)
    with pki.ocsp_responder(port, signer="foreign") as url:
        assert check(pki, nick) == RevocationResult(
            "unknown", "ocsp", f"OCSP: responder not authorised by the issuer (responder {url})")


def _rewrite_request(body: bytes, *, nonce: bytes | None = None,
                     serial: int | None = None) -> bytes:
    """The same OCSP request with another nonce or for another serial."""
    request = ocsp.load_der_ocsp_request(body)
    ours = request.extensions.get_extension_for_class(x509.OCSPNonce).value.nonce
    rebuilt = (ocsp.OCSPRequestBuilder()
               .add_certificate_by_hash(request.issuer_name_hash, request.issuer_key_hash,
                                        serial or request.serial_number, hashes.SHA1())  # noqa: S303
               .add_extension(x509.OCSPNonce(nonce or ours), critical=False).build())
    return rebuilt.public_bytes(serialization.Encoding.DER)


def test_a_validly_signed_answer_to_another_nonce_or_serial_is_no_answer(
        pki: RevocationPki) -> None:
    port = free_port()
    olivia = pki.user("olivia@example.test", ocsp_port=port, crl_path=None)
    peggy = pki.user("peggy@example.test", ocsp_port=port, crl_path=None)
    inner = http_fetcher()

    def other_nonce(url: str, body: bytes | None, timeout: float) -> bytes:
        assert body is not None
        return inner(url, _rewrite_request(body, nonce=b"\x01" * 20), timeout)

    def other_serial(url: str, body: bytes | None, timeout: float) -> bytes:
        assert body is not None
        return inner(url, _rewrite_request(body, serial=peggy.cert.serial_number), timeout)

    with pki.ocsp_responder(port) as url:
        # the responder echoes the nonce it was sent: a real, validly signed response
        assert check(pki, olivia, checker=RevocationChecker(fetch=other_nonce)).detail == \
            f"OCSP: nonce mismatch (responder {url})"
        assert check(pki, olivia, checker=RevocationChecker(fetch=other_serial)).detail == \
            f"OCSP: response is not for this certificate (responder {url})"
        assert check(pki, olivia).status == "good"


@pytest.mark.parametrize("body", [b"", b"garbage", b"\x30\x80" * 1000, b"0\x03\n\x01\x01"])
def test_garbage_from_the_network_is_unknown_never_an_exception(pki: RevocationPki,
                                                                body: bytes) -> None:
    port = free_port()
    quinn = pki.user("quinn@example.test", ocsp_port=port, crl_path="garbage.crl", index=None)
    pki.crls.files["garbage.crl"] = body
    result = check(pki, quinn, checker=RevocationChecker(fetch=lambda u, b, t: body))
    assert result.status == "unknown" and result.source == "crl"


def test_oversized_bodies_are_refused(pki: RevocationPki) -> None:
    port = free_port()
    rita = pki.user("rita@example.test", ocsp_port=port, crl_path="big.crl", index=None)
    pki.crls.files["big.crl"] = b"x" * 5000
    with pki.ocsp_responder(port) as url:
        result = check(pki, rita, checker=RevocationChecker(max_bytes=200))
    assert result == RevocationResult(
        "unknown", "crl", f"OCSP: response too large (responder {url}); "
        f"CRL: response too large ({pki.crls.url('big.crl')})")


# --- caching and threads ---------------------------------------------------------------------


def test_answers_are_cached(pki: RevocationPki) -> None:
    port = free_port()
    sam = pki.user("sam@example.test", ocsp_port=port)
    unknown = pki.user("tina@example.test", ocsp_port=port, index=None)
    calls: list[str] = []
    checker = RevocationChecker(fetch=counting(calls))
    now = real_now()
    with pki.ocsp_responder(port, validity=("-ndays", "1")):
        assert check(pki, sam, checker=checker, now=now).status == "good"
        assert check(pki, sam, checker=checker, now=now + dt.timedelta(minutes=30)).status \
            == "good"
        assert len(calls) == 1  # the second check did not touch the network
        check(pki, sam, checker=checker, now=now + dt.timedelta(minutes=61))
        assert len(calls) == 2  # an answer is kept an hour at most
        # OCSP "unknown" (kept a minute) and then the CRL (kept until its nextUpdate)
        assert check(pki, unknown, checker=checker, now=now).source == "crl"
        assert check(pki, unknown, checker=checker, now=now).source == "crl"
        assert len(calls) == 4
        assert check(pki, unknown, checker=checker, now=now + dt.timedelta(minutes=2)).status \
            == "good"
        assert calls[4:] == [f"http://127.0.0.1:{port}/"]
        checker.clear()
        check(pki, sam, checker=checker, now=now)
        assert len(calls) == 6


def test_checks_from_many_threads(pki: RevocationPki) -> None:
    port = free_port()
    people = [pki.user(f"u{i}@example.test", ocsp_port=port,
                       index="R" if i % 3 == 0 else "V") for i in range(6)]
    checker = RevocationChecker()
    with pki.ocsp_responder(port), ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda who: check(pki, who, checker=checker), people * 4))
    assert [r.status for r in results] == [
        "revoked" if i % 3 == 0 else "good" for i in range(6)] * 4
