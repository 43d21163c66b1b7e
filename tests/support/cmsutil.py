"""Helpers shared by the vector, interop, negative and benchmark code for S/MIME messages.

Load keys (PKCS#12, PEM, PKCS#8 DER) into key agents, wrap raw CMS blobs into minimal
RFC 5322 messages, split headers from bodies, and run the `openssl` / `smime-proxy` CLIs.
"""

from __future__ import annotations

import base64
import email.parser
import email.policy
import os
import subprocess
import sys
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import pkcs12

from smime_proxy.crypto.keyagent import InProcessKeyAgent

TESTS = Path(__file__).resolve().parent.parent
REPO = TESTS.parent
VECTORS = TESTS / "vectors"


def load_p12(path: Path, password: bytes) -> InProcessKeyAgent:
    """An in-process agent from a PKCS#12 file (NSS files are BER: silence that warning)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        key, cert, extra = pkcs12.load_key_and_certificates(path.read_bytes(), password)
    assert cert is not None, f"{path.name}: no certificate"
    assert isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey), path.name
    return InProcessKeyAgent(key, cert, tuple(extra))


def load_private_key(data: bytes) -> rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey:
    """A PEM or DER (PKCS#8 / traditional) private key."""
    if b"-----BEGIN" in data:
        key = serialization.load_pem_private_key(data, password=None)
    else:
        key = serialization.load_der_private_key(data, password=None)
    assert isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey)
    return key


def load_cert(path: Path) -> x509.Certificate:
    data = path.read_bytes()
    if b"-----BEGIN" in data:
        return x509.load_pem_x509_certificate(data)
    return x509.load_der_x509_certificate(data)


def agent_from_files(key_path: Path, cert_path: Path) -> InProcessKeyAgent:
    return InProcessKeyAgent(load_private_key(key_path.read_bytes()), load_cert(cert_path))


def pem_to_der(data: bytes) -> bytes:
    """The DER inside a PEM block (any label); DER input is returned as-is."""
    if b"-----BEGIN" not in data:
        return data
    lines = data.strip().splitlines()
    body = b"".join(line for line in lines if not line.startswith(b"-----"))
    return base64.b64decode(body)


def pkcs7_mime(
    der: bytes,
    smime_type: str,
    *,
    sender: str = "sender@example.test",
    to: str = "rcpt@example.test",
    subject: str = "raw CMS wrapped for the recipes API",
) -> bytes:
    """A minimal application/pkcs7-mime message around a raw CMS ContentInfo (DER)."""
    b64 = base64.encodebytes(der).replace(b"\n", b"\r\n")
    head = (
        f"From: {sender}\r\nTo: {to}\r\nSubject: {subject}\r\nMIME-Version: 1.0\r\n"
        f"Content-Type: application/pkcs7-mime; smime-type={smime_type}; name=smime.p7m\r\n"
        "Content-Transfer-Encoding: base64\r\n"
        "Content-Disposition: attachment; filename=smime.p7m\r\n\r\n"
    )
    return head.encode("ascii") + b64


def split_message(message: bytes) -> tuple[bytes, bytes]:
    """(header block including the blank line, body), whatever the line ends."""
    for sep in (b"\r\n\r\n", b"\n\n"):
        idx = message.find(sep)
        if idx >= 0:
            return message[: idx + len(sep)], message[idx + len(sep) :]
    return message, b""


def header_value(message: bytes, name: str) -> str | None:
    head, _ = split_message(message)
    parsed = email.parser.BytesHeaderParser(policy=email.policy.compat32).parsebytes(head)
    value = parsed.get(name)
    return None if value is None else str(value)


def with_outer_headers(outer: bytes, inner: bytes) -> bytes:
    """`inner` (a decrypted or unwrapped entity) with the outer message's non-MIME headers.

    If `inner` already carries a From header it is returned unchanged. This is what a client
    shows for a decrypted message: outer From/To/Subject/Date, inner content headers.
    """
    if header_value(inner, "From") is not None:
        return inner
    head, _ = split_message(outer)
    keep: list[bytes] = []
    current: list[bytes] = []
    for line in head.replace(b"\r\n", b"\n").split(b"\n"):
        if line[:1] in (b" ", b"\t") and current:
            current.append(line)
            continue
        if current:
            keep.extend(current)
        current = [] if not line else [line]
        name = line.split(b":", 1)[0].strip().lower()
        if name.startswith(b"content-") or name == b"mime-version":
            current = []
    if current:
        keep.extend(current)
    return b"".join(line + b"\r\n" for line in keep) + inner


def canon_crlf(data: bytes) -> bytes:
    return data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


# --- subprocesses ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Run:
    returncode: int
    stdout: bytes
    stderr: bytes


def cli_env() -> dict[str, str]:
    env = dict(os.environ)
    src = str(REPO / "src")
    env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def run_cli(args: Sequence[str], stdin: bytes = b"", *, timeout: float = 120) -> Run:
    """`python -m smime_proxy ARGS` with `stdin`; never raises for a non-zero exit."""
    proc = subprocess.run(
        [sys.executable, "-m", "smime_proxy", *args],
        input=stdin,
        capture_output=True,
        timeout=timeout,
        env=cli_env(),
        check=False,
    )
    return Run(proc.returncode, proc.stdout, proc.stderr)


def run_tool(args: Sequence[str], stdin: bytes = b"", *, timeout: float = 120) -> Run:
    """An external tool (openssl, gpgsm...); never raises for a non-zero exit."""
    proc = subprocess.run(
        list(args), input=stdin, capture_output=True, timeout=timeout, check=False
    )
    return Run(proc.returncode, proc.stdout, proc.stderr)


def openssl(*args: str, stdin: bytes = b"", timeout: float = 120) -> bytes:
    """`openssl ARGS`; stdout, or an AssertionError naming the failure."""
    res = run_tool(["openssl", *args], stdin, timeout=timeout)
    assert res.returncode == 0, (
        f"openssl {' '.join(args)} failed ({res.returncode}): {res.stderr.decode(errors='replace')}"
    )
    return res.stdout


def assert_clean_failure(res: Run, code: int = 2) -> None:
    """Exit `code`, exactly one stderr line, no traceback."""
    err = res.stderr.decode("utf-8", errors="replace")
    assert res.returncode == code, f"exit {res.returncode}, stderr: {err!r}"
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one stderr line, got {lines!r}"


def multipart_signed(headers: str, entity: bytes, signature: bytes) -> bytes:
    """A multipart/signed message: `headers` (lines ending CRLF), the entity, a detached p7s."""
    boundary = "----smime-proxy-tests-boundary"
    b64 = base64.encodebytes(signature).replace(b"\n", b"\r\n")
    head = (
        headers + "MIME-Version: 1.0\r\n"
        'Content-Type: multipart/signed; protocol="application/pkcs7-signature"; '
        f'micalg=sha-256; boundary="{boundary}"\r\n\r\n'
        "This is an S/MIME signed message\r\n\r\n"
        f"--{boundary}\r\n"
    ).encode()
    sig_part = (
        f"\r\n--{boundary}\r\n"
        "Content-Type: application/pkcs7-signature; name=smime.p7s\r\n"
        "Content-Transfer-Encoding: base64\r\n"
        "Content-Disposition: attachment; filename=smime.p7s\r\n\r\n"
    ).encode()
    return head + entity + sig_part + b64 + f"\r\n--{boundary}--\r\n".encode()
