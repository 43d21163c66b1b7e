"""A test PKI for revocation checking, with real servers: `openssl ocsp` as the OCSP responder
(reading an OpenSSL `index.txt`) and a stdlib HTTP server publishing CRLs.

`revocation_pki(directory)` yields a `RevocationPki`: a CA, a delegated OCSP responder
certificate it issued (EKU OCSPSigning), a second CA with a responder of its own (a signer
our CA never authorised), and the CRL server. `user(...)` issues S/MIME certificates whose
AIA names `http://127.0.0.1:<ocsp_port>/` and whose cRLDistributionPoints name
`http://127.0.0.1:<http_port>/<crl_path>`, recording them for `index.txt`; `ocsp_responder`
runs `openssl ocsp` on a port until the `with` ends.

The responder stamps thisUpdate/nextUpdate from the real clock, so every certificate here is
valid around the real time (unlike support/pki.py's fixed NOW).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import http.server
import socket
import subprocess
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID, NameOID

from support.pki import Identity, KeyKind, make_ca, new_key

IndexStatus = Literal["V", "R"]
Signer = Literal["delegated", "ca", "foreign"]


def real_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def openssl_dn(name: x509.Name) -> str:
    """`/O=.../CN=...` as openssl writes subjects in index.txt."""
    short = {NameOID.ORGANIZATION_NAME: "O", NameOID.COMMON_NAME: "CN",
             NameOID.EMAIL_ADDRESS: "emailAddress"}
    return "".join(f"/{short.get(a.oid, a.oid.dotted_string)}={a.value!s}" for a in name)


def _index_time(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%y%m%d%H%M%SZ")


@dataclass
class _Entry:
    cert: x509.Certificate
    status: IndexStatus
    revoked_at: dt.datetime | None


class CrlServer:
    """A ThreadingHTTPServer on 127.0.0.1 answering GET /<path> from `files`, or redirecting
    as `redirects` says (404 otherwise), counting requests per path."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.redirects: dict[str, str] = {}
        self.hits: dict[str, int] = {}
        files, redirects, hits = self.files, self.redirects, self.hits

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.lstrip("/")
                hits[path] = hits.get(path, 0) + 1
                if path in redirects:
                    self.send_response(302)
                    self.send_header("Location", redirects[path])
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                body = files.get(path)
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/pkix-crl")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port: int = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}/{path}"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)


@dataclass
class RevocationPki:
    directory: Path
    ca: Identity
    responder: Identity  # issued by `ca`, EKU OCSPSigning: a delegated responder
    other_ca: Identity
    foreign_responder: Identity  # EKU OCSPSigning, but issued by `other_ca`
    crls: CrlServer
    entries: list[_Entry] = field(default_factory=list)

    # --- certificates ------------------------------------------------------------------

    def user(self, email: str, *, ocsp_port: int | None = None,
             crl_path: str | None = "ca.crl", index: IndexStatus | None = "V",
             revoked_at: dt.datetime | None = None, issuer: Identity | None = None,
             ocsp_url: str | None = None) -> Identity:
        """An S/MIME certificate of `issuer` (the CA) with AIA/CDP as asked, written into
        index.txt as valid ("V"), revoked ("R", at `revoked_at`) or left out (None)."""
        issuer = issuer or self.ca
        if ocsp_url is None and ocsp_port is not None:
            ocsp_url = f"http://127.0.0.1:{ocsp_port}/"
        crl_url = None
        if crl_path is not None:
            crl_url = crl_path if "://" in crl_path else self.crls.url(crl_path)
        identity = issue_user(issuer, email, ocsp_url=ocsp_url, crl_url=crl_url)
        if index is not None:
            when = None
            if index == "R":
                when = revoked_at or real_now() - dt.timedelta(hours=1)
            self.entries.append(_Entry(identity.cert, index, when))
            self.write_index()
        return identity

    def write_index(self) -> Path:
        """index.txt (status, expiry, revocation date, serial, file, subject; tab-separated)
        and index.txt.attr, for the recorded certificates."""
        lines = []
        for entry in self.entries:
            serial = format(entry.cert.serial_number, "X")
            serial = serial.rjust(len(serial) + len(serial) % 2, "0")
            revoked = _index_time(entry.revoked_at) if entry.revoked_at else ""
            lines.append("\t".join([entry.status, _index_time(entry.cert.not_valid_after_utc),
                                    revoked, serial, "unknown", openssl_dn(entry.cert.subject)]))
        path = self.directory / "index.txt"
        path.write_text("".join(line + "\n" for line in lines))
        (self.directory / "index.txt.attr").write_text("unique_subject = no\n")
        return path

    def crl(self, *, this_update: dt.datetime | None = None,
            next_update: dt.datetime | None = None, revoked: Sequence[Identity] | None = None,
            signer: Identity | None = None,
            issuer_name: x509.Name | None = None) -> x509.CertificateRevocationList:
        """A CRL signed by the CA (or `signer`), naming its issuer (or `issuer_name`), listing
        `revoked` (default: the index's R entries), valid 7 days from `this_update` (default:
        an hour ago) unless `next_update` says otherwise."""
        signer = signer or self.ca
        this_update = this_update or real_now() - dt.timedelta(hours=1)
        builder = (x509.CertificateRevocationListBuilder()
                   .issuer_name(issuer_name or signer.cert.subject)
                   .last_update(this_update)
                   .next_update(next_update or this_update + dt.timedelta(days=7)))
        serials = ([i.cert.serial_number for i in revoked] if revoked is not None
                   else [e.cert.serial_number for e in self.entries if e.status == "R"])
        for serial in serials:
            builder = builder.add_revoked_certificate(
                x509.RevokedCertificateBuilder().serial_number(serial)
                .revocation_date(this_update - dt.timedelta(hours=1)).build())
        return builder.sign(signer.key, hashes.SHA256())

    def publish(self, path: str, crl: x509.CertificateRevocationList,
                encoding: serialization.Encoding = serialization.Encoding.DER) -> str:
        self.crls.files[path] = crl.public_bytes(encoding)
        return self.crls.url(path)

    # --- the OCSP responder -------------------------------------------------------------

    @contextlib.contextmanager
    def ocsp_responder(self, port: int, *, signer: Signer = "delegated",
                       validity: Sequence[str] = ("-nmin", "10")) -> Iterator[str]:
        """`openssl ocsp` answering for the CA from index.txt on `port` (it listens on every
        address; the checker reaches it on 127.0.0.1), signing as `signer`; `validity` is
        `-nmin N`, `-ndays N`, or empty for responses without nextUpdate."""
        identity = {"delegated": self.responder, "ca": self.ca,
                    "foreign": self.foreign_responder}[signer]
        rsigner = identity.write_pem_bundle(self.directory / f"rsigner-{signer}.pem")
        ca_pem = self.directory / "ca.pem"
        ca_pem.write_bytes(self.ca.cert_pem())
        self.write_index()
        argv = ["openssl", "ocsp", "-index", str(self.directory / "index.txt"),
                "-port", str(port), "-rsigner", str(rsigner), "-rkey", str(rsigner),
                "-CA", str(ca_pem), *validity]
        log_path = self.directory / f"ocsp-{port}.log"
        with log_path.open("wb") as log_file:
            process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log_file,
                                       stderr=subprocess.STDOUT)
        try:
            _wait_listening(port, process, log_path)
            yield f"http://127.0.0.1:{port}/"
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _wait_listening(port: int, process: subprocess.Popen[bytes], log_path: Path) -> None:
    """Until the responder's log says it waits for connections (a probing connection would
    be read as a malformed request), or fail with its log."""
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"openssl ocsp exited: {log_path.read_text(errors='replace')}")
        if b"waiting for ocsp client connections" in log_path.read_bytes().lower():
            return
        time.sleep(0.02)
    raise RuntimeError(f"openssl ocsp did not start: {log_path.read_text(errors='replace')}")


def issue_user(issuer: Identity, email: str, *, ocsp_url: str | None, crl_url: str | None,
               now: dt.datetime | None = None, kind: KeyKind = "rsa") -> Identity:
    """An S/MIME certificate of `issuer`, valid from a day before `now` (default: the real
    time) for a year, naming `ocsp_url` in its AIA and `crl_url` as its CRL DP if given."""
    now = now or real_now()
    key = new_key(kind)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "smime-proxy tests"),
            x509.NameAttribute(NameOID.COMMON_NAME, email.split("@", maxsplit=1)[0]),
            x509.NameAttribute(NameOID.EMAIL_ADDRESS, email),
        ]))
        .issuer_name(issuer.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]),
                       critical=False)
        .add_extension(x509.SubjectAlternativeName([x509.RFC822Name(email)]), critical=False)
    )
    if ocsp_url is not None:
        builder = builder.add_extension(x509.AuthorityInformationAccess([
            x509.AccessDescription(AuthorityInformationAccessOID.OCSP,
                                   x509.UniformResourceIdentifier(ocsp_url)),
        ]), critical=False)
    if crl_url is not None:
        builder = builder.add_extension(x509.CRLDistributionPoints([
            x509.DistributionPoint([x509.UniformResourceIdentifier(crl_url)], None, None, None),
        ]), critical=False)
    cert = builder.sign(issuer.key, hashes.SHA256())
    return Identity(key=key, cert=cert, chain=[issuer.cert, *issuer.chain])


def responder_cert(issuer: Identity, common_name: str = "Test OCSP Responder", *,
                   eku: bool = True, now: dt.datetime | None = None,
                   kind: KeyKind = "rsa") -> Identity:
    """A delegated OCSP responder certificate of `issuer` (EKU OCSPSigning unless not `eku`),
    valid from a day before `now` for 30 days."""
    now = now or real_now()
    key = new_key(kind)
    usage = ExtendedKeyUsageOID.OCSP_SIGNING if eku else ExtendedKeyUsageOID.EMAIL_PROTECTION
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "smime-proxy tests"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]))
        .issuer_name(issuer.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(x509.OCSPNoCheck(), critical=False)
        .sign(issuer.key, hashes.SHA256())
    )
    return Identity(key=key, cert=cert, chain=[issuer.cert])


@contextlib.contextmanager
def revocation_pki(directory: Path) -> Iterator[RevocationPki]:
    """The PKI with its CRL server running (closed when the `with` ends); the CA's fresh CRL
    (no revocations yet) is published at `ca.crl`."""
    now = real_now()
    ca = make_ca("Revocation Test CA", not_before=now - dt.timedelta(days=30),
                 not_after=now + dt.timedelta(days=3650))
    other_ca = make_ca("Another Test CA", not_before=now - dt.timedelta(days=30),
                       not_after=now + dt.timedelta(days=3650))
    crls = CrlServer()
    try:
        pki = RevocationPki(directory, ca, responder_cert(ca, "Test OCSP Responder"),
                            other_ca, responder_cert(other_ca, "Foreign OCSP Responder"), crls)
        pki.write_index()
        pki.publish("ca.crl", pki.crl())
        yield pki
    finally:
        crls.close()
