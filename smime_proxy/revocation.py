"""Certificate revocation checking: is a certificate revoked, asked of its issuer's OCSP
responder (RFC 6960) and, failing that, of its CRLs (RFC 5280 section 5).

`RevocationChecker.check(certificate, issuer, now)` is synchronous and thread-safe (callers
run it in worker threads); its caches sit behind one lock, the network calls outside it. Only
`http://` URLs are fetched (OCSP and CRLs are signed objects served over plain HTTP), through
an injectable `Fetch`; bodies are capped at `max_bytes`. Whatever a responder or CRL server
sends, `check` answers a `RevocationResult` and never raises: a response that cannot be
parsed, is not for the certificate, is not signed by the issuer or by its delegated OCSP
responder, carries another nonce, or is stale, is no answer. A `detail` holds only URLs,
dates and fixed words.

May import: errors, cryptography, stdlib.
"""

from __future__ import annotations

import http.client
import logging
import secrets
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http.client import HTTPMessage
from itertools import pairwise
from typing import IO, Literal
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from cryptography.x509 import ocsp
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID

from smime_proxy.errors import UsageError

log = logging.getLogger(__name__)

RevocationMode = Literal["off", "soft-fail", "hard-fail"]
RevocationStatus = Literal["good", "revoked", "unknown"]
Source = Literal["ocsp", "crl", "none"]
Fetch = Callable[[str, bytes | None, float], bytes]
"""(url, POST body or None for GET, timeout) -> response body; raises OSError on failure."""

DEFAULT_MAX_BYTES = 4 * 1024 * 1024
ANSWER_TTL = timedelta(hours=1)  # longest an OCSP answer is reused
FAILURE_TTL = timedelta(seconds=60)  # longest a failure is remembered
NO_NEXT_UPDATE_AGE = timedelta(days=7)  # how old an answer without nextUpdate may be
MAX_URLS = 3  # per source and certificate: a certificate with many URLs costs bounded time
MAX_URL_LENGTH = 2048


@dataclass(frozen=True)
class RevocationResult:
    status: RevocationStatus
    source: Source  # what gave the answer; "none": no URL to ask
    detail: str  # one line: URLs, dates and fixed words only


class _Cache:
    """Values that expire at a moment of the callers' clock; at most `limit` of them: past it
    the expired ones go, then the oldest. Not locked itself."""

    def __init__(self, limit: int) -> None:
        self._limit = max(1, limit)
        self._entries: dict[Hashable, tuple[object, datetime]] = {}

    def get(self, key: Hashable, now: datetime) -> object | None:
        value, expires = self._entries.get(key, (None, now))
        return value if expires > now else None

    def put(self, key: Hashable, value: object, expires: datetime, now: datetime) -> None:
        self._entries.pop(key, None)
        if len(self._entries) >= self._limit:
            for old in [k for k, (_v, e) in self._entries.items() if e <= now]:
                del self._entries[old]
            while len(self._entries) >= self._limit:
                del self._entries[next(iter(self._entries))]
        self._entries[key] = (value, expires)


def _when(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def _usable_url(url: str) -> bool:
    """An `http://` URL with a host, no user info, printable ASCII without spaces."""
    if len(url) > MAX_URL_LENGTH or not all("!" <= c <= "~" for c in url):
        return False
    try:
        parts = urlsplit(url)
        return parts.scheme == "http" and bool(parts.hostname) and "@" not in parts.netloc
    except ValueError:
        return False


def _der_element(data: bytes, offset: int) -> tuple[int, int]:
    """Where the content of the DER element at `offset` starts and ends."""
    length, start = data[offset + 1], offset + 2
    if length & 0x80:
        count = length & 0x7F
        start, length = start + count, int.from_bytes(data[start : start + count])
    return start, start + length


def _key_bits(key: x509.Certificate) -> bytes:
    """The subjectPublicKey BIT STRING's value (what an OCSP key hash hashes): the third
    element header in, after SubjectPublicKeyInfo's SEQUENCE and AlgorithmIdentifier."""
    spki = key.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    algorithm_end = _der_element(spki, _der_element(spki, 0)[0])[1]
    if spki[algorithm_end] != 0x03:
        raise ValueError("no BIT STRING in SubjectPublicKeyInfo")
    start, end = _der_element(spki, algorithm_end)
    return spki[start + 1 : end]  # without the unused-bits byte


def _digest(algorithm: hashes.HashAlgorithm, data: bytes) -> bytes:
    h = hashes.Hash(algorithm)
    h.update(data)
    return h.finalize()


def _verify_signature(key: x509.Certificate, signature: bytes, data: bytes,
                      algorithm: hashes.HashAlgorithm | None) -> None:
    """Raises (InvalidSignature, ValueError) unless `signature` over `data` is `key`'s."""
    public = key.public_key()
    if isinstance(public, rsa.RSAPublicKey) and algorithm is not None:
        public.verify(signature, data, padding.PKCS1v15(), algorithm)
    elif isinstance(public, ec.EllipticCurvePublicKey) and algorithm is not None:
        public.verify(signature, data, ec.ECDSA(algorithm))
    elif isinstance(public, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
        public.verify(signature, data)
    else:
        raise ValueError("unsupported signature algorithm")


def _urls(certificate: x509.Certificate, source: Source) -> tuple[list[str], int]:
    """The certificate's OCSP (AIA) or CRL (cRLDistributionPoints) URIs that may be fetched,
    and how many URIs it names in all."""
    named: list[str] = []
    if source == "ocsp":
        extension = certificate.extensions.get_extension_for_class(
            x509.AuthorityInformationAccess)
        for description in extension.value:
            if description.access_method == AuthorityInformationAccessOID.OCSP and isinstance(
                    description.access_location, x509.UniformResourceIdentifier):
                named.append(description.access_location.value)
    else:
        points = certificate.extensions.get_extension_for_class(x509.CRLDistributionPoints)
        for point in points.value:
            if point.crl_issuer is None and point.reasons is None and point.full_name:
                named.extend(name.value for name in point.full_name
                             if isinstance(name, x509.UniformResourceIdentifier))
    return [url for url in named if _usable_url(url)][:MAX_URLS], len(named)


class FetchRefused(OSError):
    """A `Fetch` failure whose message is a safe, fixed reason (shown in `detail`): a body over
    the size cap, an HTTP error status, a URL or redirect that is not http."""


def http_fetcher(max_bytes: int = DEFAULT_MAX_BYTES) -> Fetch:
    """The default `Fetch`: urllib without the environment's proxies; GET without a body,
    POST of an OCSP request with one; only http URLs, also when redirected."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), _HttpRedirectsOnly())

    def fetch(url: str, body: bytes | None, timeout: float) -> bytes:
        if not _usable_url(url):
            raise FetchRefused("not an http URL")
        method = "GET" if body is None else "POST"
        request = urllib.request.Request(url, data=body, method=method)  # noqa: S310 (http only)
        if body is not None:
            request.add_header("Content-Type", "application/ocsp-request")
        deadline = time.monotonic() + timeout
        chunks: list[bytes] = []
        size = 0
        try:
            with opener.open(request, timeout=timeout) as response:
                while size <= max_bytes:
                    chunk = response.read(min(65536, max_bytes + 1 - size))
                    if not chunk:
                        break
                    chunks.append(chunk)
                    size += len(chunk)
                    if time.monotonic() > deadline:
                        raise TimeoutError("timed out")
        except urllib.error.HTTPError as error:
            error.close()
            raise FetchRefused(f"HTTP status {int(error.code)}") from None
        except (http.client.HTTPException, ValueError) as error:
            raise OSError(type(error).__name__) from None
        if size > max_bytes:
            raise FetchRefused("response too large")
        return b"".join(chunks)

    return fetch


class _HttpRedirectsOnly(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req: urllib.request.Request, fp: IO[bytes], code: int, msg: str,
                         headers: HTTPMessage, newurl: str) -> urllib.request.Request | None:
        if not _usable_url(newurl):
            return None  # urllib then raises the 3xx as an HTTPError
        return super().redirect_request(req, fp, code, msg, headers, newurl)


@dataclass(frozen=True)
class _Answer:
    status: RevocationStatus
    detail: str
    expires: datetime


class _NoAnswer(Exception):
    """A source gave no usable answer; the message is the (safe) reason."""


class RevocationChecker:
    """Answers whether a certificate is revoked: OCSP first, then CRLs. See the module doc."""

    def __init__(self, *, timeout: float = 5.0, fetch: Fetch | None = None,
                 max_bytes: int = DEFAULT_MAX_BYTES,
                 clock_skew: timedelta = timedelta(minutes=5),
                 max_cache: int = 10_000) -> None:
        self._timeout = timeout
        self._fetch = fetch if fetch is not None else http_fetcher(max_bytes)
        self._max_bytes = max_bytes
        self._skew = clock_skew
        self._max_cache = max_cache
        self._lock = threading.Lock()
        self.clear()

    def clear(self) -> None:
        """Forget every cached answer, CRL and failure."""
        with self._lock:
            self._ocsp_cache = _Cache(self._max_cache)  # (issuer key hash, serial) -> _Answer
            self._crl_cache = _Cache(self._max_cache)  # (url, issuer key hash) -> CRL or str

    def check(self, certificate: x509.Certificate, issuer: x509.Certificate,
              now: datetime) -> RevocationResult:
        if now.tzinfo is None:
            raise UsageError("RevocationChecker.check needs an aware datetime")
        now = now.astimezone(UTC)
        try:
            key_hash = _digest(hashes.SHA1(), _key_bits(issuer))  # noqa: S303 (a CertID hash)
        except Exception:  # a key type cryptography cannot load
            return RevocationResult("unknown", "none", "issuer key unusable")
        reasons: list[str] = []
        last: Source = "none"
        sources: tuple[Source, ...] = ("ocsp", "crl")
        for source in sources:
            try:
                urls, named = _urls(certificate, source)
            except x509.ExtensionNotFound:
                continue
            except Exception:  # a malformed extension: cryptography raises various errors
                reasons.append(f"{source.upper()}: unreadable extension")
                continue
            if not urls:
                if named:
                    reasons.append(f"{source.upper()}: no http URL")
                continue
            last = source
            if source == "ocsp":
                answer = self._ask_ocsp(urls, certificate, issuer, key_hash, now)
            else:
                answer = self._ask_crl(urls, certificate, issuer, key_hash, now)
            if isinstance(answer, str):
                reasons.append(answer)
                continue
            result = RevocationResult(answer.status, source, "; ".join([*reasons, answer.detail]))
            log.debug("revocation: %s", result.detail)
            return result
        detail = "; ".join(reasons) or "no OCSP responder or CRL distribution point"
        log.debug("revocation: unknown: %s", detail)
        return RevocationResult("unknown", last, detail)

    def _ask_ocsp(self, urls: list[str], certificate: x509.Certificate,
                  issuer: x509.Certificate, key_hash: bytes, now: datetime) -> _Answer | str:
        """The first good/revoked answer of the responders (cached), else the reasons."""
        key = (key_hash, certificate.serial_number)
        with self._lock:
            answer = self._ocsp_cache.get(key, now)
        if not isinstance(answer, _Answer):
            failures: list[str] = []
            for url in urls:
                answer = self._ocsp(url, certificate, issuer, now)
                if answer.status != "unknown":
                    break
                failures.append(answer.detail)
            else:
                answer = _Answer("unknown", "; ".join(failures), now + FAILURE_TTL)
            with self._lock:
                self._ocsp_cache.put(key, answer, answer.expires, now)
        return answer if answer.status != "unknown" else answer.detail

    def _ask_crl(self, urls: list[str], certificate: x509.Certificate,
                 issuer: x509.Certificate, key_hash: bytes, now: datetime) -> _Answer | str:
        """The first verified, fresh CRL's answer, else the reasons."""
        failures: list[str] = []
        for url in urls:
            try:
                crl = self._crl(url, issuer, key_hash, now)
                entry = crl.get_revoked_certificate_by_serial_number(certificate.serial_number)
                when = None if entry is None else _when(entry.revocation_date_utc)
            except _NoAnswer as failure:
                failures.append(f"CRL: {failure} ({url})")
                continue
            except Exception:  # a malformed entry (the CA signed it, but still)
                failures.append(f"CRL: unreadable CRL ({url})")
                continue
            if when is None:
                return _Answer("good", f"CRL: good ({url})", now)
            return _Answer("revoked", f"CRL: revoked {when} ({url})", now)
        return "; ".join(failures)

    def _get(self, url: str, body: bytes | None) -> bytes:
        try:
            data = self._fetch(url, body, self._timeout)
        except FetchRefused as refused:
            raise _NoAnswer(str(refused)) from None
        except OSError:
            raise _NoAnswer("unreachable") from None
        if len(data) > self._max_bytes:
            raise _NoAnswer("response too large")
        return data

    # --- OCSP ------------------------------------------------------------------------------

    def _ocsp(self, url: str, certificate: x509.Certificate, issuer: x509.Certificate,
              now: datetime) -> _Answer:
        nonce = secrets.token_bytes(16 + secrets.randbelow(17))
        try:
            try:
                request = (ocsp.OCSPRequestBuilder()
                           .add_certificate(certificate, issuer, hashes.SHA1())  # noqa: S303
                           .add_extension(x509.OCSPNonce(nonce), critical=False).build())
            except Exception:  # an odd certificate (it may come from anyone)
                raise _NoAnswer("no request for this certificate") from None
            body = self._get(url, request.public_bytes(Encoding.DER))
            try:
                response = ocsp.load_der_ocsp_response(body)
                return self._read_ocsp(response, nonce, url, certificate, issuer, now)
            except _NoAnswer:
                raise
            except Exception:  # anything a hostile body makes cryptography raise
                raise _NoAnswer("unreadable response") from None
        except _NoAnswer as failure:
            return _Answer("unknown", f"OCSP: {failure} (responder {url})", now + FAILURE_TTL)

    def _read_ocsp(self, response: ocsp.OCSPResponse, nonce: bytes, url: str,
                   certificate: x509.Certificate, issuer: x509.Certificate,
                   now: datetime) -> _Answer:
        if response.response_status != ocsp.OCSPResponseStatus.SUCCESSFUL:
            raise _NoAnswer(f"responder answered {response.response_status.name.lower()}")
        single = _single_response(response, certificate, issuer)
        signer = self._ocsp_signer(response, issuer, now)
        try:
            _verify_signature(signer, response.signature, response.tbs_response_bytes,
                              response.signature_hash_algorithm)
        except Exception:
            raise _NoAnswer("bad signature") from None
        try:
            theirs = response.extensions.get_extension_for_class(x509.OCSPNonce).value.nonce
        except x509.ExtensionNotFound:
            theirs = None
        if theirs is not None and theirs != nonce:
            raise _NoAnswer("nonce mismatch")
        next_update = self._fresh(single.this_update_utc, single.next_update_utc, now)
        expires = min(next_update, now + ANSWER_TTL)
        status = single.certificate_status
        if status == ocsp.OCSPCertStatus.GOOD:
            return _Answer("good", f"OCSP: good (responder {url})", expires)
        if status == ocsp.OCSPCertStatus.REVOKED and single.revocation_time_utc is not None:
            when = _when(single.revocation_time_utc)
            return _Answer("revoked", f"OCSP: revoked {when} (responder {url})", expires)
        raise _NoAnswer("certificate unknown to the responder")

    def _ocsp_signer(self, response: ocsp.OCSPResponse, issuer: x509.Certificate,
                     now: datetime) -> x509.Certificate:
        """The issuer, or a delegated responder certificate in the response that the issuer
        signed for OCSP signing; the one the ResponderID names."""
        def named(candidate: x509.Certificate) -> bool:
            if response.responder_name is not None:
                return candidate.subject == response.responder_name
            digest = _digest(hashes.SHA1(), _key_bits(candidate))  # noqa: S303 (a KeyHash)
            return digest == response.responder_key_hash

        if named(issuer):
            return issuer
        for candidate in response.certificates:
            if not named(candidate):
                continue
            try:
                candidate.verify_directly_issued_by(issuer)
                usages = candidate.extensions.get_extension_for_class(x509.ExtendedKeyUsage)
            except Exception:
                raise _NoAnswer("responder not authorised by the issuer") from None
            if ExtendedKeyUsageOID.OCSP_SIGNING not in usages.value:
                raise _NoAnswer("responder not authorised for OCSP signing")
            if not (candidate.not_valid_before_utc - self._skew <= now
                    <= candidate.not_valid_after_utc + self._skew):
                raise _NoAnswer("responder certificate expired")
            return candidate
        raise _NoAnswer("responder not authorised by the issuer")

    # --- CRL -------------------------------------------------------------------------------

    def _crl(self, url: str, issuer: x509.Certificate, key_hash: bytes,
             now: datetime) -> x509.CertificateRevocationList:
        """The issuer's CRL at `url`, verified and fresh (from the cache while it is)."""
        key = (url, key_hash)
        with self._lock:
            cached = self._crl_cache.get(key, now)
        if isinstance(cached, str):
            raise _NoAnswer(cached)
        if isinstance(cached, x509.CertificateRevocationList):
            return cached
        try:
            crl, expires = self._fetch_crl(url, issuer, now)
        except _NoAnswer as failure:
            with self._lock:
                self._crl_cache.put(key, str(failure), now + FAILURE_TTL, now)
            raise
        with self._lock:
            self._crl_cache.put(key, crl, expires, now)
        return crl

    def _fetch_crl(self, url: str, issuer: x509.Certificate,
                   now: datetime) -> tuple[x509.CertificateRevocationList, datetime]:
        data = self._get(url, None)
        try:
            if data.lstrip().startswith(b"-----BEGIN"):
                crl = x509.load_pem_x509_crl(data)
            else:
                crl = x509.load_der_x509_crl(data)
            if crl.issuer != issuer.subject:
                raise _NoAnswer("issued by another CA")
            if not crl.is_signature_valid(issuer.public_key()):  # type: ignore[arg-type]
                raise _NoAnswer("bad signature")
            if not _covers_all(crl):
                raise _NoAnswer("partial or delta CRL")
            last_update, next_update = crl.last_update_utc, crl.next_update_utc
        except _NoAnswer:
            raise
        except Exception:  # anything a hostile body makes cryptography raise
            raise _NoAnswer("unreadable CRL") from None
        return crl, self._fresh(last_update, next_update, now)

    def _fresh(self, this_update: datetime, next_update: datetime | None,
               now: datetime) -> datetime:
        """The moment an answer made at `this_update` stops being fresh, if it is now."""
        if this_update > now + self._skew:
            raise _NoAnswer(f"from the future, thisUpdate {_when(this_update)}")
        if next_update is None:
            next_update = this_update + NO_NEXT_UPDATE_AGE
        if next_update < now - self._skew:
            raise _NoAnswer(f"stale, nextUpdate {_when(next_update)}")
        return next_update


def _single_response(response: ocsp.OCSPResponse, certificate: x509.Certificate,
                     issuer: x509.Certificate) -> ocsp.OCSPSingleResponse:
    """The response's SingleResponse for `certificate` (serial, issuer name and key hash)."""
    name_der = issuer.subject.public_bytes()
    bits = _key_bits(issuer)
    for single in response.responses:
        algorithm = single.hash_algorithm
        if (single.serial_number == certificate.serial_number
                and single.issuer_name_hash == _digest(algorithm, name_der)
                and single.issuer_key_hash == _digest(algorithm, bits)):
            return single
    raise _NoAnswer("response is not for this certificate")


def _covers_all(crl: x509.CertificateRevocationList) -> bool:
    """Not a delta CRL, and not one limited to some reasons or kinds of certificate."""
    extensions = {type(extension.value): extension.value for extension in crl.extensions}
    point = extensions.get(x509.IssuingDistributionPoint)
    return x509.DeltaCRLIndicator not in extensions and not (
        isinstance(point, x509.IssuingDistributionPoint)
        and (point.only_contains_ca_certs or point.only_contains_attribute_certs
             or point.only_some_reasons or point.indirect_crl))


def find_issuer(certificate: x509.Certificate,
                candidates: Sequence[x509.Certificate]) -> x509.Certificate | None:
    """The candidate that directly issued `certificate` (name and signature), if any."""
    for candidate in candidates:
        if candidate.subject != certificate.issuer:
            continue
        try:
            certificate.verify_directly_issued_by(candidate)
        except (ValueError, TypeError, InvalidSignature):
            continue
        return candidate
    return None


def check_chain(checker: RevocationChecker, chain: Sequence[x509.Certificate],
                now: datetime) -> RevocationResult:
    """Every certificate of a validated chain (signer first, root last) but the root: the
    first revoked one decides, else any unknown one, else good."""
    results = [checker.check(child, parent, now) for child, parent in pairwise(chain)]
    if not results:
        return RevocationResult("unknown", "none", "no issuer to ask")
    for wanted in ("revoked", "unknown"):
        for result in results:
            if result.status == wanted:
                return result
    return results[0]
