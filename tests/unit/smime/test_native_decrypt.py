"""The native content decryption (native/src/decrypt.rs) against crypto.enveloped's
`_decrypt_cbc` / `_decrypt_gcm` by cryptography, the reference: for any key, parameters,
ciphertext and tag, the native answer is the reference's plaintext, or None where the
reference raises or takes a shape the native code leaves to it; whole messages open to the
same content with and without it (AES-CBC and AES-GCM, OpenSSL's own output included).

`MIME_FUZZ_EXAMPLES=20000` for a deep run (default 600).
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from hypothesis import given
from hypothesis import strategies as st

from smime_proxy.crypto import enveloped
from smime_proxy.crypto.enveloped import (
    ContentCipher,
    RecipientKey,
    build_enveloped,
    open_enveloped,
)
from smime_proxy.crypto.keyagent import InProcessKeyAgent
from smime_proxy.errors import SmimeProxyError
from support.damage import NATIVE_FUZZ, require_native
from support.pki import make_ca, make_user

require_native()
from smime_proxy import _native as core  # noqa: E402 - only once it is known to be built


def reference(mode: str, key: bytes, parameters: bytes, data: bytes, tag: bytes
              ) -> bytes | None:
    """What crypto.enveloped decrypts without the native core, or None where it raises."""
    with mock.patch.object(enveloped, "native", None):
        try:
            if mode == "gcm":
                return enveloped._decrypt_gcm(key, parameters, data, tag)
            return b"".join(enveloped._decrypt_cbc("2.16.840.1.101.3.4.1.42", key,
                                                   parameters, data))
        except (SmimeProxyError, ValueError):
            return None


def same_or_left(mode: str, key: bytes, parameters: bytes, data: bytes, tag: bytes) -> None:
    got = core.decrypt_content(mode, key, parameters, data, tag)
    if got is not None:  # None: left to the Python code (checked there by the tests above)
        assert got == reference(mode, key, parameters, data, tag)


def gcm_parameters(nonce: bytes, icv: int | None) -> bytes:
    tail = b"" if icv is None else bytes((0x02, 0x01, icv))
    body = bytes((0x04, len(nonce))) + nonce + tail
    return bytes((0x30, len(body))) + body


def gcm(key: bytes, nonce: bytes, plain: bytes, tag_length: int = 16) -> tuple[bytes, bytes]:
    encryptor = Cipher(algorithms.AES(key), modes.GCM(nonce)).encryptor()
    data = encryptor.update(plain) + encryptor.finalize()
    return data, encryptor.tag[:tag_length]


def cbc(key: bytes, iv: bytes, padded: bytes) -> bytes:
    encryptor = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor()
    return encryptor.update(padded) + encryptor.finalize()


def pkcs7(plain: bytes) -> bytes:
    pad = 16 - len(plain) % 16
    return plain + bytes((pad,)) * pad


KEYS = st.sampled_from([16, 24, 32]).flatmap(lambda n: st.binary(min_size=n, max_size=n))


@NATIVE_FUZZ
@given(KEYS, st.binary(min_size=12, max_size=12), st.binary(max_size=200),
       st.sampled_from([12, 13, 16]), st.sampled_from([None, 12, 13, 16]))
def test_gcm_is_the_reference(key: bytes, nonce: bytes, plain: bytes, tag_length: int,
                              icv: int | None) -> None:
    data, tag = gcm(key, nonce, plain, tag_length)
    parameters = gcm_parameters(nonce, icv)
    got = core.decrypt_content("gcm", key, parameters, data, tag)
    expected = reference("gcm", key, parameters, data, tag)
    assert got == expected
    assert (got is not None) == ((icv or 12) == tag_length)


@NATIVE_FUZZ
@given(KEYS, st.binary(min_size=16, max_size=16), st.binary(max_size=100),
       st.none() | st.binary(min_size=16, max_size=16))
def test_cbc_is_the_reference_for_any_last_block(key: bytes, iv: bytes, plain: bytes,
                                                 last: bytes | None) -> None:
    # valid padding, or a last block of any bytes (every padding length, and wrong ones)
    padded = pkcs7(plain) if last is None else pkcs7(plain)[:-16] + last
    data = cbc(key, iv, padded)
    parameters = b"\x04\x10" + iv
    got = core.decrypt_content("cbc", key, parameters, data, b"")
    assert got == reference("cbc", key, parameters, data, b"")
    if last is None:
        assert got == plain


@NATIVE_FUZZ
@given(st.sampled_from(["cbc", "gcm", "ofb"]), KEYS, st.binary(max_size=40),
       st.binary(max_size=70), st.binary(max_size=17))
def test_any_input_is_the_reference_or_left_to_it(mode: str, key: bytes, parameters: bytes,
                                                  data: bytes, tag: bytes) -> None:
    same_or_left(mode, key, parameters, data, tag)


@NATIVE_FUZZ
@given(KEYS, st.binary(min_size=12, max_size=12), st.binary(min_size=1, max_size=64),
       st.integers(0, 10_000), st.sampled_from(["data", "tag", "nonce"]))
def test_a_changed_gcm_byte_is_refused_by_both(key: bytes, nonce: bytes, plain: bytes,
                                               where: int, what: str) -> None:
    data, tag = gcm(key, nonce, plain)
    target = {"data": data, "tag": tag, "nonce": nonce}[what]
    changed = bytearray(target)
    changed[where % len(changed)] ^= 0x01
    values = {"data": data, "tag": tag, "nonce": nonce, what: bytes(changed)}
    parameters = gcm_parameters(values["nonce"], None)
    assert core.decrypt_content("gcm", key, parameters, values["data"], values["tag"]) is None
    assert reference("gcm", key, parameters, values["data"], values["tag"]) is None


@pytest.mark.parametrize("blocks", [1, 2, 3, 4, 70])
@pytest.mark.parametrize("pad", [1, 7, 16])
def test_every_cbc_length_and_padding(blocks: int, pad: int) -> None:
    key, iv = os.urandom(32), os.urandom(16)
    plain = os.urandom(16 * blocks - pad)
    data = cbc(key, iv, plain + bytes((pad,)) * pad)
    assert core.decrypt_content("cbc", key, b"\x04\x10" + iv, data, b"") == plain


ROOT = make_ca("Decrypt CA")
BOB = make_user("bob@example.test", ROOT)
AGENT = InProcessKeyAgent(BOB.key, BOB.cert, tuple(BOB.chain))
CIPHERS: list[ContentCipher] = ["aes-128-cbc", "aes-256-cbc", "aes-128-gcm", "aes-256-gcm"]


@pytest.mark.parametrize("cipher", CIPHERS)
@pytest.mark.parametrize("size", [0, 1, 15, 16, 17, 4096, 300_000])  # 300 KB: GIL released
def test_messages_open_the_same_with_and_without(cipher: ContentCipher, size: int) -> None:
    content = b"Content-Type: text/plain\r\n\r\n" + bytes(range(256)) * (size // 256)
    content += b"x" * (size % 256)
    der = build_enveloped(content, [RecipientKey(BOB.cert, "oaep")], cipher)
    calls = _native_calls(lambda: open_enveloped(der, AGENT).content == content)
    assert calls == [True]  # opened by the native code
    with mock.patch.object(enveloped, "native", None):
        assert open_enveloped(der, AGENT).content == content


def _native_calls(work: Callable[[], bool]) -> list[bool]:
    """`work`'s outcome after it ran, and for each native decryption whether it answered."""
    answers: list[bool] = []
    decrypt = core.decrypt_content

    def spy(*args: Any) -> bytes | None:
        plain = decrypt(*args)
        answers.append(plain is not None)
        return plain

    with mock.patch.object(core, "decrypt_content", spy):
        assert work()
    return answers


@pytest.mark.parametrize("cipher", ["aes-128-cbc", "aes-256-cbc", "aes-256-gcm"])
@pytest.mark.parametrize("stream", [False, True])  # -stream: BER, the content in chunks
def test_openssl_encrypted_messages_open_natively(cipher: str, stream: bool,
                                                  tmp_path: Path) -> None:
    content = b"Content-Type: text/plain\r\n\r\nfrom openssl cms\r\n" * 50
    (tmp_path / "in").write_bytes(content)
    (tmp_path / "bob.pem").write_bytes(BOB.cert_pem())
    subprocess.run(["openssl", "cms", "-encrypt", "-binary", "-outform", "DER",
                    *(["-stream"] if stream else []), f"-{cipher}", "-in",
                    str(tmp_path / "in"), "-out", str(tmp_path / "out"),
                    str(tmp_path / "bob.pem")], check=True, capture_output=True)
    der = (tmp_path / "out").read_bytes()
    assert _native_calls(lambda: open_enveloped(der, AGENT).content == content) == [True]


@pytest.mark.parametrize("cipher", ["aes-256-cbc", "aes-256-gcm"])
def test_a_ciphertext_beyond_the_copy_limit_is_decrypted_in_place(cipher: ContentCipher
                                                                  ) -> None:
    content = b"Content-Type: text/plain\r\n\r\n" + b"large\r\n" * 100
    der = build_enveloped(content, [RecipientKey(BOB.cert, "oaep")], cipher)
    with mock.patch.object(enveloped, "NATIVE_UP_TO", 64):  # as a 25 MB message would be
        assert _native_calls(lambda: open_enveloped(der, AGENT).content == content) == []
