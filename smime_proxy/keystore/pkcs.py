"""Private keys at rest, PKCS#12 import (with a KDF cap checked before decrypting) and export.

At rest (DESIGN decision 10) a key is a DER PKCS#8 `EncryptedPrivateKeyInfo` with PBES2:
AES-256-CBC, PBKDF2-HMAC-SHA256, `KDF_ITERATIONS` (600,000) iterations, 128-bit salt,
written and read by `keystore.pbes2` with the KDF outside the GIL (`cryptography`'s own
PKCS#8 and PKCS#12 paths hold it for the whole KDF, which froze the daemon; its
`BestAvailableEncryption` for PKCS#8 would also use only 2,048 iterations). No PKCS#12 MAC
is ever stored: one computed with a fixed 2,048 iterations would be a cheap password oracle.

Import accepts what Outlook, Thunderbird/NSS, OpenSSL and gpgsm export, including legacy
PBE-SHA1-3DES and RC2; every KDF iteration count visible before decryption (MAC, shrouded key
bags, encrypted safes) is checked against a cap first, so a hostile file cannot make us run
billions of iterations. A key bag nested inside an *encrypted* safe is only visible after that
safe is decrypted; its count is then limited by the size cap, not checked.

No function here puts a password or key material in a repr or an error message.

May import: errors, keystore.pkcs12_check, keystore.pbes2, cryptography, asn1crypto, stdlib.
"""

from __future__ import annotations

import base64
import warnings
from dataclasses import dataclass, field
from datetime import datetime

from asn1crypto import keys as asn1_keys
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm as CryptographyUnsupported
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import pkcs12

from smime_proxy.errors import ImportRejected, KeyStoreError, UsageError, WrongPassword
from smime_proxy.keystore.pbes2 import decrypt_pbes2, encrypt_pbes2
from smime_proxy.keystore.pkcs12_check import (
    IMPORT_ITERATION_CAP,
    LEGACY_INSPECTION_CAP,
    MAX_KEY_FILE_SIZE,
    check_count,
    check_pkcs12_iterations,
    iterations_of,
)

KDF_ITERATIONS = 600_000
"""PBKDF2-HMAC-SHA256 iterations for keys at rest and modern exports (OWASP 2023 figure)."""

_SUPPORTED_CURVES = (ec.SECP256R1, ec.SECP384R1, ec.SECP521R1)

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


@dataclass(frozen=True, repr=False)
class KeyMaterial:
    """A private key with its certificate and chain (EE first, then issuers)."""

    private_key: PrivateKey
    certificate: x509.Certificate
    chain: tuple[x509.Certificate, ...] = field(default=())

    def __repr__(self) -> str:  # never show the key
        return f"KeyMaterial(subject={self.certificate.subject.rfc4514_string()!r})"


@dataclass(frozen=True)
class Pbes2Parameters:
    """The parameters of a PBES2 `EncryptedPrivateKeyInfo`, as stored."""

    kdf: str
    prf: str
    iterations: int
    salt_length: int
    cipher: str


# --- keys at rest ---------------------------------------------------------------------------


def _check_password(password: bytes) -> None:
    if not isinstance(password, bytes):
        raise UsageError("password must be bytes")


def wrap_private_key(
    private_key: PrivateKey, password: bytes, *, iterations: int = KDF_ITERATIONS
) -> bytes:
    """Encrypt `private_key` under `password`: DER PKCS#8 EncryptedPrivateKeyInfo, PBES2."""
    _check_password(password)
    if not password:
        raise UsageError("an empty password cannot protect a key")
    plain = private_key.private_bytes(serialization.Encoding.DER,
                                      serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption())
    blob = encrypt_pbes2(plain, password, iterations)  # the KDF outside the GIL
    params = pbes2_parameters(blob)
    # Belt and braces: never store anything weaker than asked for.
    if (
        params.cipher != "aes256_cbc"
        or params.prf != "sha256"
        or params.iterations != iterations
        or params.salt_length < 16
    ):
        raise KeyStoreError("the key encryption does not have the required strength")
    return blob


def pbes2_parameters(blob: bytes) -> Pbes2Parameters:
    """Parse the PBES2 parameters of a stored key (`KeyStoreError` if it is not PBES2)."""
    try:
        info = asn1_keys.EncryptedPrivateKeyInfo.load(blob, strict=True)
        algorithm = info["encryption_algorithm"]
        if algorithm["algorithm"].native != "pbes2":
            raise KeyStoreError("the stored key is not PBES2-encrypted")
        kdf = algorithm["parameters"]["key_derivation_func"]
        kdf_name = str(kdf["algorithm"].native)
        if kdf_name != "pbkdf2":
            raise KeyStoreError("the stored key does not use PBKDF2")
        kdf_params = kdf["parameters"]
        return Pbes2Parameters(
            kdf=kdf_name,
            prf=str(kdf_params["prf"]["algorithm"].native),
            iterations=int(kdf_params["iteration_count"].native),
            salt_length=len(kdf_params["salt"].native),
            cipher=str(algorithm["parameters"]["encryption_scheme"]["algorithm"].native),
        )
    except KeyStoreError:
        raise
    except Exception:
        raise KeyStoreError("the stored key is corrupt") from None


def unwrap_private_key(
    blob: bytes, password: bytes, *, max_iterations: int = IMPORT_ITERATION_CAP
) -> PrivateKey:
    """Decrypt a stored key. `WrongPassword` if the password does not open it."""
    _check_password(password)
    params = pbes2_parameters(blob)
    if not 1 <= params.iterations <= max_iterations:
        raise KeyStoreError("the stored key has an unacceptable KDF iteration count")
    if not password:
        raise WrongPassword("wrong password")
    try:
        # the KDF outside the GIL where the form allows (keystore.pbes2: the daemon's other
        # threads run meanwhile)
        plain = decrypt_pbes2(blob, password, max_iterations)
        key = (serialization.load_der_private_key(blob, password) if plain is None
               else _load_checked(plain))
    except (ValueError, TypeError, CryptographyUnsupported):
        # (a damaged key can decrypt to another algorithm's identifier: CBC lets a changed
        # ciphertext bit through to the next block; as a wrong password, it opens nothing)
        raise WrongPassword("wrong password") from None
    return _supported_key(key, error=KeyStoreError)


def _load_checked(pkcs8: bytes) -> object:
    """A decrypted PrivateKeyInfo, an RSA key checked by `rsa_key_consistent` before
    OpenSSL's check, which proves p and q prime and took 35 ms holding the GIL at every
    unlock (the daemon stood still). The callers compare the key with its certificate's
    public key, so p * q is that certificate's modulus, which was a product of two primes
    when the key was generated or imported (with OpenSSL's full check); what a damaged or
    altered blob can change is caught here. A key that fails it is left to OpenSSL's check
    (ValueError if that fails too): the two agree on every altered key the tests try, and
    should they not, no key OpenSSL takes is refused."""
    key = serialization.load_der_private_key(pkcs8, None, unsafe_skip_rsa_key_validation=True)
    if isinstance(key, rsa.RSAPrivateKey) and not rsa_key_consistent(key.private_numbers()):
        return serialization.load_der_private_key(pkcs8, None)
    return key


def rsa_key_consistent(numbers: rsa.RSAPrivateNumbers) -> bool:
    """OpenSSL's RSA_check_key without the primality tests: n = p q with p and q odd, e odd
    and above 1, d e = 1 mod p - 1 and mod q - 1, each CRT value what d, p and q make it.
    A changed CRT value would make signatures that reveal the key (the Bellcore attack)."""
    p, q, d = numbers.p, numbers.q, numbers.d
    n, e = numbers.public_numbers.n, numbers.public_numbers.e
    return (
        p > 2 and q > 2 and p % 2 == 1 and q % 2 == 1 and p * q == n
        and e > 1 and e % 2 == 1 and d > 0
        and d * e % (p - 1) == 1 and d * e % (q - 1) == 1
        and numbers.dmp1 == d % (p - 1) and numbers.dmq1 == d % (q - 1)
        and 0 < numbers.iqmp < p and numbers.iqmp * q % p == 1
    )


def public_key_der(key: PrivateKey | x509.Certificate) -> bytes:
    """The SubjectPublicKeyInfo DER of a private key or a certificate (to compare keys)."""
    public = key.public_key()
    return public.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _supported_key(key: object, *, error: type[Exception] = ImportRejected) -> PrivateKey:
    if isinstance(key, rsa.RSAPrivateKey):
        if key.key_size < 2048:
            raise error(f"RSA keys shorter than 2048 bits are refused (got {key.key_size})")
        return key
    if isinstance(key, ec.EllipticCurvePrivateKey):
        if not isinstance(key.curve, _SUPPORTED_CURVES):
            raise error(f"unsupported elliptic curve {key.curve.name}")
        return key
    kind = type(key).__name__.removesuffix("PrivateKey").lstrip("_") or "unknown"
    raise error(f"unsupported key type {kind}: S/MIME keys must be RSA or EC (P-256/384/521)")


# --- import ---------------------------------------------------------------------------------


def _order_chain(
    certificate: x509.Certificate, others: list[x509.Certificate]
) -> tuple[x509.Certificate, ...]:
    """The issuers of `certificate` among `others`, in path order; unrelated ones dropped."""
    chain: list[x509.Certificate] = []
    current = certificate
    pool = [c for c in others if c != certificate]
    while current.issuer != current.subject:
        issuer = next((c for c in pool if c.subject == current.issuer), None)
        if issuer is None:
            break
        chain.append(issuer)
        pool.remove(issuer)
        current = issuer
    return tuple(chain)


def _assemble(private_key: object, certificates: list[x509.Certificate]) -> KeyMaterial:
    key = _supported_key(private_key)
    mine = public_key_der(key)
    matching = [c for c in certificates if _cert_public_key_der(c) == mine]
    if not matching:
        raise ImportRejected("the file holds no certificate for its private key")
    # Re-issued certificates for the same key: take the newest.
    matching.sort(key=lambda c: c.not_valid_before_utc, reverse=True)
    certificate = matching[0]
    return KeyMaterial(key, certificate, _order_chain(certificate, certificates))


def _cert_public_key_der(certificate: x509.Certificate) -> bytes | None:
    try:
        return certificate.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    except Exception:  # unsupported public key algorithm in some bundled certificate
        return None


def load_pkcs12(
    data: bytes, password: bytes, *, cap: int = IMPORT_ITERATION_CAP
) -> KeyMaterial:
    """A key and its certificates from a PKCS#12 file (after `check_pkcs12_iterations`)."""
    _check_password(password)
    check_pkcs12_iterations(data, cap, password)
    candidates: list[bytes | None] = [password] if password else [b"", None]
    loaded = None
    for candidate in candidates:
        try:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=".*parsed as DER.*")
                loaded = pkcs12.load_pkcs12(data, candidate)
            break
        except (ValueError, TypeError):
            continue
    if loaded is None:
        raise WrongPassword("wrong password for the PKCS#12 file (or a damaged file)")
    if loaded.key is None:
        raise ImportRejected("the PKCS#12 file holds no private key")
    certificates = [c.certificate for c in loaded.additional_certs]
    if loaded.cert is not None:
        certificates.insert(0, loaded.cert.certificate)
    return _assemble(loaded.key, certificates)


def load_pem_bundle(
    data: bytes, password: bytes, *, cap: int = IMPORT_ITERATION_CAP
) -> KeyMaterial:
    """A key and its certificates from PEM text (PKCS#8, encrypted PKCS#8, PKCS#1, SEC1)."""
    _check_password(password)
    if len(data) > MAX_KEY_FILE_SIZE:
        raise ImportRejected("the key file is too large")
    try:
        certificates = x509.load_pem_x509_certificates(data)
    except ValueError:
        certificates = []
    key_blocks = list(dict.fromkeys(_pem_blocks(data, "PRIVATE KEY")))  # the same one twice: ok
    if len(key_blocks) != 1:
        raise ImportRejected("the PEM file must hold exactly one private key")
    block = key_blocks[0]
    if b"BEGIN ENCRYPTED PRIVATE KEY" in block:
        try:
            der = asn1_keys.EncryptedPrivateKeyInfo.load(_pem_der(block), strict=True)
            check_count(iterations_of(der["encryption_algorithm"]), cap)
        except ImportRejected:
            raise
        except Exception:
            raise ImportRejected("damaged encrypted private key") from None
    elif b"Proc-Type: 4,ENCRYPTED" in block:
        raise ImportRejected("legacy OpenSSL-encrypted PEM keys are not supported; use PKCS#8")
    try:
        key = serialization.load_pem_private_key(
            block, password if b"ENCRYPTED" in block else None
        )
    except (ValueError, TypeError):
        if b"ENCRYPTED" in block:
            raise WrongPassword("wrong password for the key file (or a damaged file)") from None
        raise ImportRejected("damaged or unsupported private key") from None
    except Exception:
        raise ImportRejected("unsupported private key") from None
    return _assemble(key, certificates)


def _pem_blocks(data: bytes, label_suffix: str) -> list[bytes]:
    blocks: list[bytes] = []
    suffix = label_suffix.encode("ascii") + b"-----"
    start = 0
    while True:
        begin = data.find(b"-----BEGIN ", start)
        if begin < 0:
            return blocks
        line_end = data.find(b"\n", begin)
        header = data[begin : line_end if line_end >= 0 else len(data)].rstrip()
        label = header[len(b"-----BEGIN ") :]
        end_marker = b"-----END " + label
        end = data.find(end_marker, begin)
        if end < 0:
            return blocks
        end += len(end_marker)
        if label.endswith(suffix):
            blocks.append(data[begin:end] + b"\n")
        start = end


def _pem_der(block: bytes) -> bytes:
    lines = [ln for ln in block.splitlines() if ln and not ln.startswith(b"-----")]
    return base64.b64decode(b"".join(lines), validate=True)


def load_key_file(
    data: bytes, password: bytes, *, cap: int = IMPORT_ITERATION_CAP
) -> KeyMaterial:
    """PKCS#12 (DER or BER) or a PEM bundle, by content."""
    if b"-----BEGIN " in data[:4096]:
        return load_pem_bundle(data, password, cap=cap)
    return load_pkcs12(data, password, cap=cap)


# --- export ---------------------------------------------------------------------------------


def export_pkcs12(
    material: KeyMaterial,
    export_password: bytes,
    *,
    legacy: bool = False,
    iterations: int = KDF_ITERATIONS,
    friendly_name: bytes | None = None,
) -> bytes:
    """A PKCS#12 file with the key, certificate and chain.

    Modern (default): PBES2 AES-256-CBC with PBKDF2-HMAC-SHA256 for key and certificates and an
    HMAC-SHA256 MAC (OpenSSL 3 and NSS read it). `legacy=True`: PBE-SHA1-3DES for key and
    certificates and an HMAC-SHA1 MAC, the only form gpgsm 2.2 (and old Outlook) imports;
    its iteration count is at most `LEGACY_INSPECTION_CAP` so that we can import it again.
    `cryptography` computes the MAC key with a fixed 2,048 iterations, as OpenSSL does by
    default, and the MAC lets a password guess be checked at that cost: whatever the
    encryption's count, the export password must be strong.
    """
    _check_password(export_password)
    if not export_password:
        raise UsageError("an export needs a non-empty file password")
    algorithm = (
        pkcs12.PBES.PBESv1SHA1And3KeyTripleDESCBC
        if legacy
        else pkcs12.PBES.PBESv2SHA256AndAES256CBC
    )
    encryption = (
        serialization.PrivateFormat.PKCS12.encryption_builder()
        .kdf_rounds(min(iterations, LEGACY_INSPECTION_CAP) if legacy else iterations)
        .key_cert_algorithm(algorithm)
        .hmac_hash(hashes.SHA1() if legacy else hashes.SHA256())  # noqa: S303 - gpgsm needs it
        .build(export_password)
    )
    return pkcs12.serialize_key_and_certificates(
        friendly_name,
        material.private_key,
        material.certificate,
        list(material.chain) or None,
        encryption,
    )


def certificate_time_ok(certificate: x509.Certificate, now: datetime) -> bool:
    """Whether `now` lies within the certificate's validity period."""
    return certificate.not_valid_before_utc <= now <= certificate.not_valid_after_utc
