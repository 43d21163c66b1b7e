"""Constants and helpers shared by the key store tests (importable: tests dir on sys.path)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from asn1crypto import cms as asn1_cms
from asn1crypto import pkcs12 as asn1_pkcs12
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.serialization import pkcs12

NOW = dt.datetime(2026, 6, 1, 12, 0, tzinfo=dt.UTC)
FAST_ITERATIONS = 1_000  # tests only: production is KDF_ITERATIONS (600,000)
VECTORS = Path("/work/shared/vectors")
REPO_VECTORS = Path(__file__).resolve().parents[2] / "vectors"


def vector(*parts: str) -> Path:
    """A vector file: the in-repo copy under tests/vectors/, else the shared one."""
    local = REPO_VECTORS.joinpath(*parts)
    return local if local.exists() else VECTORS.joinpath(*parts)


THUNDERBIRD_P12 = ("Alice", "Alice-ec", "Bob", "Dave", "Eve", "Fran", "Fran-ec")
THUNDERBIRD_PASSWORD = b"nss"


def set_iterations(algorithm: Any, count: int) -> None:
    """Rewrite the KDF iteration count of an asn1crypto EncryptionAlgorithm in place."""
    if algorithm["algorithm"].native == "pbes2":
        algorithm["parameters"]["key_derivation_func"]["parameters"]["iteration_count"] = count
    else:
        algorithm["parameters"]["iterations"] = count


def craft_iterations(
    data: bytes,
    *,
    mac: int | None = None,
    key_bag: int | None = None,
    encrypted_safe: int | None = None,
) -> bytes:
    """A copy of a PFX with some KDF iteration counts replaced (its MAC no longer verifies,
    which does not matter: the cap must reject it before any KDF runs)."""
    pfx = asn1_pkcs12.Pfx.load(data)
    if mac is not None:
        pfx["mac_data"]["iterations"] = mac
    safes = asn1_pkcs12.AuthenticatedSafe.load(pfx["auth_safe"]["content"].native)
    rebuilt = []
    for content_info in safes:
        kind = content_info["content_type"].native
        if kind == "data" and key_bag is not None:
            contents = asn1_pkcs12.SafeContents.load(content_info["content"].native)
            for bag in contents:
                if bag["bag_id"].native == "pkcs8_shrouded_key_bag":
                    set_iterations(bag["bag_value"]["encryption_algorithm"], key_bag)
            content_info = asn1_cms.ContentInfo(
                {"content_type": "data", "content": contents.dump(force=True)}
            )
        elif kind == "encrypted_data" and encrypted_safe is not None:
            encrypted = content_info["content"]["encrypted_content_info"]
            set_iterations(encrypted["content_encryption_algorithm"], encrypted_safe)
        rebuilt.append(content_info)
    pfx["auth_safe"] = asn1_cms.ContentInfo(
        {
            "content_type": "data",
            "content": asn1_pkcs12.AuthenticatedSafe(rebuilt).dump(force=True),
        }
    )
    return bytes(pfx.dump(force=True))


def make_p12(
    key: Any,
    cert: x509.Certificate,
    chain: list[x509.Certificate] | None,
    password: bytes,
    *,
    iterations: int = 2048,
) -> bytes:
    """A modern PKCS#12 (PBES2/AES-256) made by cryptography."""
    encryption = (
        serialization.PrivateFormat.PKCS12.encryption_builder()
        .kdf_rounds(iterations)
        .key_cert_algorithm(pkcs12.PBES.PBESv2SHA256AndAES256CBC)
        .hmac_hash(hashes.SHA256())
        .build(password)
    )
    return pkcs12.serialize_key_and_certificates(b"test", key, cert, chain, encryption)


def describe_pfx(data: bytes) -> dict[str, Any]:
    """MAC digest/iterations and the encryption algorithms of a PFX (for assertions)."""
    pfx = asn1_pkcs12.Pfx.load(data)
    mac = pfx["mac_data"]
    result: dict[str, Any] = {
        "mac_digest": mac["mac"]["digest_algorithm"]["algorithm"].native,
        "mac_iterations": mac["iterations"].native,
        "key_bags": [],
        "encrypted_safes": [],
    }
    for content_info in asn1_pkcs12.AuthenticatedSafe.load(pfx["auth_safe"]["content"].native):
        if content_info["content_type"].native == "data":
            for bag in asn1_pkcs12.SafeContents.load(content_info["content"].native):
                if bag["bag_id"].native == "pkcs8_shrouded_key_bag":
                    result["key_bags"].append(bag["bag_value"]["encryption_algorithm"].native)
        else:
            encrypted = content_info["content"]["encrypted_content_info"]
            result["encrypted_safes"].append(encrypted["content_encryption_algorithm"].native)
    return result
