"""A stored key written and opened with its KDF outside the GIL (`keystore.pbes2`): what it
writes is read by `cryptography`'s own loader (and by OpenSSL: tests/interop); it opens to
the same key as that loader gives, for the store's form and OpenSSL's `-v2` exports; the
same failure for a wrong password and for every damage to the blob; None (the loader's
turn) for the forms it does not read; and the daemon's other threads run while it works."""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from asn1crypto import keys as asn1_keys
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from hypothesis import given, settings
from hypothesis import strategies as st

from smime_proxy.errors import KeyStoreError, WrongPassword
from smime_proxy.keystore import pkcs
from smime_proxy.keystore.pbes2 import decrypt_pbes2
from support.damage import BYTE_VALUES, damage_at

EC_KEY = ec.generate_private_key(ec.SECP256R1())
RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
PASSWORD = b"correct horse"
FAST = 1000  # iterations, for the tests that open many
EC_BLOB = pkcs.wrap_private_key(EC_KEY, PASSWORD, iterations=FAST)


def _der(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _reference(blob: bytes, password: bytes) -> bytes | str:
    """What the loader alone makes of it: the key's PKCS#8, or that it failed."""
    try:
        return _der(serialization.load_der_private_key(blob, password))  # type: ignore[arg-type]
    except (ValueError, TypeError, UnsupportedAlgorithm):
        return "failed"


def _ours(blob: bytes, password: bytes) -> bytes | str:
    try:
        return _der(pkcs.unwrap_private_key(blob, password))
    except (WrongPassword, KeyStoreError):
        return "failed"


@pytest.mark.parametrize("key", [EC_KEY, RSA_KEY], ids=["ec", "rsa"])
def test_the_stores_form_opens_to_the_same_key(key: ec.EllipticCurvePrivateKey
                                               | rsa.RSAPrivateKey) -> None:
    blob = pkcs.wrap_private_key(key, PASSWORD, iterations=FAST)
    assert decrypt_pbes2(blob, PASSWORD, 10**6) is not None  # read here, not by the loader
    assert _ours(blob, PASSWORD) == _reference(blob, PASSWORD) == _der(key)
    with pytest.raises(WrongPassword):
        pkcs.unwrap_private_key(blob, b"not it")


@pytest.mark.parametrize(("args", "read_here"), [
    (["-v2", "aes-256-cbc", "-v2prf", "hmacWithSHA256"], True),
    (["-v2", "aes-128-cbc", "-v2prf", "hmacWithSHA1"], True),
    (["-v2", "aes-192-cbc", "-v2prf", "hmacWithSHA512"], True),
    (["-v2", "des3"], False),  # PBES2 with another cipher: the loader's
])
def test_what_openssl_writes_opens_the_same_either_way(tmp_path: Path, args: list[str],
                                                       read_here: bool) -> None:
    plain = tmp_path / "key.der"
    plain.write_bytes(_der(EC_KEY))
    (tmp_path / "pw").write_bytes(PASSWORD)
    blob = subprocess.run(
        ["openssl", "pkcs8", "-topk8", "-inform", "DER", "-outform", "DER", "-in", str(plain),
         "-passout", f"file:{tmp_path / 'pw'}", "-iter", str(FAST), *args],
        check=True, capture_output=True).stdout
    assert (decrypt_pbes2(blob, PASSWORD, 10**6) is not None) == read_here
    assert _ours(blob, PASSWORD) == _reference(blob, PASSWORD) == _der(EC_KEY)
    assert _ours(blob, b"wrong") == "failed"


def test_pbes1_is_not_read_here_and_not_taken_as_a_stored_key(tmp_path: Path) -> None:
    plain = tmp_path / "key.der"
    plain.write_bytes(_der(EC_KEY))
    (tmp_path / "pw").write_bytes(PASSWORD)
    blob = subprocess.run(
        ["openssl", "pkcs8", "-topk8", "-inform", "DER", "-outform", "DER", "-in", str(plain),
         "-passout", f"file:{tmp_path / 'pw'}", "-v1", "PBE-SHA1-3DES"],
        check=True, capture_output=True).stdout
    assert decrypt_pbes2(blob, PASSWORD, 10**6) is None
    with pytest.raises(KeyStoreError, match="not PBES2"):
        pkcs.unwrap_private_key(blob, PASSWORD)


def test_an_iteration_count_over_the_cap_is_refused_before_any_work() -> None:
    with pytest.raises(ValueError, match="iteration"):
        decrypt_pbes2(EC_BLOB, PASSWORD, FAST - 1)


@st.composite
def _damaged(draw: st.DrawFn) -> bytes:
    data = bytearray(EC_BLOB)
    for _ in range(draw(st.integers(1, 3))):
        # 0x01 and 0x10 too: the padding's bytes
        damage_at(draw, data, draw(st.integers(0, len(data) - 1)), (*BYTE_VALUES, 0x01, 0x10))
    return bytes(data)


@given(_damaged(), st.sampled_from([PASSWORD, b"wrong"]))
@settings(max_examples=300, deadline=None)
def test_any_damage_fails_or_opens_as_the_loader_says(blob: bytes, password: bytes) -> None:
    """The same key or a failure, as the loader alone (never another key, never a crash)."""
    try:
        pkcs.pbes2_parameters(blob)
    except KeyStoreError:
        return  # refused before either reading (the cap, not PBES2, corrupt)
    ours, reference = _ours(blob, password), _reference(blob, password)
    if ours != "failed":
        assert ours == reference
    else:
        # a padding the loader's OpenSSL let through and a key it then read would be a
        # difference; the loader may read a damaged DER more leniently, never to a key of
        # ours that differs
        assert reference in ("failed", _der(EC_KEY))


@pytest.mark.parametrize("key", [EC_KEY, RSA_KEY], ids=["ec", "rsa"])
def test_the_stores_form_is_read_by_the_loader(key: ec.EllipticCurvePrivateKey
                                               | rsa.RSAPrivateKey) -> None:
    blob = pkcs.wrap_private_key(key, PASSWORD, iterations=FAST)
    assert _reference(blob, PASSWORD) == _der(key)
    assert _reference(blob, b"wrong") == "failed"
    assert pkcs.pbes2_parameters(blob) == pkcs.Pbes2Parameters(
        kdf="pbkdf2", prf="sha256", iterations=FAST, salt_length=16, cipher="aes256_cbc")
    assert blob != pkcs.wrap_private_key(key, PASSWORD, iterations=FAST)  # a salt and IV each


def _ticks_during(work: Callable[[], object]) -> int:
    """How often a thread that sleeps 1 ms woke while `work` ran in this one."""
    ticks = 0
    done = threading.Event()

    def ticker() -> None:
        nonlocal ticks
        while not done.is_set():
            time.sleep(0.001)
            ticks += 1

    thread = threading.Thread(target=ticker)
    thread.start()
    time.sleep(0.01)
    before = ticks
    try:
        work()
    finally:
        done.set()
        thread.join()
    return ticks - before


def test_other_threads_run_while_the_key_is_derived() -> None:
    """The store's default 600,000 iterations, the EC key (whose reading is quick): a
    thread that wakes every millisecond keeps waking while the key is written and while it
    is opened (it missed the whole KDF before: about 70 ms here)."""
    blobs: list[bytes] = []
    assert _ticks_during(lambda: blobs.append(pkcs.wrap_private_key(EC_KEY, PASSWORD))) >= 5
    keys: list[object] = []
    assert _ticks_during(lambda: keys.append(pkcs.unwrap_private_key(blobs[0], PASSWORD))) >= 5
    assert _der(keys[0]) == _der(EC_KEY)  # type: ignore[arg-type]


# --- an RSA key's check (`pkcs.rsa_key_consistent`, OpenSSL's check less the primality tests)

# 1024 bits: quick for OpenSSL's check, made for each example
SMALL_RSA = rsa.generate_private_key(public_exponent=65537, key_size=1024).private_numbers()  # noqa: S505
_FIELDS = ("modulus", "public_exponent", "private_exponent", "prime1", "prime2", "exponent1",
           "exponent2", "coefficient")


def _rsa_values(numbers: rsa.RSAPrivateNumbers) -> dict[str, int]:
    return {"modulus": numbers.public_numbers.n, "public_exponent": numbers.public_numbers.e,
            "private_exponent": numbers.d, "prime1": numbers.p, "prime2": numbers.q,
            "exponent1": numbers.dmp1, "exponent2": numbers.dmq1,
            "coefficient": numbers.iqmp}


def _pkcs8(values: dict[str, int]) -> bytes:
    """Any eight integers as an RSA PrivateKeyInfo (cryptography would refuse to write most)."""
    inner = asn1_keys.RSAPrivateKey({"version": 0, **values})
    return bytes(asn1_keys.PrivateKeyInfo.wrap(inner, "rsa").dump())


def _accepted(load: Callable[[], object]) -> bool:
    try:
        load()
    except (ValueError, TypeError, UnsupportedAlgorithm):
        return False
    return True


@st.composite
def _altered(draw: st.DrawFn) -> dict[str, int]:
    values = _rsa_values(SMALL_RSA)
    if draw(st.booleans()):  # p and q swapped, the CRT values made anew: a valid key
        p, q = values["prime2"], values["prime1"]
        d = values["private_exponent"]
        values.update(prime1=p, prime2=q, exponent1=d % (p - 1), exponent2=d % (q - 1),
                      coefficient=pow(q, -1, p))
    for _ in range(draw(st.integers(0, 2))):
        name = draw(st.sampled_from(_FIELDS))
        value = values[name]
        action = draw(st.sampled_from(["add", "flip", "set", "other"]))
        if action == "add":
            values[name] = value + draw(st.integers(-4, 4))
        elif action == "flip":
            values[name] = value ^ (1 << draw(st.integers(0, max(0, value.bit_length() - 1))))
        elif action == "set":
            values[name] = draw(st.sampled_from([0, 1, 2, 3, 65537, -1]))
        else:  # another field's value
            values[name] = values[draw(st.sampled_from(_FIELDS))]
    return values


def _our_verdict(der: bytes) -> bool:
    """`rsa_key_consistent` on the numbers as read without OpenSSL's check."""
    try:
        key = serialization.load_der_private_key(der, None, unsafe_skip_rsa_key_validation=True)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        return False
    return isinstance(key, rsa.RSAPrivateKey) and pkcs.rsa_key_consistent(key.private_numbers())


@given(_altered())
@settings(max_examples=300, deadline=None)
def test_the_rsa_check_accepts_what_openssls_accepts(values: dict[str, int]) -> None:
    """On keys with any of their numbers changed: the same verdict as OpenSSL's check
    (cryptography's loader with validation), p and q staying the real primes or changed
    into numbers whose product is not n (a change that kept p q = n with other factors
    is what only the certificate comparison after it catches). The loader then agrees."""
    der = _pkcs8(values)
    openssl = _accepted(lambda: serialization.load_der_private_key(der, None))
    assert _our_verdict(der) == openssl
    assert _accepted(lambda: pkcs._load_checked(der)) == openssl


def test_the_rsa_check_refuses_each_changed_crt_value() -> None:
    """The values a Bellcore attack needs changed: each refused by the check, and then by
    OpenSSL's (which `_load_checked` leaves such a key to)."""
    for name in ("exponent1", "exponent2", "coefficient", "private_exponent"):
        values = _rsa_values(SMALL_RSA)
        values[name] += 2
        der = _pkcs8(values)
        assert not _our_verdict(der), name
        assert not _accepted(lambda der=der: pkcs._load_checked(der)), name  # type: ignore[misc]
    assert _our_verdict(_pkcs8(_rsa_values(SMALL_RSA)))


def test_opening_an_rsa_key_does_not_stop_other_threads() -> None:
    """The 2048-bit key's own check (OpenSSL's primality tests: 35 ms holding the GIL
    here) is not made when the store's key is opened."""
    blob = pkcs.wrap_private_key(RSA_KEY, PASSWORD)
    keys: list[object] = []
    assert _ticks_during(lambda: keys.append(pkcs.unwrap_private_key(blob, PASSWORD))) >= 5
    assert _der(keys[0]) == _der(RSA_KEY)  # type: ignore[arg-type]
