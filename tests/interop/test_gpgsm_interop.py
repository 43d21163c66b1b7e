"""Interop with gpgsm (GnuPG 2.2), both directions, through the API and the CLI.

gpgsm produces and consumes raw CMS, not MIME: detached signatures are cut out of / put into
a multipart/signed message here, exactly as mutt or KMail do around gpgsm. gpgsm 2.2 reads
neither RSA-OAEP nor AuthEnvelopedData (notes/crypto.md rule 10), so envelopes are
AES-128-CBC / AES-256-CBC with RSA PKCS#1 v1.5. Signatures: RSA PKCS#1 v1.5 both ways,
RSA-PSS ours -> gpgsm (gpgsm cannot create PSS).

Each module run uses a temporary GNUPGHOME (allow-loopback-pinentry, test root in
trustlist.txt, keys imported from PBE-SHA1-3DES PKCS#12) and kills its gpg-agent afterwards.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from smime_proxy.smime import (
    Cipher,
    Recipient,
    decrypt_message,
    encrypt_message,
    inspect_signature,
    sign_message,
)
from support.cmsutil import canon_crlf, multipart_signed, pkcs7_mime, run_cli, split_message
from support.interop import (
    AT_ISO,
    ENTITY,
    ENTITY_TEXT,
    NOW,
    PKCS12_PASSWORD,
    Gpgsm,
    Pki,
    gpgsm_home,
    have_gpgsm,
    make_pki,
    message_for,
)

pytestmark = [
    pytest.mark.interop,
    pytest.mark.skipif(not have_gpgsm(), reason="gpgsm / gpgconf not installed"),
]

BODY_TEXT = b"Hello from the interop tests."
CBC: list[Cipher] = ["aes-128-cbc", "aes-256-cbc"]


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"), names=("rsa", "rsa2"))


@pytest.fixture(scope="module")
def gpg(tmp_path_factory: pytest.TempPathFactory, pki: Pki) -> Iterator[Gpgsm]:
    with gpgsm_home(tmp_path_factory.mktemp("gnupg"), pki, secret_keys=("rsa", "rsa2")) as g:
        yield g


# --- MIME <-> raw CMS ---------------------------------------------------------------------------


def split_multipart_signed(message: bytes) -> tuple[bytes, bytes]:
    """(the signed entity exactly as hashed: CRLF, no boundary CRLF), detached signature DER."""
    message = canon_crlf(message)
    head, body = split_message(message)
    unfolded = re.sub(rb"\r\n[ \t]+", b" ", head)
    match = re.search(rb'boundary="?([^";\r\n]+)"?', unfolded, re.IGNORECASE)
    assert match, "not a multipart message"
    delimiter = b"--" + match.group(1)
    segments = re.split(rb"(?:^|\r\n)" + re.escape(delimiter), body)
    assert len(segments) >= 4 and segments[3].startswith(b"--"), "expected exactly two parts"
    content = segments[1].split(b"\r\n", 1)[1]
    _, sig_b64 = split_message(segments[2].split(b"\r\n", 1)[1])
    return content, base64.b64decode(sig_b64)


def signed_by(sender: str, entity: bytes, signature: bytes) -> bytes:
    headers = f"From: {sender}\r\nTo: rcpt@example.test\r\nSubject: gpgsm signed\r\n"
    return multipart_signed(headers, entity, signature)


def body_der(message: bytes) -> bytes:
    _, body = split_message(message)
    return base64.b64decode(body)


def status(res_stderr: bytes) -> str:
    return res_stderr.decode("utf-8", errors="replace")


def gpgsm_verify(gpg: Gpgsm, tmp: Path, content: bytes, signature: bytes) -> tuple[int, str]:
    (tmp / "content").write_bytes(content)
    (tmp / "sig.p7s").write_bytes(signature)
    res = gpg.run("--verify", str(tmp / "sig.p7s"), str(tmp / "content"))
    return res.returncode, status(res.stderr)


# --- ours -> gpgsm: signatures ------------------------------------------------------------------


@pytest.mark.parametrize("pss", [False, True], ids=["pkcs1", "pss"])
def test_api_detached_signature_verified_by_gpgsm(
    gpg: Gpgsm, pki: Pki, tmp_path: Path, pss: bool
) -> None:
    signed = sign_message(message_for(pki, "rsa"), pki.agent("rsa"), pss=pss, now=NOW)
    content, signature = split_multipart_signed(signed)
    assert BODY_TEXT in content
    code, log = gpgsm_verify(gpg, tmp_path, content, signature)
    assert code == 0, log
    assert "[GNUPG:] GOODSIG" in log and "[GNUPG:] VALIDSIG" in log
    assert "TRUST_FULLY" in log
    # Control: the same signature over changed content is refused by gpgsm.
    code, log = gpgsm_verify(gpg, tmp_path, content.replace(b"Hello", b"Jello"), signature)
    assert code != 0
    assert "BADSIG" in log


def test_cli_detached_signature_verified_by_gpgsm(gpg: Gpgsm, pki: Pki, tmp_path: Path) -> None:
    res = run_cli(["msg", "sign", "--p12", str(pki.bundle("rsa"))], message_for(pki, "rsa"))
    assert res.returncode == 0, res.stderr.decode(errors="replace")
    content, signature = split_multipart_signed(res.stdout)
    code, log = gpgsm_verify(gpg, tmp_path, content, signature)
    assert code == 0, log
    assert "[GNUPG:] GOODSIG" in log


def test_api_opaque_signature_verified_by_gpgsm(gpg: Gpgsm, pki: Pki, tmp_path: Path) -> None:
    signed = sign_message(message_for(pki, "rsa"), pki.agent("rsa"), opaque=True, now=NOW)
    (tmp_path / "opaque.p7m").write_bytes(body_der(signed))
    res = gpg.run("--verify", "--output", str(tmp_path / "out"), str(tmp_path / "opaque.p7m"))
    assert res.returncode == 0, status(res.stderr)
    assert "[GNUPG:] GOODSIG" in status(res.stderr)
    assert BODY_TEXT in (tmp_path / "out").read_bytes()


# --- gpgsm -> ours: signatures ------------------------------------------------------------------


def gpgsm_detach_sign(gpg: Gpgsm, pki: Pki, tmp: Path, name: str, entity: bytes) -> bytes:
    (tmp / "entity").write_bytes(entity)
    out = tmp / "entity.p7s"
    out.unlink(missing_ok=True)
    gpg.ok(
        "--local-user", pki.email(name), "--detach-sign", "--digest-algo", "SHA256",
        "--output", str(out), str(tmp / "entity"),
        passphrase=PKCS12_PASSWORD,
    )  # fmt: skip
    return out.read_bytes()


def test_gpgsm_detached_signature_verified_by_api(gpg: Gpgsm, pki: Pki, tmp_path: Path) -> None:
    signature = gpgsm_detach_sign(gpg, pki, tmp_path, "rsa", ENTITY)
    code, log = gpgsm_verify(gpg, tmp_path, ENTITY, signature)
    assert code == 0, f"precondition: gpgsm verifies its own signature: {log}"
    msg = signed_by(pki.email("rsa"), ENTITY, signature)
    report = inspect_signature(msg, [pki.root.cert], now=NOW)
    assert report.valid, report.reason
    assert report.signers[0].email == (pki.email("rsa"),)
    assert report.content is not None and ENTITY_TEXT in report.content


def test_gpgsm_detached_signature_tampered_is_rejected(
    gpg: Gpgsm, pki: Pki, tmp_path: Path
) -> None:
    signature = gpgsm_detach_sign(gpg, pki, tmp_path, "rsa", ENTITY)
    msg = signed_by(pki.email("rsa"), ENTITY.replace(b"Hello", b"Jello"), signature)
    report = inspect_signature(msg, [pki.root.cert], now=NOW)
    assert not report.valid
    assert not report.signers[0].signature_valid


def test_gpgsm_detached_signature_wrong_from_is_mismatch(
    gpg: Gpgsm, pki: Pki, tmp_path: Path
) -> None:
    signature = gpgsm_detach_sign(gpg, pki, tmp_path, "rsa", ENTITY)
    msg = signed_by(pki.email("rsa2"), ENTITY, signature)
    report = inspect_signature(msg, [pki.root.cert], now=NOW)
    assert report.signers[0].signature_valid and report.signers[0].chain_trusted
    assert not report.valid


def test_gpgsm_detached_signature_verified_by_cli(gpg: Gpgsm, pki: Pki, tmp_path: Path) -> None:
    signature = gpgsm_detach_sign(gpg, pki, tmp_path, "rsa2", ENTITY)
    msg = signed_by(pki.email("rsa2"), ENTITY, signature)
    res = run_cli(["msg", "verify", "--trust", str(pki.root_pem), "--at", AT_ISO], msg)
    assert res.returncode == 0, res.stdout.decode() + res.stderr.decode(errors="replace")
    data = json.loads(res.stdout)
    assert data["valid"] is True
    assert data["from"] == pki.email("rsa2")


# --- ours -> gpgsm: envelopes -------------------------------------------------------------------


@pytest.mark.parametrize("cipher", CBC)
def test_api_envelope_decrypted_by_gpgsm(
    gpg: Gpgsm, pki: Pki, tmp_path: Path, cipher: Cipher
) -> None:
    enc = encrypt_message(
        message_for(pki, "rsa2"),
        [Recipient(pki.users["rsa"].cert, key_transport="pkcs1")],
        cipher=cipher,
    )
    (tmp_path / "enc.der").write_bytes(body_der(enc))
    res = gpg.ok("--decrypt", str(tmp_path / "enc.der"), passphrase=PKCS12_PASSWORD)
    assert BODY_TEXT in res.stdout
    assert "[GNUPG:] DECRYPTION_OKAY" in status(res.stderr)


@pytest.mark.parametrize("cipher", CBC)
def test_cli_envelope_decrypted_by_gpgsm(
    gpg: Gpgsm, pki: Pki, tmp_path: Path, cipher: Cipher
) -> None:
    res = run_cli(
        ["msg", "encrypt", "--to", str(pki.cert("rsa")), "--to", str(pki.cert("rsa2")),
         "--cipher", cipher, "--key-transport", "pkcs1"],
        message_for(pki, "rsa2"),
    )  # fmt: skip
    assert res.returncode == 0, res.stderr.decode(errors="replace")
    (tmp_path / "enc.der").write_bytes(body_der(res.stdout))
    dec = gpg.ok("--decrypt", str(tmp_path / "enc.der"), passphrase=PKCS12_PASSWORD)
    assert BODY_TEXT in dec.stdout


# --- gpgsm -> ours: envelopes -------------------------------------------------------------------


def gpgsm_encrypt(gpg: Gpgsm, pki: Pki, tmp: Path, algo: str, recipients: list[str]) -> bytes:
    (tmp / "entity").write_bytes(ENTITY)
    out = tmp / "entity.p7m"
    out.unlink(missing_ok=True)
    args = ["--cipher-algo", algo, "--encrypt", "--output", str(out)]
    for name in recipients:
        args += ["--recipient", pki.email(name)]
    gpg.ok(*args, str(tmp / "entity"))
    return pkcs7_mime(out.read_bytes(), "enveloped-data", sender="gpgsm@example.test")


@pytest.mark.parametrize(("algo", "cipher"), [("AES128", "aes-128-cbc"), ("AES256", "aes-256-cbc")])
def test_gpgsm_envelope_decrypted_by_api(
    gpg: Gpgsm, pki: Pki, tmp_path: Path, algo: str, cipher: str
) -> None:
    msg = gpgsm_encrypt(gpg, pki, tmp_path, algo, ["rsa", "rsa2"])
    for name in ("rsa", "rsa2"):
        dec = decrypt_message(msg, pki.agent(name))
        assert ENTITY_TEXT in dec.content
        assert dec.cipher == cipher
        assert b"gpgsm@example.test" in split_message(dec.content)[0]


@pytest.mark.parametrize("algo", ["AES128", "AES256"])
def test_gpgsm_envelope_decrypted_by_cli(gpg: Gpgsm, pki: Pki, tmp_path: Path, algo: str) -> None:
    msg = gpgsm_encrypt(gpg, pki, tmp_path, algo, ["rsa"])
    res = run_cli(["msg", "decrypt", "--p12", str(pki.bundle("rsa"))], msg)
    assert res.returncode == 0, res.stderr.decode(errors="replace")
    assert ENTITY_TEXT in res.stdout
    other = run_cli(["msg", "decrypt", "--p12", str(pki.bundle("rsa2"))], msg)
    assert other.returncode == 1
    assert ENTITY_TEXT not in other.stdout


# --- sign-then-encrypt across the two ------------------------------------------------------------


def test_ours_sign_then_encrypt_gpgsm_decrypts_and_verifies(
    gpg: Gpgsm, pki: Pki, tmp_path: Path
) -> None:
    signed = sign_message(message_for(pki, "rsa"), pki.agent("rsa"), now=NOW)
    enc = encrypt_message(
        signed, [Recipient(pki.users["rsa2"].cert, key_transport="pkcs1")], cipher="aes-256-cbc"
    )
    (tmp_path / "enc.der").write_bytes(body_der(enc))
    dec = gpg.ok("--decrypt", str(tmp_path / "enc.der"), passphrase=PKCS12_PASSWORD)
    content, signature = split_multipart_signed(dec.stdout)
    code, log = gpgsm_verify(gpg, tmp_path, content, signature)
    assert code == 0, log
    assert "[GNUPG:] GOODSIG" in log
