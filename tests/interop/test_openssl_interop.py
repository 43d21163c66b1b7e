"""Interop with `openssl cms`, both directions, through the API and the CLI.

Ours -> openssl: signatures (RSA PKCS#1 v1.5, RSA-PSS, ECDSA P-256/P-384; multipart and
opaque) verified by `openssl cms -verify`; envelopes (AES-256-GCM AuthEnvelopedData,
AES-256-CBC, AES-128-CBC; RSA PKCS#1 v1.5, RSA-OAEP-SHA256, ECDH P-256/P-384; several
recipients at once) decrypted by `openssl cms -decrypt`.
openssl -> ours: signatures (RSA SHA-256, ECDSA SHA-384, RSA-PSS; detached and opaque) with
chain validation, tampered copies rejected; envelopes (-aes-256-gcm + OAEP, ECDH with SHA-1 and
SHA-256 KDF, default -aes256, -aes128, -des3, two recipients, -stream BER).
"""

from __future__ import annotations

import base64
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from smime_proxy.errors import DecryptionFailed
from smime_proxy.smime import (
    Cipher,
    KeyTransport,
    Recipient,
    decrypt_message,
    encrypt_message,
    inspect_signature,
    sign_message,
)
from support.cmsutil import Run, openssl, run_cli, run_tool, split_message
from support.interop import (
    AT_EPOCH,
    AT_ISO,
    ENTITY,
    ENTITY_TEXT,
    NOW,
    Pki,
    make_pki,
    message_for,
)

pytestmark = [
    pytest.mark.interop,
    pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl CLI not installed"),
]

BODY_TEXT = b"Hello from the interop tests."


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pki]:
    yield make_pki(tmp_path_factory.mktemp("pki"))


def write(tmp: Path, name: str, data: bytes) -> Path:
    path = tmp / name
    path.write_bytes(data)
    return path


def flip_body_byte(message: bytes, needle: bytes = BODY_TEXT) -> bytes:
    """Change one letter of the signed text (it must occur exactly once)."""
    assert message.count(needle) == 1, "precondition: the text occurs once, unencoded"
    return message.replace(needle, needle.replace(b"Hello", b"Jello"))


def openssl_verify(pki: Pki, tmp: Path, signed: bytes) -> bytes:
    path = write(tmp, "signed.eml", signed)
    return openssl(
        "cms", "-verify", "-in", str(path), "-CAfile", str(pki.root_pem), "-attime", AT_EPOCH
    )


def openssl_verify_fails(pki: Pki, tmp: Path, signed: bytes) -> bool:
    path = write(tmp, "tampered.eml", signed)
    res = run_tool(
        ["openssl", "cms", "-verify", "-in", str(path), "-CAfile", str(pki.root_pem),
         "-attime", AT_EPOCH, "-out", str(tmp / "tampered.out")]
    )  # fmt: skip
    return res.returncode != 0


def openssl_decrypt(pki: Pki, tmp: Path, name: str, enveloped: bytes) -> bytes:
    path = write(tmp, "enveloped.eml", enveloped)
    return openssl(
        "cms", "-decrypt", "-in", str(path), "-inkey", str(pki.key(name)),
        "-recip", str(pki.cert(name)),
    )  # fmt: skip


def cms_print(tmp: Path, message: bytes) -> str:
    path = write(tmp, "print.eml", message)
    return openssl("cms", "-cmsout", "-print", "-in", str(path)).decode()


def verify_json(res: Run) -> dict[str, Any]:
    assert res.stdout.strip(), f"no output; stderr: {res.stderr.decode(errors='replace')}"
    data = json.loads(res.stdout)
    assert isinstance(data, dict)
    assert set(data) >= {"valid", "reason", "from", "signers"}
    return data


# === ours -> openssl: signatures ==============================================================

SIGNERS = [("rsa", False), ("rsa", True), ("p256", False), ("p384", False)]


@pytest.mark.parametrize("opaque", [False, True], ids=["multipart", "opaque"])
@pytest.mark.parametrize(("name", "pss"), SIGNERS, ids=["rsa", "rsa-pss", "p256", "p384"])
def test_api_signature_verified_by_openssl(
    pki: Pki, tmp_path: Path, name: str, pss: bool, opaque: bool
) -> None:
    signed = sign_message(message_for(pki, name), pki.agent(name), opaque=opaque, pss=pss, now=NOW)
    out = openssl_verify(pki, tmp_path, signed)
    assert BODY_TEXT in out
    printed = cms_print(tmp_path, signed)
    if pss:
        assert "rsassaPss" in printed
    if name.startswith("p"):
        assert "ecdsa-with-SHA" in printed
    # The headers stay outside the signature, From is kept.
    head, _ = split_message(signed)
    assert pki.email(name).encode() in head
    if not opaque:
        assert openssl_verify_fails(pki, tmp_path, flip_body_byte(signed))


@pytest.mark.parametrize("opaque", [False, True], ids=["multipart", "opaque"])
@pytest.mark.parametrize("name", ["rsa", "p256", "p384"])
def test_cli_signature_verified_by_openssl(
    pki: Pki, tmp_path: Path, name: str, opaque: bool
) -> None:
    args = ["msg", "sign", "--p12", str(pki.bundle(name))]
    if opaque:
        args.append("--opaque")
    res = run_cli(args, message_for(pki, name))
    assert res.returncode == 0, res.stderr.decode(errors="replace")
    assert BODY_TEXT in openssl_verify(pki, tmp_path, res.stdout)


def test_cli_sign_with_real_p12_and_password_file(pki: Pki, tmp_path: Path) -> None:
    res = run_cli(
        ["msg", "sign", "--p12", str(pki.p12("rsa")), "--password-file",
         str(pki.dir / "password.txt")],
        message_for(pki, "rsa"),
    )  # fmt: skip
    assert res.returncode == 0, res.stderr.decode(errors="replace")
    assert BODY_TEXT in openssl_verify(pki, tmp_path, res.stdout)


def test_cli_sign_with_separate_cert_chain(pki: Pki, tmp_path: Path) -> None:
    """Key + leaf only in --p12, the intermediate from --cert-chain: openssl builds the path."""
    leaf_only = write(
        tmp_path, "leaf.pem", pki.key("rsa").read_bytes() + pki.cert("rsa").read_bytes()
    )
    res = run_cli(
        ["msg", "sign", "--p12", str(leaf_only), "--cert-chain", str(pki.inter_pem)],
        message_for(pki, "rsa"),
    )
    assert res.returncode == 0, res.stderr.decode(errors="replace")
    assert BODY_TEXT in openssl_verify(pki, tmp_path, res.stdout)


# === ours -> openssl: envelopes ===============================================================

CIPHERS: list[Cipher] = ["aes-256-gcm", "aes-256-cbc", "aes-128-cbc"]
RECIPIENTS: list[tuple[str, KeyTransport | None]] = [
    ("rsa", "pkcs1"),
    ("rsa", "oaep"),
    ("p256", None),
    ("p384", None),
]
RECIPIENT_IDS = ["rsa-pkcs1", "rsa-oaep", "ecdh-p256", "ecdh-p384"]
OID_TEXT = {
    "aes-256-gcm": "aes-256-gcm",
    "aes-256-cbc": "aes-256-cbc",
    "aes-128-cbc": "aes-128-cbc",
}


@pytest.mark.parametrize(("name", "transport"), RECIPIENTS, ids=RECIPIENT_IDS)
@pytest.mark.parametrize("cipher", CIPHERS)
def test_api_envelope_decrypted_by_openssl(
    pki: Pki, tmp_path: Path, cipher: Cipher, name: str, transport: KeyTransport | None
) -> None:
    cert = pki.users[name].cert
    enc = encrypt_message(
        message_for(pki, "rsa2"),
        [Recipient(cert, supports_gcm=True, key_transport=transport)],
        cipher=cipher,
    )
    assert BODY_TEXT not in enc
    out = openssl_decrypt(pki, tmp_path, name, enc)
    assert BODY_TEXT in out
    printed = cms_print(tmp_path, enc)
    assert OID_TEXT[cipher] in printed
    if transport == "oaep":
        assert "rsaesOaep" in printed
        assert "sha256" in printed
    elif transport == "pkcs1":
        assert "rsaesOaep" not in printed
        assert "rsaEncryption" in printed
    else:
        assert "dhSinglePass" in printed


@pytest.mark.parametrize("cipher", CIPHERS)
def test_api_envelope_to_several_recipients_each_decrypts(
    pki: Pki, tmp_path: Path, cipher: Cipher
) -> None:
    names = ["rsa", "rsa2", "p256", "p384"]
    recipients = [
        Recipient(pki.users["rsa"].cert, supports_gcm=True, key_transport="oaep"),
        Recipient(pki.users["rsa2"].cert, supports_gcm=True, key_transport="pkcs1"),
        Recipient(pki.users["p256"].cert, supports_gcm=True),
        Recipient(pki.users["p384"].cert, supports_gcm=True),
    ]
    enc = encrypt_message(message_for(pki, "rsa"), recipients, cipher=cipher)
    for name in names:
        assert BODY_TEXT in openssl_decrypt(pki, tmp_path, name, enc), name
        # and we read our own multi-recipient envelope with every key
        assert BODY_TEXT in decrypt_message(enc, pki.agent(name)).content, name


@pytest.mark.parametrize(("name", "transport"), RECIPIENTS, ids=RECIPIENT_IDS)
@pytest.mark.parametrize("cipher", CIPHERS)
def test_cli_envelope_decrypted_by_openssl(
    pki: Pki, tmp_path: Path, cipher: Cipher, name: str, transport: KeyTransport | None
) -> None:
    args = ["msg", "encrypt", "--to", str(pki.cert(name)), "--cipher", cipher]
    if transport is not None:
        args += ["--key-transport", transport]
    res = run_cli(args, message_for(pki, "rsa2"))
    assert res.returncode == 0, res.stderr.decode(errors="replace")
    assert BODY_TEXT in openssl_decrypt(pki, tmp_path, name, res.stdout)
    assert OID_TEXT[cipher] in cms_print(tmp_path, res.stdout)


def test_cli_envelope_several_recipients(pki: Pki, tmp_path: Path) -> None:
    names = ["rsa", "p256", "p384"]
    args = ["msg", "encrypt", "--cipher", "aes-256-gcm"]
    for name in names:
        args += ["--to", str(pki.cert(name))]
    res = run_cli(args, message_for(pki, "rsa2"))
    assert res.returncode == 0, res.stderr.decode(errors="replace")
    for name in names:
        assert BODY_TEXT in openssl_decrypt(pki, tmp_path, name, res.stdout), name


def test_cli_envelope_defaults_are_cbc_and_pkcs1(pki: Pki, tmp_path: Path) -> None:
    """No --cipher / --key-transport: AES-256-CBC with RSA PKCS#1 v1.5 (DESIGN decision 2)."""
    res = run_cli(["msg", "encrypt", "--to", str(pki.cert("rsa"))], message_for(pki, "rsa2"))
    assert res.returncode == 0, res.stderr.decode(errors="replace")
    printed = cms_print(tmp_path, res.stdout)
    assert "aes-256-cbc" in printed
    assert "rsaesOaep" not in printed
    assert BODY_TEXT in openssl_decrypt(pki, tmp_path, "rsa", res.stdout)


def test_cli_gcm_defaults_to_oaep(pki: Pki, tmp_path: Path) -> None:
    res = run_cli(
        ["msg", "encrypt", "--to", str(pki.cert("rsa")), "--cipher", "aes-256-gcm"],
        message_for(pki, "rsa2"),
    )
    assert res.returncode == 0, res.stderr.decode(errors="replace")
    printed = cms_print(tmp_path, res.stdout)
    assert "rsaesOaep" in printed
    assert "id-smime-ct-authEnvelopedData" in printed or "authEnvelopedData" in printed
    assert BODY_TEXT in openssl_decrypt(pki, tmp_path, "rsa", res.stdout)


# === openssl -> ours: signatures ==============================================================

OPENSSL_SIGNERS: list[tuple[str, list[str]]] = [
    ("rsa", ["-md", "sha256"]),
    ("p384", ["-md", "sha384"]),
    ("p256", ["-md", "sha256"]),
    ("rsa", ["-md", "sha256", "-keyopt", "rsa_padding_mode:pss"]),
    ("rsa", ["-md", "sha512", "-keyopt", "rsa_padding_mode:pss", "-keyopt", "rsa_pss_saltlen:64"]),
]
OPENSSL_SIGNER_IDS = ["rsa-sha256", "ecdsa-p384-sha384", "ecdsa-p256", "rsa-pss", "rsa-pss-sha512"]


def openssl_sign(pki: Pki, tmp: Path, name: str, extra: list[str], *, opaque: bool) -> bytes:
    entity = write(tmp, "entity.txt", ENTITY)
    args = [
        "cms", "-sign", "-in", str(entity), "-signer", str(pki.cert(name)),
        "-inkey", str(pki.key(name)), "-certfile", str(pki.inter_pem),
        "-from", pki.email(name), "-to", "rcpt@example.test", "-subject", "openssl signed",
    ]  # fmt: skip
    if opaque:
        args.append("-nodetach")
    # -keyopt must follow the -signer it applies to: put the extras after -inkey.
    return openssl(*args[:8], *extra, *args[8:])


@pytest.mark.parametrize("opaque", [False, True], ids=["multipart", "opaque"])
@pytest.mark.parametrize(("name", "extra"), OPENSSL_SIGNERS, ids=OPENSSL_SIGNER_IDS)
def test_openssl_signature_verified_by_api(
    pki: Pki, tmp_path: Path, name: str, extra: list[str], opaque: bool
) -> None:
    signed = openssl_sign(pki, tmp_path, name, extra, opaque=opaque)
    report = inspect_signature(signed, [pki.root.cert], now=NOW)
    assert report.valid, report.reason
    assert report.from_address == pki.email(name)
    assert [s.email for s in report.signers] == [(pki.email(name),)]
    assert report.signers[0].chain_trusted and report.signers[0].signature_valid
    assert report.content is not None and ENTITY_TEXT in report.content
    # Untrusted root: same signature, not valid.
    other = make_pki(tmp_path / "other", names=())
    assert not inspect_signature(signed, [other.root.cert], now=NOW).valid


@pytest.mark.parametrize(("name", "extra"), OPENSSL_SIGNERS, ids=OPENSSL_SIGNER_IDS)
def test_openssl_signature_tampered_is_rejected(
    pki: Pki, tmp_path: Path, name: str, extra: list[str]
) -> None:
    signed = openssl_sign(pki, tmp_path, name, extra, opaque=False)
    tampered = flip_body_byte(signed, ENTITY_TEXT)
    assert openssl_verify_fails(pki, tmp_path, tampered), "precondition: openssl rejects it"
    report = inspect_signature(tampered, [pki.root.cert], now=NOW)
    assert not report.valid
    assert not report.signers[0].signature_valid


@pytest.mark.parametrize("opaque", [False, True], ids=["multipart", "opaque"])
@pytest.mark.parametrize(("name", "extra"), OPENSSL_SIGNERS[:4], ids=OPENSSL_SIGNER_IDS[:4])
def test_openssl_signature_verified_by_cli(
    pki: Pki, tmp_path: Path, name: str, extra: list[str], opaque: bool
) -> None:
    signed = openssl_sign(pki, tmp_path, name, extra, opaque=opaque)
    out = tmp_path / "content.out"
    res = run_cli(
        ["msg", "verify", "--trust", str(pki.root_pem), "--at", AT_ISO, "--out", str(out)], signed
    )
    assert res.returncode == 0, res.stderr.decode(errors="replace") + res.stdout.decode()
    data = verify_json(res)
    assert data["valid"] is True
    assert data["reason"] is None
    assert data["from"] == pki.email(name)
    assert len(data["signers"]) == 1
    signer = data["signers"][0]
    assert set(signer) >= {
        "email", "subject", "issuer", "signature_valid", "chain_trusted", "not_before", "not_after"
    }  # fmt: skip
    assert signer["email"] == [pki.email(name)]
    assert signer["signature_valid"] is True and signer["chain_trusted"] is True
    assert "Interop Intermediate CA" in signer["issuer"]
    assert ENTITY_TEXT in out.read_bytes()


def test_openssl_signature_tampered_cli_exit_1(pki: Pki, tmp_path: Path) -> None:
    signed = openssl_sign(pki, tmp_path, "rsa", ["-md", "sha256"], opaque=False)
    res = run_cli(
        ["msg", "verify", "--trust", str(pki.root_pem), "--at", AT_ISO],
        flip_body_byte(signed, ENTITY_TEXT),
    )
    assert res.returncode == 1, res.stderr.decode(errors="replace")
    data = verify_json(res)
    assert data["valid"] is False
    assert data["reason"]
    assert b"Traceback" not in res.stderr


def test_openssl_signature_untrusted_root_cli_exit_1(pki: Pki, tmp_path: Path) -> None:
    signed = openssl_sign(pki, tmp_path, "rsa", ["-md", "sha256"], opaque=False)
    other = make_pki(tmp_path / "other", names=())
    res = run_cli(["msg", "verify", "--trust", str(other.root_pem), "--at", AT_ISO], signed)
    assert res.returncode == 1
    data = verify_json(res)
    assert data["valid"] is False
    assert data["signers"][0]["chain_trusted"] is False
    assert data["signers"][0]["signature_valid"] is True


# === openssl -> ours: envelopes ===============================================================

RSA_OAEP_256 = ["-keyopt", "rsa_padding_mode:oaep", "-keyopt", "rsa_oaep_md:sha256",
                "-keyopt", "rsa_mgf1_md:sha256"]  # fmt: skip

KDF256 = ["-keyopt", "ecdh_kdf_md:sha256"]
KDF384 = ["-keyopt", "ecdh_kdf_md:sha384"]
OAEP_SHA1 = ["-keyopt", "rsa_padding_mode:oaep"]

OPENSSL_ENVELOPES: list[tuple[str, list[str], list[tuple[str, list[str]]], str]] = [
    # (id, cipher options, [(recipient, keyopts)], expected DecryptedMessage.cipher fragment)
    ("gcm-oaep", ["-aes-256-gcm"], [("rsa", RSA_OAEP_256)], "aes-256-gcm"),
    ("aes256-pkcs1", ["-aes256"], [("rsa", [])], "aes-256-cbc"),
    ("aes128-pkcs1", ["-aes128"], [("rsa", [])], "aes-128-cbc"),
    ("des3-pkcs1", ["-des3"], [("rsa", [])], "3des"),
    ("aes256-oaep-sha1", ["-aes256"], [("rsa", OAEP_SHA1)], "aes-256-cbc"),
    ("ecdh-p256-sha1kdf", ["-aes256"], [("p256", [])], "aes-256-cbc"),
    ("ecdh-p256-sha256kdf", ["-aes256"], [("p256", KDF256)], "aes-256-cbc"),
    ("ecdh-p384-sha384kdf", ["-aes128"], [("p384", KDF384)], "aes-128-cbc"),
    ("gcm-ecdh-p256", ["-aes-256-gcm"], [("p256", KDF256)], "aes-256-gcm"),
    ("two-recipients", ["-aes256"], [("rsa", []), ("p256", [])], "aes-256-cbc"),
    ("stream-ber", ["-aes256", "-stream"], [("rsa", [])], "aes-256-cbc"),
]


def openssl_encrypt(
    pki: Pki, tmp: Path, cipher_opts: list[str], recips: list[tuple[str, list[str]]]
) -> bytes:
    entity = write(tmp, "entity.txt", ENTITY)
    args = ["cms", "-encrypt", "-in", str(entity), *cipher_opts, "-from", "sender@example.test",
            "-to", "rcpt@example.test", "-subject", "openssl"]  # fmt: skip
    for name, keyopts in recips:
        args += ["-recip", str(pki.cert(name)), *keyopts]
    return openssl(*args)


@pytest.mark.parametrize(
    ("cipher_opts", "recips", "expected"),
    [pytest.param(c, r, e, id=i) for i, c, r, e in OPENSSL_ENVELOPES],
)
def test_openssl_envelope_decrypted_by_api(
    pki: Pki,
    tmp_path: Path,
    cipher_opts: list[str],
    recips: list[tuple[str, list[str]]],
    expected: str,
) -> None:
    enc = openssl_encrypt(pki, tmp_path, cipher_opts, recips)
    for name, _ in recips:
        dec = decrypt_message(enc, pki.agent(name))
        assert ENTITY_TEXT in dec.content, name
        assert expected in dec.cipher
        assert dec.authenticated == ("gcm" in expected)
    # Nobody else can.
    with pytest.raises(DecryptionFailed):
        decrypt_message(enc, pki.agent("rsa2"))


@pytest.mark.parametrize(
    ("cipher_opts", "recips", "expected"),
    [pytest.param(c, r, e, id=i) for i, c, r, e in OPENSSL_ENVELOPES],
)
def test_openssl_envelope_decrypted_by_cli(
    pki: Pki,
    tmp_path: Path,
    cipher_opts: list[str],
    recips: list[tuple[str, list[str]]],
    expected: str,
) -> None:
    enc = openssl_encrypt(pki, tmp_path, cipher_opts, recips)
    name = recips[-1][0]
    res = run_cli(["msg", "decrypt", "--p12", str(pki.bundle(name))], enc)
    assert res.returncode == 0, res.stderr.decode(errors="replace")
    assert ENTITY_TEXT in res.stdout
    # The outer headers survive decryption.
    assert b"sender@example.test" in split_message(res.stdout)[0]


def test_openssl_envelope_cli_p12_with_password_file(pki: Pki, tmp_path: Path) -> None:
    enc = openssl_encrypt(pki, tmp_path, ["-aes256"], [("rsa", [])])
    res = run_cli(
        ["msg", "decrypt", "--p12", str(pki.p12("rsa")), "--password-file",
         str(pki.dir / "password.txt")],
        enc,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr.decode(errors="replace")
    assert ENTITY_TEXT in res.stdout


def test_openssl_envelope_wrong_key_cli_exit_1(pki: Pki, tmp_path: Path) -> None:
    enc = openssl_encrypt(pki, tmp_path, ["-aes256"], [("rsa", [])])
    res = run_cli(["msg", "decrypt", "--p12", str(pki.bundle("rsa2"))], enc)
    assert res.returncode == 1
    assert ENTITY_TEXT not in res.stdout
    assert b"Traceback" not in res.stderr


def test_openssl_tampered_gcm_yields_nothing(pki: Pki, tmp_path: Path) -> None:
    enc = openssl_encrypt(pki, tmp_path, ["-aes-256-gcm", "-binary"], [("rsa", RSA_OAEP_256)])
    head, body = split_message(enc)
    der = bytearray(base64.b64decode(body))
    der[-40] ^= 0x01  # inside the ciphertext or the tag, either way authentication fails
    forged = head + base64.encodebytes(bytes(der)).replace(b"\n", b"\r\n")
    with pytest.raises(DecryptionFailed):
        decrypt_message(forged, pki.agent("rsa"))
    res = run_cli(["msg", "decrypt", "--p12", str(pki.bundle("rsa"))], forged)
    assert res.returncode == 1
    assert res.stdout == b""


@pytest.mark.slow
def test_openssl_stream_20mb_decrypted_by_api(pki: Pki, tmp_path: Path) -> None:
    """A 20 MB `-stream` (BER, chunked) envelope: every byte comes back, in order."""
    line = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ-+/=.,;:!?()\r\n"
    body = b"".join(b"%08d " % i + line for i in range(20 * 1024 * 1024 // (len(line) + 9)))
    entity = b"Content-Type: text/plain\r\n\r\n" + body
    src = write(tmp_path, "big.txt", entity)
    enc = openssl(
        "cms", "-encrypt", "-stream", "-binary", "-aes256", "-in", str(src),
        "-from", "sender@example.test", "-to", "rcpt@example.test", "-subject", "big",
        str(pki.cert("rsa")),
    )  # fmt: skip
    der = base64.b64decode(split_message(enc)[1])
    assert der[:2] == b"\x30\x80", "precondition: BER indefinite length"
    dec = decrypt_message(enc, pki.agent("rsa"))
    _, got = split_message(dec.content)
    assert got == body


# === sign-then-encrypt across tools ===========================================================


def test_ours_sign_then_encrypt_openssl_decrypts_then_verifies(pki: Pki, tmp_path: Path) -> None:
    signed = sign_message(message_for(pki, "rsa"), pki.agent("rsa"), now=NOW)
    enc = encrypt_message(
        signed, [Recipient(pki.users["rsa2"].cert, supports_gcm=True)], cipher="aes-256-gcm"
    )
    inner = openssl_decrypt(pki, tmp_path, "rsa2", enc)
    assert BODY_TEXT in openssl_verify(pki, tmp_path, inner)


def test_openssl_sign_then_encrypt_ours_decrypts_then_verifies(pki: Pki, tmp_path: Path) -> None:
    signed = openssl_sign(pki, tmp_path, "p256", ["-md", "sha256"], opaque=False)
    # openssl encrypts the whole signed message; we decrypt, then verify.
    signed_entity = write(tmp_path, "signed-entity.eml", signed)
    enc = openssl(
        "cms", "-encrypt", "-in", str(signed_entity), "-aes256", "-from", pki.email("p256"),
        "-to", "rcpt@example.test", "-subject", "s+e", "-recip", str(pki.cert("rsa2")),
    )  # fmt: skip
    dec = decrypt_message(enc, pki.agent("rsa2"))
    report = inspect_signature(dec.content, [pki.root.cert], now=NOW)
    assert report.signers and report.signers[0].signature_valid
    assert report.signers[0].chain_trusted
    assert pki.email("p256") in report.signers[0].email
