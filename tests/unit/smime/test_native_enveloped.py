"""The native envelope reader (native/src/cms.rs) against asn1crypto's reading in
crypto.enveloped, the reference: for DER we build, BER from `openssl cms -stream` and any
mutation of them, opening with the native reader gives the same content or the same error
(class) as opening without it; a message the native reader does not take is read by Python.

`MIME_FUZZ_EXAMPLES=20000` for a deep run (default 600).
"""

from __future__ import annotations

import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from unittest import mock

import pytest
from hypothesis import given
from hypothesis import strategies as st

from smime_proxy.crypto import enveloped
from smime_proxy.crypto.ber import Tlv, children, elements
from smime_proxy.crypto.enveloped import (
    ContentCipher,
    RecipientKey,
    build_enveloped,
    open_enveloped,
    recover_content_key,
)
from smime_proxy.crypto.keyagent import InProcessKeyAgent
from smime_proxy.errors import SmimeProxyError
from support.damage import (
    NATIVE_FUZZ,
    damage_at,
    damaged_element,
    element_at,
    require_native,
)
from support.pki import Identity, make_ca, make_user

require_native()
from smime_proxy import _native as core  # noqa: E402 - only once it is known to be built

CIPHERS: list[ContentCipher] = ["aes-128-cbc", "aes-256-cbc", "aes-128-gcm", "aes-256-gcm"]
CONTENT = b"Content-Type: text/plain\r\n\r\n" + b"native or not, the same words\r\n" * 40

_ROOT = make_ca()
_BOB = make_user("bob@example.test", _ROOT)
_ALICE = make_user("alice@example.test", _ROOT)
AGENT = InProcessKeyAgent(_BOB.key, _BOB.cert, tuple(_BOB.chain))


def _ours(cipher: ContentCipher, transport: str, *others: Identity) -> bytes:
    recipients = [RecipientKey(who.cert, transport) for who in (*others, _BOB)]  # type: ignore[arg-type]
    return build_enveloped(CONTENT, recipients, cipher)


def _streamed(tmp: Path, cipher: str) -> bytes:
    """BER as NSS and Outlook send it: indefinite lengths, the content in chunks."""
    (tmp / "bob.pem").write_bytes(_BOB.cert_pem())
    (tmp / "in.txt").write_bytes(CONTENT)
    subprocess.run(["openssl", "cms", "-encrypt", "-stream", "-binary", "-outform", "DER",
                    f"-{cipher}", "-in", str(tmp / "in.txt"), "-out", str(tmp / "out.der"),
                    str(tmp / "bob.pem")], check=True, capture_output=True)
    return (tmp / "out.der").read_bytes()


@pytest.fixture(autouse=True)
def _no_random_fallback(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    # RFC 3218's random key on a failed unwrap, made the same for both readings
    monkeypatch.setattr("smime_proxy.crypto.keyagent.os.urandom", lambda n: b"\x01" * n)
    yield


def _outcome(der: bytes, reader: object) -> tuple[object, ...]:
    with mock.patch.object(enveloped, "native", reader):
        try:
            opened = open_enveloped(der, AGENT)
            key = recover_content_key(der, AGENT)
        except SmimeProxyError as exc:
            # the class is what the client (`error=`) and the log are told; the text may
            # name the field where asn1crypto, parsing lazily, happened to notice the damage
            return (type(exc).__name__,)
    return opened.content, opened.cipher, opened.authenticated, key.key


def _same(der: bytes) -> None:
    assert _outcome(der, core) == _outcome(der, None)


@pytest.mark.parametrize("cipher", CIPHERS)
@pytest.mark.parametrize("transport", ["pkcs1", "oaep"])
def test_our_envelopes_are_read_natively_and_open_the_same(cipher: ContentCipher,
                                                            transport: str) -> None:
    der = _ours(cipher, transport, _ALICE)
    assert core.read_envelope(der) is not None
    _same(der)
    assert _outcome(der, core)[0] == CONTENT


@pytest.mark.parametrize("cipher", ["aes-128-cbc", "aes-256-cbc"])
def test_streamed_ber_is_read_natively_and_opens_the_same(tmp_path: Path, cipher: str) -> None:
    der = _streamed(tmp_path, cipher)
    assert der[1] == 0x80  # indefinite length, as openssl streams it
    assert core.read_envelope(der) is not None
    _same(der)
    assert _outcome(der, core)[0] == CONTENT


SAMPLES = [_ours("aes-256-gcm", "pkcs1"), _ours("aes-128-cbc", "oaep", _ALICE)]
with tempfile.TemporaryDirectory() as _tmp:
    STREAMED = _streamed(Path(_tmp), "aes-128-cbc")


@st.composite
def _mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(SAMPLES)))
    # the structure is in the first few hundred bytes and the last few (GCM's mac)
    head = min(len(data), 1200)
    for _ in range(draw(st.integers(1, 4))):
        at_end = draw(st.booleans()) and len(data) > 40
        pos = (len(data) - draw(st.integers(1, 40)) if at_end
               else draw(st.integers(0, head - 1)))
        damage_at(draw, data, pos)
    return bytes(data)


def _nodes(der: bytes) -> list[Tlv]:
    """Every element of the structure, the ciphertext's insides excepted."""
    found: list[Tlv] = []

    def walk(item: Tlv) -> None:
        found.append(item)
        if item.tag & 0x20 and item.end - item.start < 4000:
            for child in children(der, item):
                walk(child)
        elif item.tag & 0x20:  # the content: its first chunk only
            found.extend(children(der, item)[:1])

    walk(elements(der)[0])
    return found


@st.composite
def _restructured(draw: st.DrawFn) -> bytes:
    """One element of the structure changed (`damaged_element`)."""
    data = draw(st.sampled_from([*SAMPLES, STREAMED]))
    return damaged_element(draw, data, draw(st.sampled_from(_nodes(data))))


@NATIVE_FUZZ
@given(st.one_of(_mutated(), _restructured()))
def test_any_mutation_opens_the_same_with_either_reader(der: bytes) -> None:
    _same(der)


def test_seed_an_unfinished_algorithm_oid_is_read_as_asn1crypto_reads_it() -> None:
    # found by the mutations: asn1crypto drops an unfinished last arc (no error), so the
    # algorithm is an unknown one, not a malformed message
    der = _ours("aes-256-gcm", "pkcs1")
    oid = element_at(der, 1, 0, 2, 1, 0)  # AuthEnvelopedData, its content info, alg, OID
    damaged = der[: oid.end - 1] + bytes([der[oid.end - 1] | 0x80]) + der[oid.end :]
    assert core.read_envelope(damaged) is not None
    _same(damaged)
    assert _outcome(damaged, core) == ("UnsupportedAlgorithm",)


def test_rfc4134_envelopes_are_read_natively_and_fail_the_same() -> None:
    # encrypted to the RFC's Bob with its ciphers: the reading is what is compared. 5.1 has one key
    # transport recipient (read natively), 5.2 a KEK recipient too (left to asn1crypto).
    folder = Path(__file__).resolve().parents[2] / "vectors" / "rfc4134"
    read = {}
    for path in sorted(folder.glob("5.*.bin")):
        der = path.read_bytes()
        read[path.name] = core.read_envelope(der) is not None
        _same(der)
        assert len(_outcome(der, core)) == 1  # an error either way (the RFC's ciphers)
    assert read == {"5.1.bin": True, "5.2.bin": False}
