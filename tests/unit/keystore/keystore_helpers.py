"""Constants and helpers shared by the key store tests (importable: tests dir on sys.path)."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path
from typing import Any

from asn1crypto import cms as asn1_cms
from asn1crypto import core as asn1_core
from asn1crypto import pkcs12 as asn1_pkcs12
from cryptography import x509
from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives import padding as sym_padding
from cryptography.hazmat.primitives.ciphers import Cipher, modes
from cryptography.hazmat.primitives.ciphers.algorithms import AES
from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC
from cryptography.hazmat.primitives.serialization import pkcs12

from smime_proxy.crypto.keyagent import InProcessKeyAgent, KeyAgent
from smime_proxy.keystore.pkcs import PrivateKey
from smime_proxy.keystore.pkcs12_check import pkcs12_kdf

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


def nest_key_bag(data: bytes, password: bytes, key_bag_iterations: int, *, legacy: bool) -> bytes:
    """A PFX (without MAC) whose shrouded key bag, with its iteration count replaced, sits
    inside an encrypted safe (PBES2/AES-256 or, `legacy`, PKCS#12 PBE 3DES) with a small count:
    the bag's count is visible only after decrypting that safe."""
    pfx = asn1_pkcs12.Pfx.load(data)
    bags = []
    kept = []  # the certificates' encrypted safe, as it was
    for content_info in asn1_pkcs12.AuthenticatedSafe.load(pfx["auth_safe"]["content"].native):
        if content_info["content_type"].native != "data":
            kept.append(content_info)
        else:
            for bag in asn1_pkcs12.SafeContents.load(content_info["content"].native):
                if bag["bag_id"].native == "pkcs8_shrouded_key_bag":
                    set_iterations(bag["bag_value"]["encryption_algorithm"], key_bag_iterations)
                bags.append(bag)
    plain = asn1_pkcs12.SafeContents(bags).dump(force=True)
    padder = sym_padding.PKCS7(64 if legacy else 128).padder()
    padded = padder.update(plain) + padder.finalize()
    salt, iv_or_none = os.urandom(16), os.urandom(16)
    algorithm: dict[str, Any]
    if legacy:
        bmp = password.decode().encode("utf-16-be") + b"\x00\x00"
        key = pkcs12_kdf(bmp, salt, 1, 1000, 24)
        iv = pkcs12_kdf(bmp, salt, 2, 1000, 8)
        cipher = Cipher(TripleDES(key), modes.CBC(iv))
        algorithm = {
            "algorithm": "pkcs12_sha1_tripledes_3key",
            "parameters": {"salt": salt, "iterations": 1000},
        }
    else:
        key = PBKDF2HMAC(hashes.SHA256(), 32, salt, 1000).derive(password)
        cipher = Cipher(AES(key), modes.CBC(iv_or_none))
        algorithm = {
            "algorithm": "pbes2",
            "parameters": {
                "key_derivation_func": {
                    "algorithm": "pbkdf2",
                    "parameters": {
                        "salt": asn1_core.OctetString(salt),
                        "iteration_count": 1000,
                        "prf": {"algorithm": "sha256", "parameters": None},
                    },
                },
                "encryption_scheme": {"algorithm": "aes256_cbc", "parameters": iv_or_none},
            },
        }
    encryptor = cipher.encryptor()
    ciphertext = encryptor.update(padded) + encryptor.finalize()
    encrypted = asn1_cms.ContentInfo(
        {
            "content_type": "encrypted_data",
            "content": {
                "version": "v0",
                "encrypted_content_info": {
                    "content_type": "data",
                    "content_encryption_algorithm": algorithm,
                    "encrypted_content": ciphertext,
                },
            },
        }
    )
    auth_safe = asn1_pkcs12.AuthenticatedSafe([*kept, encrypted]).dump(force=True)
    result = asn1_pkcs12.Pfx(
        {
            "version": "v3",
            "auth_safe": asn1_cms.ContentInfo({"content_type": "data", "content": auth_safe}),
        }
    )
    return bytes(result.dump(force=True))


def held_key(agent: KeyAgent) -> PrivateKey:
    """The private key of an in-process agent (what `SecureMail.unlock` gives without a key
    agent process)."""
    assert isinstance(agent, InProcessKeyAgent)
    return agent.private_key
