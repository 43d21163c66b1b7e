"""Writing and opening a stored key (PBES2, RFC 8018 6.2) with its KDF run outside the GIL.

`cryptography`'s PKCS#8 loader (and its PKCS#12 builder, which wrote the stored keys)
runs PBKDF2 holding the GIL: 600,000 iterations, about
70 ms here (three times that on a slower machine), during which no other thread of the
daemon runs. Every unlock, every wrong Secure Mail Password and every first mail login of
a user who unlocks by it froze every IMAP and SMTP session of every user for that long
(stop 30: a 1 ms ticker thread missed 107 ms, the RSA key's check included). Here the key
is derived by `cryptography`'s `PBKDF2HMAC`, which releases the GIL, the AES-CBC
decryption is `cryptography`'s too, and the PrivateKeyInfo it gives is read by the same
loader without a password (`keystore.pkcs` checks an RSA key itself: OpenSSL's check took
35 ms holding the GIL). Written here, not taken from a library, for that reason only.
`encrypt_pbes2` writes the store's one form; `decrypt_pbes2` reads it and OpenSSL's `-v2`
exports (PBKDF2 with an HMAC-SHA PRF, AES-CBC) and answers None for anything else, which
the caller hands to the loader as before.

May import: errors, cryptography, asn1crypto, stdlib.
"""

from __future__ import annotations

import os
from typing import Final

from asn1crypto import algos, core
from asn1crypto import keys as asn1_keys
from cryptography.hazmat.primitives import hashes, padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC

from smime_proxy.errors import WrongPassword

_PRFS: Final[dict[str, type[hashes.HashAlgorithm]]] = {
    "sha1": hashes.SHA1, "sha224": hashes.SHA224, "sha256": hashes.SHA256,
    "sha384": hashes.SHA384, "sha512": hashes.SHA512}
_KEY_LENGTHS: Final = {"aes128_cbc": 16, "aes192_cbc": 24, "aes256_cbc": 32}


def decrypt_pbes2(blob: bytes, password: bytes, max_iterations: int) -> bytes | None:
    """The PKCS#8 PrivateKeyInfo DER inside the EncryptedPrivateKeyInfo `blob`, or None for
    a form this module does not read (the caller's loader reads it). `WrongPassword` when
    the decryption's padding is wrong (a wrong password, or a damaged key: they cannot be
    told apart); ValueError for an iteration count outside 1..`max_iterations`, checked
    before any work."""
    try:
        info = asn1_keys.EncryptedPrivateKeyInfo.load(blob, strict=True)
        algorithm = info["encryption_algorithm"]
        if algorithm["algorithm"].native != "pbes2":
            return None
        kdf = algorithm["parameters"]["key_derivation_func"]
        scheme = algorithm["parameters"]["encryption_scheme"]
        if kdf["algorithm"].native != "pbkdf2":
            return None
        params = kdf["parameters"]
        prf = _PRFS.get(str(params["prf"]["algorithm"].native))
        key_length = _KEY_LENGTHS.get(str(scheme["algorithm"].native))
        salt = params["salt"].native
        iterations = params["iteration_count"].native
        iv = scheme["parameters"].native
        stated_length = params["key_length"].native
        ciphertext = info["encrypted_data"].native
    except (ValueError, TypeError, KeyError):
        return None  # the caller's loader says what is wrong with it
    if (prf is None or key_length is None or not isinstance(salt, bytes)
            or not isinstance(iv, bytes) or len(iv) != 16
            or stated_length not in (None, key_length)
            or not isinstance(ciphertext, bytes) or not ciphertext or len(ciphertext) % 16):
        return None
    if not isinstance(iterations, int) or not 1 <= iterations <= max_iterations:
        raise ValueError("unacceptable KDF iteration count")
    key = PBKDF2HMAC(prf(), key_length, salt, iterations).derive(password)  # GIL released
    decryptor = Cipher(algorithms.AES(key), modes.CBC(iv)).decryptor()
    padded = decryptor.update(ciphertext) + decryptor.finalize()
    pad = padded[-1]
    # RFC 8018 6.2.1 (the RFC 5652 6.3 padding): 1..16 bytes, each the count
    if not 1 <= pad <= 16 or padded[-pad:] != bytes([pad]) * pad:
        raise WrongPassword("wrong password")
    return padded[:-pad]


def encrypt_pbes2(pkcs8: bytes, password: bytes, iterations: int) -> bytes:
    """`pkcs8` (a PrivateKeyInfo's DER) as the store keeps it: an EncryptedPrivateKeyInfo,
    PBES2 with PBKDF2-HMAC-SHA256 (`iterations`, a 128-bit salt; GIL released) and
    AES-256-CBC (RFC 8018 6.2.1), the form `cryptography`'s PKCS#12 builder writes."""
    salt, iv = os.urandom(16), os.urandom(16)
    key = PBKDF2HMAC(hashes.SHA256(), 32, salt, iterations).derive(password)
    padder = padding.PKCS7(128).padder()
    encryptor = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor()
    ciphertext = encryptor.update(padder.update(pkcs8) + padder.finalize()) + encryptor.finalize()
    info = asn1_keys.EncryptedPrivateKeyInfo({
        "encryption_algorithm": {"algorithm": "pbes2", "parameters": {
            "key_derivation_func": {"algorithm": "pbkdf2", "parameters": {
                "salt": algos.Pbkdf2Salt(name="specified", value=salt),
                "iteration_count": iterations,
                "prf": {"algorithm": "sha256", "parameters": core.Null()}}},
            "encryption_scheme": {"algorithm": "aes256_cbc", "parameters": iv}}},
        "encrypted_data": ciphertext})
    return bytes(info.dump())
