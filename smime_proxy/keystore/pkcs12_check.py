"""PKCS#12 files to import, inspected before anything is decrypted with the user's password:
every KDF iteration count visible (MAC, shrouded key bags, encrypted safes) is checked against
a cap, so a hostile file cannot make us run billions of iterations. Legacy encrypted safes
(PKCS#12 PBE with 3DES or RC2) are opened here, in Python, only to inspect what they hold.

May import: errors, cryptography, asn1crypto, stdlib.
"""

from __future__ import annotations

import hashlib

from asn1crypto import algos as asn1_algos
from asn1crypto import pkcs12 as asn1_pkcs12
from cryptography.hazmat.decrepit.ciphers.algorithms import RC2, TripleDES
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import padding as sym_padding
from cryptography.hazmat.primitives.ciphers import Cipher, CipherAlgorithm, modes
from cryptography.hazmat.primitives.ciphers.algorithms import AES
from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC

from smime_proxy.errors import ImportRejected

IMPORT_ITERATION_CAP = 2_000_000
"""Largest KDF iteration count accepted in a file to import (DoS guard)."""

LEGACY_INSPECTION_CAP = 200_000
"""Largest count accepted for a legacy (PKCS#12 PBE 3DES/RC2-128) encrypted safe, which we
open in Python to inspect (~1-2 us per iteration); real legacy exports use 2,000-50,000, our
own legacy exports this many."""

MAX_KEY_FILE_SIZE = 1 << 20
"""Largest PKCS#12 / PEM file accepted (a key with a long chain is a few KiB)."""

_MAX_NESTING = 4
_MAX_KDF_RUNS = 16


def iterations_of(algorithm: asn1_algos.EncryptionAlgorithm) -> int:
    name = algorithm["algorithm"].native
    if name == "pbes2":
        kdf = algorithm["parameters"]["key_derivation_func"]
        if kdf["algorithm"].native != "pbkdf2":
            raise ImportRejected(f"unsupported key derivation {kdf['algorithm'].native}")
        return int(kdf["parameters"]["iteration_count"].native)
    if isinstance(name, str) and (name.startswith("pkcs12_") or name.startswith("pbes1_")):
        return int(algorithm["parameters"]["iterations"].native)
    raise ImportRejected(f"unsupported PKCS#12 encryption {name}")


def check_count(count: int, cap: int) -> None:
    if count < 1:
        raise ImportRejected("the file has an invalid KDF iteration count")
    if count > cap:
        raise ImportRejected(
            f"the file asks for {count} KDF iterations; more than {cap} are refused"
        )


class _Budget:
    """The KDF work a file may ask for: each count <= cap, their sum <= 4 x cap, at most
    `_MAX_KDF_RUNS` runs (a file with a thousand small-count bags is a DoS as well)."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.total = 0
        self.runs = 0

    def spend(self, count: int) -> None:
        check_count(count, self.cap)
        self.total += count
        self.runs += 1
        if self.runs > _MAX_KDF_RUNS or self.total > 4 * self.cap:
            raise ImportRejected("the file asks for too much KDF work in total")


def _check_safe_contents(contents: asn1_pkcs12.SafeContents, budget: _Budget, depth: int) -> None:
    if depth > _MAX_NESTING:
        raise ImportRejected("the PKCS#12 file is nested too deeply")
    for bag in contents:
        bag_id = bag["bag_id"].native
        if bag_id == "pkcs8_shrouded_key_bag":
            budget.spend(iterations_of(bag["bag_value"]["encryption_algorithm"]))
        elif bag_id == "safe_contents":
            _check_safe_contents(bag["bag_value"], budget, depth + 1)


def check_pkcs12_iterations(
    data: bytes, cap: int = IMPORT_ITERATION_CAP, password: bytes | None = None
) -> None:
    """Inspect a PFX before `cryptography` decrypts it; `ImportRejected` if it is not a PKCS#12
    file we accept or if it asks for too much KDF work.

    Every count in clear is checked (MAC, shrouded key bags, encrypted safes). With `password`,
    encrypted safes are also decrypted here (after their own count passed) to check the key
    bags nested inside them; safes we cannot open for inspection (RC2-40, RC4; or a password
    that does not open them, which the MAC check then reports) stay unchecked inside.
    """
    if len(data) > MAX_KEY_FILE_SIZE:
        raise ImportRejected("the key file is too large")
    budget = _Budget(cap)
    try:
        pfx = asn1_pkcs12.Pfx.load(data, strict=True)
        if pfx["version"].native != "v3":
            raise ImportRejected("unsupported PKCS#12 version")
        auth_safe = pfx["auth_safe"]
        if auth_safe["content_type"].native != "data":
            raise ImportRejected("PKCS#12 public-key integrity mode is not supported")
        mac_data = pfx["mac_data"]
        if mac_data.native is not None:
            budget.spend(int(mac_data["iterations"].native))
        safes = asn1_pkcs12.AuthenticatedSafe.load(auth_safe["content"].native)
        encrypted_safes = []
        for content_info in safes:
            content_type = content_info["content_type"].native
            if content_type == "data":
                contents = asn1_pkcs12.SafeContents.load(content_info["content"].native)
                _check_safe_contents(contents, budget, 1)
            elif content_type == "encrypted_data":
                encrypted = content_info["content"]["encrypted_content_info"]
                budget.spend(iterations_of(encrypted["content_encryption_algorithm"]))
                encrypted_safes.append(encrypted)
            else:
                raise ImportRejected("PKCS#12 public-key privacy mode is not supported")
        if password is None:
            return
        # Only now, with every count in clear within the budget, run KDFs to look inside.
        for encrypted in encrypted_safes:
            algorithm = encrypted["content_encryption_algorithm"]
            if (
                algorithm["algorithm"].native in _PKCS12_PBE_CIPHERS
                and iterations_of(algorithm) > LEGACY_INSPECTION_CAP
            ):
                # Our inspection KDF for legacy PBE is pure Python (~1-2 us per iteration).
                raise ImportRejected(
                    f"legacy PKCS#12 encryption with more than {LEGACY_INSPECTION_CAP} "
                    "KDF iterations is refused"
                )
            plain = _decrypt_for_inspection(
                encrypted["content_encryption_algorithm"],
                encrypted["encrypted_content"].native or b"",
                password,
            )
            inner = _parse_safe_contents(plain)
            if inner is not None:
                _check_safe_contents(inner, budget, 1)
    except ImportRejected:
        raise
    except Exception:
        raise ImportRejected("not a PKCS#12 file (or a damaged one)") from None


# --- decrypting encrypted safes for inspection only -----------------------------------------


def _parse_safe_contents(plain: bytes | None) -> asn1_pkcs12.SafeContents | None:
    """The SafeContents in `plain`, fully parsed; None if there is none (the safe did not
    open: a wrong password, which the real decryption reports)."""
    if plain is None:
        return None
    try:
        contents = asn1_pkcs12.SafeContents.load(plain, strict=True)
        for bag in contents:
            bag["bag_id"].native  # noqa: B018 - force parsing
            bag["bag_value"].native  # noqa: B018
    except Exception:
        return None
    return contents

_PRFS: dict[str, type[hashes.HashAlgorithm]] = {
    "sha1": hashes.SHA1,
    "sha224": hashes.SHA224,
    "sha256": hashes.SHA256,
    "sha384": hashes.SHA384,
    "sha512": hashes.SHA512,
}
_PBES2_CIPHERS: dict[str, tuple[str, int]] = {
    "aes128_cbc": ("aes", 16),
    "aes192_cbc": ("aes", 24),
    "aes256_cbc": ("aes", 32),
    "tripledes_3key": ("3des", 24),
}
_PKCS12_PBE_CIPHERS: dict[str, tuple[str, int]] = {
    "pkcs12_sha1_tripledes_3key": ("3des", 24),
    "pkcs12_sha1_tripledes_2key": ("3des", 16),
    "pkcs12_sha1_rc2_128": ("rc2", 16),
}


def pkcs12_kdf(password: bytes, salt: bytes, purpose: int, iterations: int, size: int) -> bytes:
    """The PKCS#12 v1.0 key derivation with SHA-1 (RFC 7292 appendix B.2); `password` is the
    BMPString form (UTF-16BE with two trailing zero bytes). Used to *inspect* legacy files
    only: `cryptography` does the real decryption."""
    u, v = 20, 64
    diversifier = bytes([purpose]) * v

    def fill(data: bytes) -> bytes:
        if not data:
            return b""
        length = v * ((len(data) + v - 1) // v)
        return (data * (length // len(data) + 1))[:length]

    block = fill(salt) + fill(password)
    out = b""
    while len(out) < size:
        digest = hashlib.sha1(diversifier + block).digest()  # noqa: S324 - RFC 7292
        for _ in range(iterations - 1):
            digest = hashlib.sha1(digest).digest()  # noqa: S324 - RFC 7292
        out += digest
        b_int = int.from_bytes((digest * (v // u + 1))[:v], "big") + 1
        block = b"".join(
            ((int.from_bytes(block[j : j + v], "big") + b_int) % (1 << (8 * v))).to_bytes(v, "big")
            for j in range(0, len(block), v)
        )
    return out[:size]


def _bmp_password(password: bytes) -> bytes:
    if not password:
        return b""
    return password.decode("utf-8").encode("utf-16-be") + b"\x00\x00"


def _decrypt_for_inspection(
    algorithm: asn1_algos.EncryptionAlgorithm, ciphertext: bytes, password: bytes
) -> bytes | None:
    """Plaintext of an encrypted safe, or None if we cannot (or the password does not) open
    it. Never raises for a bad password: that is reported by the real decryption later."""
    try:
        name = algorithm["algorithm"].native
        if name == "pbes2":
            params = algorithm["parameters"]
            kdf = params["key_derivation_func"]["parameters"]
            prf = kdf["prf"]["algorithm"].native
            scheme = params["encryption_scheme"]
            cipher_name = scheme["algorithm"].native
            if prf not in _PRFS or cipher_name not in _PBES2_CIPHERS:
                return None
            kind, size = _PBES2_CIPHERS[cipher_name]
            key = PBKDF2HMAC(
                _PRFS[prf](), size, kdf["salt"].native, int(kdf["iteration_count"].native)
            ).derive(password)
            iv = scheme["parameters"].native
        elif name in _PKCS12_PBE_CIPHERS:
            kind, size = _PKCS12_PBE_CIPHERS[name]
            salt = algorithm["parameters"]["salt"].native
            count = int(algorithm["parameters"]["iterations"].native)
            bmp = _bmp_password(password)
            key = pkcs12_kdf(bmp, salt, 1, count, size)
            iv = pkcs12_kdf(bmp, salt, 2, count, 8)
            if size == 16 and kind == "3des":
                key = key + key[:8]
        else:
            return None
        cipher_algorithm: CipherAlgorithm
        if kind == "aes":
            cipher_algorithm, block = AES(key), 128
        elif kind == "3des":
            cipher_algorithm, block = TripleDES(key), 64
        else:
            cipher_algorithm, block = RC2(key), 64
        decryptor = Cipher(cipher_algorithm, modes.CBC(iv)).decryptor()
        padded = decryptor.update(ciphertext) + decryptor.finalize()
        unpadder = sym_padding.PKCS7(block).unpadder()
        return unpadder.update(padded) + unpadder.finalize()
    except Exception:
        return None
