"""The `KeyAgent` port: the only way to use a private key.

A key agent holds one private key and its certificate chain and performs exactly two kinds of
operation: sign a digest, and recover a content-encryption key (RSA key transport or ECDH key
agreement). The in-process agent is the default; the same protocol lets the key live in a
separate process that parses no network input later.

May import: errors, cryptography.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils

from smime_proxy.errors import UnsupportedAlgorithm

HashName = Literal["sha1", "sha224", "sha256", "sha384", "sha512"]
SignatureScheme = Literal["pkcs1", "pss", "ecdsa"]

_HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "sha1": hashes.SHA1,
    "sha224": hashes.SHA224,
    "sha256": hashes.SHA256,
    "sha384": hashes.SHA384,
    "sha512": hashes.SHA512,
}


def hash_algorithm(name: str) -> hashes.HashAlgorithm:
    try:
        return _HASHES[name]()
    except KeyError:
        raise UnsupportedAlgorithm(f"unsupported digest algorithm {name}") from None


@dataclass(frozen=True)
class KeyTransportPadding:
    """RSA key transport padding: PKCS#1 v1.5 or OAEP with the given hashes and label."""

    scheme: Literal["pkcs1", "oaep"]
    oaep_hash: str = "sha1"
    mgf_hash: str = "sha1"
    label: bytes | None = None


class KeyAgent(Protocol):
    """Private-key operations for one key; never exposes the key itself."""

    @property
    def certificate(self) -> x509.Certificate: ...

    @property
    def chain(self) -> Sequence[x509.Certificate]: ...

    def sign_digest(self, digest: bytes, hash_name: str, scheme: SignatureScheme) -> bytes:
        """Sign a precomputed digest."""
        ...

    def unwrap_key(
        self, encrypted_key: bytes, pad: KeyTransportPadding, expected_length: int
    ) -> bytes:
        """Decrypt an RSA-transported key; always returns `expected_length` bytes.

        On any failure (bad padding, wrong length) a random key is returned instead (RFC 3218
        section 2.3.2): the caller's content decryption then fails the same way whatever was
        wrong, so no padding oracle exists.
        """
        ...

    def ecdh(self, peer_public_key: ec.EllipticCurvePublicKey) -> bytes:
        """The raw ECDH shared secret with our private key."""
        ...


@dataclass(frozen=True, repr=False)
class InProcessKeyAgent:
    """The default agent: the key object lives in this process."""

    private_key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
    cert: x509.Certificate
    extra_certs: tuple[x509.Certificate, ...] = field(default=())

    def __repr__(self) -> str:  # never show the key
        return f"InProcessKeyAgent(subject={self.cert.subject.rfc4514_string()!r})"

    @property
    def certificate(self) -> x509.Certificate:
        return self.cert

    @functools.cached_property
    def _rsa_key(self) -> rsa.RSAPrivateKey | None:
        """The key when it is RSA, asked once: an isinstance against cryptography's abstract
        key class goes through the abc machinery at every message."""
        key = self.private_key
        return key if isinstance(key, rsa.RSAPrivateKey) else None

    @property
    def chain(self) -> Sequence[x509.Certificate]:
        return self.extra_certs

    @property
    def key_type(self) -> str:
        if isinstance(self.private_key, rsa.RSAPrivateKey):
            return f"RSA-{self.private_key.key_size}"
        return f"EC-{self.private_key.curve.name}"

    def sign_digest(self, digest: bytes, hash_name: str, scheme: SignatureScheme) -> bytes:
        algorithm = utils.Prehashed(hash_algorithm(hash_name))
        key = self.private_key
        if isinstance(key, rsa.RSAPrivateKey):
            if scheme == "pss":
                pss = padding.PSS(
                    mgf=padding.MGF1(hash_algorithm(hash_name)),
                    salt_length=hash_algorithm(hash_name).digest_size,
                )
                return key.sign(digest, pss, algorithm)
            if scheme != "pkcs1":
                raise UnsupportedAlgorithm(f"RSA key cannot sign with {scheme}")
            return key.sign(digest, padding.PKCS1v15(), algorithm)
        if scheme != "ecdsa":
            raise UnsupportedAlgorithm(f"EC key cannot sign with {scheme}")
        return key.sign(digest, ec.ECDSA(algorithm))

    def unwrap_key(
        self, encrypted_key: bytes, pad: KeyTransportPadding, expected_length: int
    ) -> bytes:
        fallback = os.urandom(expected_length)
        key = self._rsa_key
        if key is None:
            return fallback
        asym_padding: padding.AsymmetricPadding
        if pad.scheme == "oaep":
            asym_padding = padding.OAEP(
                mgf=padding.MGF1(hash_algorithm(pad.mgf_hash)),
                algorithm=hash_algorithm(pad.oaep_hash),
                label=pad.label,
            )
        else:
            asym_padding = padding.PKCS1v15()
        try:
            plain = key.decrypt(encrypted_key, asym_padding)
        except ValueError:
            return fallback
        # Constant-shape choice: a wrong length is treated exactly like a padding failure.
        return plain if len(plain) == expected_length else fallback

    def ecdh(self, peer_public_key: ec.EllipticCurvePublicKey) -> bytes:
        key = self.private_key
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise UnsupportedAlgorithm("not an EC key")
        return key.exchange(ec.ECDH(), peer_public_key)
