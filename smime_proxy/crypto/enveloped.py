"""CMS EnvelopedData (RFC 5652 section 6) and AuthEnvelopedData (RFC 5083): build and open.

Recipients: RSA key transport (PKCS#1 v1.5, OAEP per RFC 8017 / RFC 4055) and ECDH
ephemeral-static key agreement (RFC 5753, X9.63 KDF, AES key wrap). Content: AES-CBC
(RFC 3565), AES-GCM (RFC 5084), 3DES-CBC for reading old mail; RC2/DES/RC4 are refused with
ObsoleteAlgorithm.

Oracle rules: PKCS#1 v1.5 follows RFC 3218 (the KeyAgent returns a random key on any failure,
so only the content decryption fails, always with the same DecryptionFailed); GCM content is
never returned before its tag verifies; every other failure is the same DecryptionFailed.

When the native core is built (`smime_proxy.native`), an envelope of the usual shape (key
transport recipients) is read by it (native/src/cms.rs); anything else, and every error, is
read here with asn1crypto, the reference.

May import: errors, crypto.*, native, cryptography, asn1crypto (parsing through crypto.asn1).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from asn1crypto import cms, core, keys
from cryptography import x509
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives import hashes, keywrap
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.x963kdf import X963KDF
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from smime_proxy.crypto import asn1, der, oids
from smime_proxy.crypto.ber import content_type as ber_content_type
from smime_proxy.crypto.ber import dotted, split_encrypted_content
from smime_proxy.crypto.keyagent import KeyAgent, KeyTransportPadding, hash_algorithm
from smime_proxy.crypto.signed import issuer_and_serial
from smime_proxy.crypto.signer_info import NativeIdentifier, named_by, subject_key_identifier
from smime_proxy.errors import (
    DecryptionFailed,
    MalformedMessage,
    NoMatchingRecipient,
    ObsoleteAlgorithm,
    UnsupportedAlgorithm,
)
from smime_proxy.native import native

ContentCipher = Literal["aes-256-gcm", "aes-128-gcm", "aes-256-cbc", "aes-128-cbc"]


@dataclass(frozen=True)
class RecipientKey:
    """A recipient certificate and how to transport the key to it (RSA only)."""

    certificate: x509.Certificate
    key_transport: Literal["pkcs1", "oaep"] = "pkcs1"


# --- building ----------------------------------------------------------------------------------


def build_enveloped(
    content: bytes, recipients: Sequence[RecipientKey], cipher: ContentCipher
) -> bytes:
    """DER ContentInfo of EnvelopedData (CBC) or AuthEnvelopedData (GCM) for `content`."""
    return b"".join(build_enveloped_pieces([content], recipients, cipher))


def build_enveloped_pieces(
    content: Sequence[bytes | memoryview],
    recipients: Sequence[RecipientKey],
    cipher: ContentCipher,
) -> list[bytes]:
    """The same DER as consecutive pieces, encrypting `content` piece by piece.

    Large messages are never joined or copied whole here: the caller base64-encodes the
    pieces directly (a 25 MB message costs one ciphertext copy, not five).
    """
    if not recipients:
        raise UnsupportedAlgorithm("no recipients to encrypt to")
    key_size = 32 if cipher.startswith("aes-256") else 16
    cek = os.urandom(key_size)
    infos = [_recipient_info(r, cek) for r in recipients]
    total = sum(len(piece) for piece in content)
    mode: modes.Mode
    if cipher.endswith("gcm"):
        nonce = os.urandom(12)
        mode = modes.GCM(nonce)
        algorithm = der.algorithm(
            oids.AES_GCM_OID[key_size], der.sequence(der.octet_string(nonce), der.integer(16))
        )
    else:
        iv = os.urandom(16)
        mode = modes.CBC(iv)
        algorithm = der.algorithm(oids.AES_CBC_OID[key_size], der.octet_string(iv))
    encryptor = Cipher(algorithms.AES(cek), mode).encryptor()
    encrypted = [encryptor.update(piece) for piece in content]
    if cipher.endswith("gcm"):
        encrypted.append(encryptor.finalize())
        tag = encryptor.tag  # type: ignore[attr-defined]
        suffix = der.octet_string(tag)
        prefix = der.integer(0) + der.set_of(infos)  # RFC 5083 2.1
        kind = oids.AUTH_ENVELOPED_DATA
    else:
        pad = 16 - total % 16  # PKCS#7 padding (RFC 5652 6.3)
        encrypted.append(encryptor.update(bytes((pad,)) * pad) + encryptor.finalize())
        suffix = b""
        any_kari = any(info[0] == 0xA1 for info in infos)
        prefix = der.integer(2 if any_kari else 0) + der.set_of(infos)  # RFC 5652 6.1
        kind = oids.ENVELOPED_DATA
    ciphertext_length = sum(len(piece) for piece in encrypted)
    # EncryptedContentInfo ::= SEQUENCE { contentType, algorithm, [0] IMPLICIT OCTET STRING }
    eci_head = der.oid(oids.DATA) + algorithm + der.header(0x80, ciphertext_length)
    eci_header = der.header(0x30, len(eci_head) + ciphertext_length)
    body_length = len(prefix) + len(eci_header) + len(eci_head) + ciphertext_length + len(suffix)
    body_header = der.header(0x30, body_length)
    explicit_header = der.header(0xA0, len(body_header) + body_length)
    kind_oid = der.oid(kind)
    info_length = len(kind_oid) + len(explicit_header) + len(body_header) + body_length
    head = (
        der.header(0x30, info_length)
        + kind_oid
        + explicit_header
        + body_header
        + prefix
        + eci_header
        + eci_head
    )
    return [head, *encrypted, suffix]


def _recipient_info(recipient: RecipientKey, cek: bytes) -> bytes:
    public_key = recipient.certificate.public_key()
    rid = issuer_and_serial(recipient.certificate)
    if isinstance(public_key, rsa.RSAPublicKey):
        if recipient.key_transport == "oaep":
            sha256 = der.algorithm(oids.DIGEST_OID["sha256"])
            params = der.sequence(
                der.explicit(0, sha256), der.explicit(1, der.algorithm(oids.MGF1, sha256))
            )
            alg = der.algorithm(oids.RSAES_OAEP, params)
            encrypted = public_key.encrypt(
                cek,
                padding.OAEP(
                    mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None
                ),
            )
        else:
            alg = der.algorithm(oids.RSA_ENCRYPTION, der.null())
            encrypted = public_key.encrypt(cek, padding.PKCS1v15())
        return der.sequence(der.integer(0), rid, alg, der.octet_string(encrypted))
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        return _kari(public_key, rid, cek)
    raise UnsupportedAlgorithm("recipient key is neither RSA nor EC")


def _kari(public_key: ec.EllipticCurvePublicKey, rid: bytes, cek: bytes) -> bytes:
    """KeyAgreeRecipientInfo, ephemeral-static ECDH (RFC 5753 section 3.1.1)."""
    kdf_hash = "sha384" if public_key.curve.key_size >= 384 else "sha256"
    wrap_size = 32
    wrap_alg = der.algorithm(oids.AES_WRAP_OID[wrap_size])
    ephemeral = ec.generate_private_key(public_key.curve)
    shared = ephemeral.exchange(ec.ECDH(), public_key)
    kek = _x963(shared, kdf_hash, wrap_alg, wrap_size, ukm=None)
    wrapped = keywrap.aes_key_wrap(kek, cek)
    point = ephemeral.public_key().public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)
    originator = der.explicit(
        0,
        der.implicit(
            1,
            der.sequence(der.algorithm(oids.EC_PUBLIC_KEY), der.bit_string(point)),
            constructed=True,
        ),
    )
    key_enc_alg = der.algorithm(oids.ECDH_STD_SCHEME[kdf_hash], wrap_alg)
    encrypted_keys = der.sequence(der.sequence(rid, der.octet_string(wrapped)))
    kari = der.sequence(der.integer(3), originator, key_enc_alg, encrypted_keys)
    return der.implicit(1, kari, constructed=True)


def _x963(shared: bytes, kdf_hash: str, wrap_alg_der: bytes, size: int, ukm: bytes | None) -> bytes:
    """ECC-CMS-SharedInfo (RFC 5753 section 7.2) into the ANSI X9.63 KDF."""
    shared_info = der.sequence(
        wrap_alg_der,
        der.explicit(0, der.octet_string(ukm)) if ukm is not None else b"",
        der.explicit(2, der.octet_string((size * 8).to_bytes(4, "big"))),
    )
    return X963KDF(algorithm=hash_algorithm(kdf_hash), length=size, sharedinfo=shared_info).derive(
        shared
    )


# --- opening -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Opened:
    """Decrypted content, kept in pieces so a 100 MB message is joined only once."""

    parts: tuple[bytes, ...]
    cipher: str
    authenticated: bool

    @property
    def content(self) -> bytes:
        return self.parts[0] if len(self.parts) == 1 else b"".join(self.parts)


def content_type_of(cms_der: bytes) -> str:
    """The dotted content type of a ContentInfo, without parsing the rest."""
    return ber_content_type(cms_der)


@dataclass(frozen=True)
class ContentKey:
    """The content-encryption key of one message, recovered by whoever holds the private key
    (`recover_content_key`): what a process that opens the message without the private
    key is given (imap/open_processes.py). Worth that one message, nothing more."""

    key: bytes = field(repr=False)


@asn1.malformed_on_error("encrypted message")
def recover_content_key(cms_der: bytes, agent: KeyAgent) -> ContentKey:
    """The content-encryption key of EnvelopedData or AuthEnvelopedData, with the agent's
    key; the content is not decrypted."""
    envelope = _Envelope.read(cms_der)
    return ContentKey(_recover_key(envelope.recipient_infos, agent, envelope.key_length,
                                   ciphertext_check=None))


@dataclass(frozen=True)
class _KeyTransport:
    """A key transport recipient (RFC 5652 6.2.1) as the native reader found it."""

    rid: NativeIdentifier
    algorithm: str  # dotted
    parameters: bytes | None  # DER; None when absent or NULL (as asn1.raw_parameters)
    encrypted_key: bytes = field(repr=False)


@dataclass
class _Envelope:
    """What `open_enveloped` and `recover_content_key` read before the key: from asn1crypto
    (`body`, `alg`, `recipient_infos` of asn1crypto values) or from the native reader
    (`_KeyTransport` recipients, the parameters, mac and authAttrs already read)."""

    kind: str
    body: Any
    alg: Any
    alg_oid: str
    key_length: int
    cipher_name: str
    recipient_infos: list[Any]
    ciphertext: bytes | memoryview
    native_parameters: bytes | None = None
    native_mac: bytes | None = None
    native_auth_attributes: bool = False

    @classmethod
    def read(cls, cms_der: bytes) -> _Envelope:
        if native is not None:
            record = native.read_envelope(cms_der)
            if record is not None:
                return cls._from_native(cms_der, record)
        skeleton, ciphertext = split_encrypted_content(cms_der)
        if ciphertext is None:
            raise UnsupportedAlgorithm("encrypted message without its content (detached)")
        info = asn1.parse(cms.ContentInfo, skeleton, "encrypted message")
        del skeleton
        kind = asn1.guarded("content type", lambda: info["content_type"].dotted)
        if kind not in (oids.ENVELOPED_DATA, oids.AUTH_ENVELOPED_DATA):
            raise MalformedMessage("the CMS object is not EnvelopedData or AuthEnvelopedData")
        body = info["content"]
        eci = body[
            "auth_encrypted_content_info"
            if kind == oids.AUTH_ENVELOPED_DATA
            else "encrypted_content_info"
        ]
        alg = eci["content_encryption_algorithm"]
        alg_oid = asn1.guarded("content encryption algorithm", lambda: asn1.oid_of(alg))
        key_length, cipher_name = _checked_cipher(alg_oid, kind)
        return cls(kind, body, alg, alg_oid, key_length, cipher_name,
                   list(body["recipient_infos"]), ciphertext)

    @classmethod
    def _from_native(cls, der: bytes, record: Any) -> _Envelope:
        """The envelope from native/src/lib.rs `read_envelope`'s offsets into `der`."""
        kind_at, alg_at, params_at, recipients, pieces, mac_at, auth_attributes = record
        kind = dotted(der[kind_at[0] : kind_at[1]])
        alg_oid = asn1.dotted_of(der[alg_at[0] : alg_at[1]])
        key_length, cipher_name = _checked_cipher(alg_oid, kind)
        transports = []
        for rid, named, serial_at, key_alg_at, key_params_at, key_at in recipients:
            transports.append(_KeyTransport(
                NativeIdentifier.of(der, rid, named, serial_at),
                asn1.dotted_of(der[key_alg_at[0] : key_alg_at[1]]),
                _parameters(der, key_params_at), der[key_at[0] : key_at[1]]))
        view = memoryview(der)
        ciphertext: bytes | memoryview = (view[pieces[0][0] : pieces[0][1]] if len(pieces) == 1
                                          else b"".join(view[a:b] for a, b in pieces))
        return cls(kind, None, None, alg_oid, key_length, cipher_name, transports, ciphertext,
                   _parameters(der, params_at),
                   None if mac_at is None else der[mac_at[0] : mac_at[1]], auth_attributes)

    def parameters(self) -> bytes | None:
        """The content-encryption algorithm's parameters (DER), None when absent or NULL."""
        return self.native_parameters if self.alg is None else asn1.raw_parameters(self.alg)


def _parameters(der: bytes, at: tuple[int, int] | None) -> bytes | None:
    if at is None:
        return None
    value = der[at[0] : at[1]]
    return None if value == b"\x05\x00" else value


def _checked_cipher(alg_oid: str, kind: str) -> tuple[int, str]:
    if alg_oid in oids.OBSOLETE_CIPHERS:
        raise ObsoleteAlgorithm(
            f"message is encrypted with the obsolete algorithm "
            f"{oids.OBSOLETE_CIPHERS[alg_oid]}; open it with an old mail client"
        )
    return _content_cipher(alg_oid, kind)


@asn1.malformed_on_error("encrypted message")
def open_enveloped(cms_der: bytes, agent: KeyAgent | ContentKey) -> Opened:
    """Decrypt EnvelopedData or AuthEnvelopedData with the agent's key (or the message's
    content-encryption key, recovered already). The ciphertext is read in place in
    `cms_der`, which the caller lets go once this returns."""
    envelope = _Envelope.read(cms_der)
    if isinstance(agent, ContentKey):
        if len(agent.key) != envelope.key_length:
            raise DecryptionFailed("cannot decrypt this message")
        cek = agent.key
    else:
        cek = _recover_key(envelope.recipient_infos, agent, envelope.key_length,
                           ciphertext_check=None)
    body = envelope.body
    if envelope.kind == oids.AUTH_ENVELOPED_DATA:
        if body is None:
            tag = envelope.native_mac or b""
            auth_attributes = envelope.native_auth_attributes
        else:
            tag = asn1.guarded("authentication tag", lambda: body["mac"].native)
            auth_attributes = not isinstance(body["auth_attrs"], core.Void)
        if auth_attributes:
            raise UnsupportedAlgorithm("authenticated attributes in AuthEnvelopedData")
        return Opened((_decrypt_gcm(cek, envelope.parameters(), envelope.ciphertext, tag),),
                      envelope.cipher_name, True)
    return Opened(_decrypt_cbc(envelope.alg_oid, cek, envelope.parameters(),
                               envelope.ciphertext), envelope.cipher_name, False)


def _content_cipher(alg_oid: str, kind: str) -> tuple[int, str]:
    if kind == oids.AUTH_ENVELOPED_DATA:
        if alg_oid in oids.AES_GCM:
            size = oids.AES_GCM[alg_oid]
            return size, f"aes-{size * 8}-gcm"
        raise UnsupportedAlgorithm(f"unsupported authenticated cipher {alg_oid}")
    if alg_oid in oids.AES_CBC:
        size = oids.AES_CBC[alg_oid]
        return size, f"aes-{size * 8}-cbc"
    if alg_oid == oids.DES_EDE3_CBC:
        return 24, "3des-cbc"
    raise UnsupportedAlgorithm(f"unsupported content encryption algorithm {alg_oid}")


def _recover_key(
    recipient_infos: list[Any], agent: KeyAgent, key_length: int, ciphertext_check: None
) -> bytes:
    """Find our RecipientInfo and recover the content-encryption key.

    Matching is by issuer+serial or subject key identifier. When none matches (re-issued
    certificate, same key) only ECDH recipients are tried one by one: AES key wrap has an
    integrity check. Never RSA PKCS#1 v1.5 (notes/crypto.md rule 9).
    """
    del ciphertext_check
    cert = agent.certificate
    kari_fallbacks: list[tuple[Any, Any]] = []
    for ri in recipient_infos:
        if isinstance(ri, _KeyTransport):  # read by the native reader
            if ri.rid.names(cert):
                return _unwrap_transport(ri.algorithm, lambda: ri.parameters,  # noqa: B023
                                         ri.encrypted_key, agent, key_length)
            continue
        kind = ri.name
        if kind == "ktri":
            ktri = ri.chosen
            if _rid_matches(ktri["rid"], cert):
                return _unwrap_ktri(ktri, agent, key_length)
        elif kind == "kari":
            kari = ri.chosen
            for rek in kari["recipient_encrypted_keys"]:
                if _kari_rid_matches(rek["rid"], cert):
                    return _unwrap_kari(kari, rek, agent, key_length)
                kari_fallbacks.append((kari, rek))
    if isinstance(cert.public_key(), ec.EllipticCurvePublicKey):
        for kari, rek in kari_fallbacks:
            try:
                return _unwrap_kari(kari, rek, agent, key_length)
            except DecryptionFailed:
                continue
    raise NoMatchingRecipient("this message was not encrypted to your certificate")


def _rid_matches(rid: Any, cert: x509.Certificate) -> bool:
    if rid.name == "issuer_and_serial_number":
        return named_by(rid.chosen, cert)
    if rid.name == "subject_key_identifier":
        ours = subject_key_identifier(cert)
        return ours is not None and rid.chosen.native == ours
    return False


def _kari_rid_matches(rid: Any, cert: x509.Certificate) -> bool:
    if rid.name == "issuer_and_serial_number":
        return named_by(rid.chosen, cert)
    if rid.name == "r_key_id":
        ours = subject_key_identifier(cert)
        return ours is not None and rid.chosen["subject_key_identifier"].native == ours
    return False


def _unwrap_ktri(ktri: Any, agent: KeyAgent, key_length: int) -> bytes:
    alg = ktri["key_encryption_algorithm"]
    alg_oid = asn1.oid_of(alg)
    encrypted_key: bytes = ktri["encrypted_key"].native
    return _unwrap_transport(alg_oid, lambda: asn1.raw_parameters(alg), encrypted_key, agent,
                             key_length)


def _unwrap_transport(alg_oid: str, parameters: Callable[[], bytes | None],
                      encrypted_key: bytes, agent: KeyAgent, key_length: int) -> bytes:
    """The content-encryption key from a key transport recipient; `parameters` are read only
    for OAEP (RSAES-OAEP-params, RFC 4055 section 4.1: absent means SHA-1, no label)."""
    if alg_oid == oids.RSA_ENCRYPTION:
        pad = KeyTransportPadding("pkcs1")
    elif alg_oid == oids.RSAES_OAEP:
        params = parameters()
        pad = KeyTransportPadding("oaep") if params is None else _oaep_parameters(params)
    else:
        raise UnsupportedAlgorithm(f"unsupported key transport algorithm {alg_oid}")
    return agent.unwrap_key(encrypted_key, pad, key_length)


@functools.lru_cache(maxsize=64)
def _oaep_parameters(params: bytes) -> KeyTransportPadding:
    """The padding of these RSAES-OAEP-params bytes: a sender uses the same few, and parsing
    them cost a fifth of an RSA decryption."""
    from asn1crypto import algos

    parsed = asn1.parse(algos.RSAESOAEPParams, params, "RSA-OAEP parameters")
    hash_name = oids.DIGESTS.get(parsed["hash_algorithm"]["algorithm"].dotted)
    mgf = parsed["mask_gen_algorithm"]
    mgf_hash = oids.DIGESTS.get(mgf["parameters"]["algorithm"].dotted)
    if hash_name is None or mgf_hash is None:
        raise UnsupportedAlgorithm("unsupported RSA-OAEP hash")
    label: bytes | None = None
    source = parsed["p_source_algorithm"]
    if source["algorithm"].dotted == oids.P_SPECIFIED:
        value = source["parameters"].native
        label = value or None
    return KeyTransportPadding("oaep", hash_name, mgf_hash, label)


def _unwrap_kari(kari: Any, rek: Any, agent: KeyAgent, key_length: int) -> bytes:
    scheme_alg = kari["key_encryption_algorithm"]
    scheme_oid = asn1.oid_of(scheme_alg)
    kdf_hash = oids.ECDH_SCHEMES.get(scheme_oid)
    if kdf_hash is None:
        raise UnsupportedAlgorithm(f"unsupported key agreement scheme {scheme_oid}")
    wrap_der = asn1.raw_parameters(scheme_alg)
    if wrap_der is None:
        raise MalformedMessage("key agreement without a key wrap algorithm")
    wrap = asn1.parse(cms.KeyEncryptionAlgorithm, wrap_der, "key wrap algorithm")
    wrap_size = oids.AES_WRAP.get(wrap["algorithm"].dotted)
    if wrap_size is None:
        raise UnsupportedAlgorithm("unsupported key wrap algorithm")
    originator = kari["originator"]
    if originator.name != "originator_key":
        raise UnsupportedAlgorithm("static-static key agreement is not supported")
    point: bytes = originator.chosen["public_key"].native
    our_key = agent.certificate.public_key()
    if not isinstance(our_key, ec.EllipticCurvePublicKey):
        raise DecryptionFailed("cannot decrypt this message")
    try:
        peer = ec.EllipticCurvePublicKey.from_encoded_point(our_key.curve, point)
        shared = agent.ecdh(peer)
    except ValueError:
        raise DecryptionFailed("cannot decrypt this message") from None
    ukm_value = kari["ukm"]
    ukm = None if isinstance(ukm_value, core.Void) else ukm_value.native
    kek = _x963(shared, kdf_hash, wrap_der, wrap_size, ukm)
    try:
        cek = keywrap.aes_key_unwrap(kek, rek["encrypted_key"].native)
    except keywrap.InvalidUnwrap:
        raise DecryptionFailed("cannot decrypt this message") from None
    if len(cek) != key_length:
        raise DecryptionFailed("cannot decrypt this message")
    return cek


# the native decryption takes the ciphertext as bytes: a view of the message is copied for
# it up to this size; a larger message is decrypted in place by cryptography (its peak
# memory is the bench's large_25m_rss_ratio, tests/unit/smime/test_smime_open_memory.py)
NATIVE_UP_TO = 1024 * 1024


def _decrypt_gcm(cek: bytes, params_der: bytes | None, ciphertext: bytes | memoryview,
                 tag: bytes) -> bytes:
    if params_der is None:
        raise MalformedMessage("AES-GCM without parameters")
    if native is not None and len(ciphertext) <= NATIVE_UP_TO:  # native/src/decrypt.rs
        plain: bytes | None = native.decrypt_content("gcm", cek, params_der, bytes(ciphertext),
                                                     tag)
        if plain is not None:  # the usual shapes; anything else read here
            return plain
    params = asn1.parse(_GCMParameters, params_der, "AES-GCM parameters")
    nonce: bytes = params["aes_nonce"].native
    icv_len: int = params["aes_icv_len"].native
    if icv_len != len(tag) or not 12 <= icv_len <= 16 or not nonce:
        raise MalformedMessage("AES-GCM tag length does not match its parameters")
    decryptor = Cipher(algorithms.AES(cek), modes.GCM(nonce, tag, min_tag_length=12)).decryptor()
    plain = decryptor.update(ciphertext)
    try:
        decryptor.finalize()  # verifies the tag: `plain` is returned only after it
    except InvalidTag:
        del plain
        raise DecryptionFailed("cannot decrypt this message") from None
    return plain


def _decrypt_cbc(alg_oid: str, cek: bytes, params_der: bytes | None,
                 ciphertext: bytes | memoryview) -> tuple[bytes, ...]:
    """The plaintext in one piece (native) or two (all but the last block, the unpadded
    last block): no copy of the whole plaintext."""
    if params_der is None:
        raise MalformedMessage("CBC cipher without an IV")
    if (native is not None and alg_oid != oids.DES_EDE3_CBC  # AES: native/src/decrypt.rs
            and len(ciphertext) <= NATIVE_UP_TO):
        plain: bytes | None = native.decrypt_content("cbc", cek, params_der, bytes(ciphertext),
                                                     b"")
        if plain is not None:
            return (plain,)
    iv = asn1.parse(core.OctetString, params_der, "IV").native
    block: Any = TripleDES(cek) if alg_oid == oids.DES_EDE3_CBC else algorithms.AES(cek)
    size = block.block_size // 8
    if len(iv) != size or not ciphertext or len(ciphertext) % size:
        raise DecryptionFailed("cannot decrypt this message")
    decryptor = Cipher(block, modes.CBC(iv)).decryptor()
    view = memoryview(ciphertext)
    body = decryptor.update(view[:-size])
    last = decryptor.update(view[-size:]) + decryptor.finalize()
    # PKCS#7 padding (RFC 5652 6.3): every failure is the same generic error.
    pad = last[-1]
    if not 1 <= pad <= size or last[-pad:] != bytes((pad,)) * pad:
        raise DecryptionFailed("cannot decrypt this message")
    return body, last[:-pad]


class _GCMParameters(core.Sequence):  # type: ignore[misc]
    """GCMParameters ::= SEQUENCE { aes-nonce OCTET STRING, aes-ICVlen INTEGER DEFAULT 12 }
    (RFC 5084 section 3.2): missing from asn1crypto 1.5.1 (notes/crypto.md rule 5)."""

    _fields = [  # noqa: RUF012
        ("aes_nonce", core.OctetString),
        ("aes_icv_len", core.Integer, {"default": 12}),
    ]


del keys  # imported for its side effect of registering key structures used by cms
