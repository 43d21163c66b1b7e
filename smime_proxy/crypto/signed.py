"""CMS SignedData (RFC 5652 section 5): build with a KeyAgent, verify with explicit rules.

Verification follows notes/crypto.md rules 3, 4, 7: signed attributes are read by OID; only
the signer's certificate is loaded into cryptography; eContent plus detached content, zero
SignerInfos, a missing or repeated contentType / messageDigest attribute, or any SignerInfo
that does not verify are all failures. Every parser exception becomes MalformedMessage.

When the native core is built (`smime_proxy.native`), a SignedData of the usual shape is
read by it (native/src/cms.rs) and its signers are checked here by the
same code through `crypto.signer_info.NativeSigner`; anything else, and every error, is
read by asn1crypto, the reference (`Asn1Signer`).

May import: errors, crypto.*, native, cryptography, asn1crypto (through crypto.asn1 only for
parsing).
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from asn1crypto import algos, cms, core
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.exceptions import UnsupportedAlgorithm as CryptographyUnsupported
from cryptography.hazmat.primitives.asymmetric import dsa, ec, padding, rsa

from smime_proxy.crypto import asn1, attributes, der, oids
from smime_proxy.crypto.keyagent import KeyAgent, hash_algorithm
from smime_proxy.crypto.signer_info import Asn1Signer, NativeSigner, load_certificate
from smime_proxy.errors import MalformedMessage, SignatureInvalid, UnsupportedAlgorithm
from smime_proxy.native import native

# What we announce in smimeCapabilities (RFC 8551 2.5.2), strongest first.
_CAPABILITIES = (
    der.algorithm(oids.AES_GCM_OID[32]),
    der.algorithm(oids.AES_CBC_OID[32]),
    der.algorithm(oids.AES_GCM_OID[16]),
    der.algorithm(oids.AES_CBC_OID[16]),
    der.algorithm(oids.RSAES_OAEP),
    der.algorithm(oids.ECDH_STD_SCHEME["sha256"], der.algorithm(oids.AES_WRAP_OID[32])),
)


def _digest(hash_name: str, data: bytes) -> bytes:
    return hashlib.new(hash_name, data).digest()


def issuer_and_serial(cert: x509.Certificate) -> bytes:
    """IssuerAndSerialNumber ::= SEQUENCE { issuer Name, serialNumber INTEGER }.

    RFC 5652 section 10.2.4.
    """
    return der.sequence(cert.issuer.public_bytes(), der.integer(cert.serial_number))


def _attribute(oid: str, *values: bytes) -> bytes:
    return der.sequence(der.oid(oid), der.set_of(values))


def build_signed_data(
    content: bytes | Sequence[bytes | memoryview],
    agent: KeyAgent,
    *,
    detached: bool,
    digest: str = "sha256",
    pss: bool = False,
    extra_certs: Sequence[x509.Certificate] = (),
    signing_time: dt.datetime | None = None,
) -> bytes:
    """DER ContentInfo(SignedData) over `content` signed by the agent's key.

    `content` may be given in pieces (hashed one after the other, never joined when the
    signature is detached).
    """
    from cryptography.hazmat.primitives.serialization import Encoding

    pieces = [content] if isinstance(content, bytes) else list(content)
    hasher = hashlib.new(digest)
    for piece in pieces:
        hasher.update(piece)
    content_digest = hasher.digest()

    cert = agent.certificate
    public_key = cert.public_key()
    digest_alg = der.algorithm(oids.DIGEST_OID[digest])
    if isinstance(public_key, rsa.RSAPublicKey):
        if pss:
            scheme = "pss"
            hash_alg = der.algorithm(oids.DIGEST_OID[digest])
            pss_params = der.sequence(
                der.explicit(0, hash_alg),
                der.explicit(1, der.algorithm(oids.MGF1, hash_alg)),
                der.explicit(2, der.integer(hash_algorithm(digest).digest_size)),
            )
            signature_alg = der.algorithm(oids.RSASSA_PSS, pss_params)
        else:
            scheme = "pkcs1"
            signature_alg = der.algorithm(oids.RSA_ENCRYPTION, der.null())
    elif isinstance(public_key, ec.EllipticCurvePublicKey):
        scheme = "ecdsa"
        signature_alg = der.algorithm(oids.ECDSA_OID[digest])
    else:
        raise UnsupportedAlgorithm("only RSA and EC keys can sign")

    attributes = [
        _attribute(oids.CONTENT_TYPE, der.oid(oids.DATA)),
        _attribute(oids.SIGNING_TIME, der.utc_or_generalized_time(signing_time or _utcnow())),
        _attribute(oids.MESSAGE_DIGEST, der.octet_string(content_digest)),
        _attribute(oids.SMIME_CAPABILITIES, der.sequence(*_CAPABILITIES)),
        # SMIMEEncryptionKeyPreference ::= CHOICE { issuerAndSerialNumber [0] IMPLICIT ... }
        _attribute(
            oids.ENCRYPTION_KEY_PREFERENCE,
            der.implicit(0, issuer_and_serial(cert), constructed=True),
        ),
    ]
    signed_attrs_set = der.set_of(attributes)  # the SET OF encoding is what gets signed
    signature = agent.sign_digest(_digest(digest, signed_attrs_set), digest, scheme)  # type: ignore[arg-type]
    signer_info = der.sequence(
        der.integer(1),
        issuer_and_serial(cert),
        digest_alg,
        der.implicit(0, signed_attrs_set, constructed=True),
        signature_alg,
        der.octet_string(signature),
    )
    encap = der.sequence(
        der.oid(oids.DATA),
        b"" if detached else der.explicit(0, der.octet_string(b"".join(pieces))),
    )
    certs = [cert, *[c for c in extra_certs if c != cert]]
    signed_data = der.sequence(
        der.integer(1),
        der.set_of([digest_alg]),
        encap,
        der.implicit(0, der.set_of(c.public_bytes(Encoding.DER) for c in certs), constructed=True),
        der.set_of([signer_info]),
    )
    return der.sequence(der.oid(oids.SIGNED_DATA), der.explicit(0, signed_data))


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


# --- verification ---------------------------------------------------------------------------

_SIGNED_ONLY = {
    oids.CONTENT_TYPE: "contentType",
    oids.MESSAGE_DIGEST: "messageDigest",
    oids.SIGNING_TIME: "signingTime",
}


@dataclass
class SignerCheck:
    """The outcome for one SignerInfo (before path validation)."""

    certificate: x509.Certificate | None
    signature_valid: bool
    problem: str | None
    digest: str | None = None
    signing_time: dt.datetime | None = None
    capabilities: list[str] = field(default_factory=list)
    # RFC 8551 2.5.3 SMIMEEncryptionKeyPreference: ("issuer-serial", (issuer DER, serial))
    # or ("key-id", subjectKeyIdentifier); advisory, None when absent or unreadable
    key_preference: tuple[str, Any] | None = None


@dataclass
class ParsedSignedData:
    content: bytes | None  # eContent when encapsulated (opaque), else None
    content_type: str
    signers: list[SignerCheck]
    certificates: list[x509.Certificate]  # every certificate that loads (intermediates)


@asn1.malformed_on_error("CMS signature")
def parse_signed_data(cms_der: bytes, detached_content: bytes | None) -> ParsedSignedData:
    """Parse a ContentInfo(SignedData) and check every SignerInfo's signature.

    Raises MalformedMessage for unparsable input and SignatureInvalid for structural rule
    violations that make the whole object unusable (no signers, content both ways or neither).
    Per-signer failures are reported in `signers`.
    """
    record = None if native is None else native.read_signed(cms_der)
    if record is not None:
        parsed = _parse_native(cms_der, record, detached_content)
        if parsed is not None:
            return parsed
    info = asn1.parse(cms.ContentInfo, cms_der, "CMS signature")
    if asn1.guarded("content type", lambda: info["content_type"].dotted) != oids.SIGNED_DATA:
        raise MalformedMessage("the CMS object is not SignedData")
    signed = info["content"]
    encap = signed["encap_content_info"]
    econtent_type: str = asn1.guarded("eContentType", lambda: encap["content_type"].dotted)
    econtent_value = encap["content"]
    econtent: bytes | None = None
    if not isinstance(econtent_value, core.Void) and econtent_value is not None:
        econtent = asn1.guarded("eContent", lambda: _octets(econtent_value))
    content = _covered_content(econtent, detached_content)

    signer_infos = list(signed["signer_infos"])
    if not signer_infos:
        raise SignatureInvalid("signature has no signers")
    loaded: list[x509.Certificate] = []
    certs_field = signed["certificates"]
    if not isinstance(certs_field, core.Void) and certs_field is not None:
        for choice in certs_field:
            if choice.name != "certificate":
                continue
            certificate = load_certificate(choice.chosen.dump())
            if certificate is not None:  # an odd one must not break the others (rule 4)
                loaded.append(certificate)
    checks = [_check_signer(Asn1Signer(si), content, econtent_type, loaded)
              for si in signer_infos]
    return ParsedSignedData(econtent, econtent_type, checks, loaded)


def _covered_content(econtent: bytes | None, detached_content: bytes | None) -> bytes:
    """What the signature covers: its eContent or the detached content, exactly one."""
    if econtent is not None and detached_content is not None:
        raise SignatureInvalid("signature carries content and is also detached from content")
    content = econtent if econtent is not None else detached_content
    if content is None:
        raise SignatureInvalid("signature covers no content")
    return content


def _parse_native(der: bytes, record: Any,
                  detached_content: bytes | None) -> ParsedSignedData | None:
    """`parse_signed_data` from native/src/lib.rs `read_signed`'s offsets into `der`; None
    for encapsulated content that is not id-data (asn1crypto reads it by its type)."""
    type_at, pieces, certificates, signers = record
    econtent_type = asn1.dotted_of(der[type_at[0] : type_at[1]])
    if pieces is not None and econtent_type != oids.DATA:
        return None
    econtent = None if pieces is None else b"".join(der[a:b] for a, b in pieces)
    content = _covered_content(econtent, detached_content)
    if not signers:
        raise SignatureInvalid("signature has no signers")
    loaded = [certificate for a, b in certificates
              if (certificate := load_certificate(der[a:b])) is not None]
    checks = [_check_signer(NativeSigner.of(der, signer), content, econtent_type, loaded)
              for signer in signers]
    return ParsedSignedData(econtent, econtent_type, checks, loaded)


def _octets(value: Any) -> bytes:
    if isinstance(value, core.ParsableOctetString | core.OctetString):
        data: bytes = (
            value.native if not isinstance(value, core.ParsableOctetString) else value.__bytes__()
        )
        return data
    raise MalformedMessage("eContent is not an OCTET STRING")


def _check_signer(si: Asn1Signer | NativeSigner, content: bytes, econtent_type: str,
                  bundled: list[x509.Certificate]) -> SignerCheck:
    try:
        return _check_signer_inner(si, content, econtent_type, bundled)
    except MalformedMessage as exc:
        return SignerCheck(None, False, str(exc))
    except asn1.PARSER_ERRORS:
        return SignerCheck(None, False, "malformed signer information")


def _check_signer_inner(
    si: Asn1Signer | NativeSigner, content: bytes, econtent_type: str,
    bundled: list[x509.Certificate]
) -> SignerCheck:
    cert = si.certificate(bundled)
    if cert is None:
        return SignerCheck(None, False, "signer certificate not included or not readable")
    digest_oid = si.digest_oid()
    digest = oids.DIGESTS.get(digest_oid)
    if digest is None:
        return SignerCheck(cert, False, f"unsupported digest algorithm {digest_oid}")
    content_digest = _digest(digest, content)

    unsigned = si.unsigned_attributes()
    for oid, name in _SIGNED_ONLY.items():
        if unsigned is not None and attributes.values_of(unsigned, oid):
            # RFC 5652 11.1-11.3: these MUST NOT be unsigned attributes
            return SignerCheck(cert, False, f"{name} must be a signed attribute", digest)
    contents = si.signed_contents()
    signed = None if contents is None else attributes.read_attributes(contents)
    signing_time: dt.datetime | None = None
    capabilities: list[str] = []
    if signed is None or contents is None:
        data_to_verify = content
    else:
        problem, signing_time, capabilities = _check_attributes(
            signed, econtent_type, content_digest
        )
        if problem:
            return SignerCheck(cert, False, problem, digest)
        # RFC 5652 5.4: the signature covers the DER of the SET OF, not the [0] tag.
        data_to_verify = b"\x31" + der.length(len(contents)) + contents

    signature = si.signature()
    sig_oid = si.signature_oid()
    try:
        _verify_signature(cert, sig_oid, si.signature_parameters, digest, signature,
                          data_to_verify)
    except InvalidSignature:
        return SignerCheck(cert, False, "signature does not match the content", digest)
    except CryptographyUnsupported:
        return SignerCheck(cert, False, "unsupported signature algorithm or key", digest)
    except UnsupportedAlgorithm as exc:
        return SignerCheck(cert, False, str(exc), digest)
    preference = None if signed is None else _key_preference(signed)
    return SignerCheck(cert, True, None, digest, signing_time, capabilities, preference)


def _key_preference(attrs: list[attributes.Attribute]) -> tuple[str, Any] | None:
    """The certificate the signer wants mail encrypted to (RFC 8551 2.5.3), as it names it;
    None when the attribute is absent, repeated or unreadable (it is advisory)."""
    values = attributes.values_of(attrs, oids.ENCRYPTION_KEY_PREFERENCE)
    if len(values) != 1 or len(values[0]) != 1:
        return None
    return _preference_of(values[0][0])


@functools.lru_cache(maxsize=256)
def _preference_of(value: bytes) -> tuple[str, Any] | None:
    """One SMIMEEncryptionKeyPreference value, read. Kept by value (immutable results): a
    signer sends the same one with every message, and asn1crypto took 40 µs to read it."""
    try:
        preference = cms.SMIMEEncryptionKeyPreference.load(value)
        chosen = preference.chosen
        if preference.name == "issuer_and_serial_number":
            return "issuer-serial", (chosen["issuer"].dump(), chosen["serial_number"].native)
        if preference.name == "recipientKeyId":
            return "key-id", chosen["subject_key_identifier"].native
    except (ValueError, TypeError, KeyError):
        return None
    return None


def _check_attributes(
    attrs: list[attributes.Attribute], econtent_type: str, content_digest: bytes
) -> tuple[str | None, dt.datetime | None, list[str]]:
    content_types = attributes.values_of(attrs, oids.CONTENT_TYPE)
    if len(content_types) != 1 or len(content_types[0]) != 1:
        return "signed attributes must hold exactly one contentType", None, []
    declared = attributes.oid_value(content_types[0][0], "contentType attribute")
    if declared != econtent_type:
        return "contentType attribute does not match the content", None, []
    digests = attributes.values_of(attrs, oids.MESSAGE_DIGEST)
    if len(digests) != 1 or len(digests[0]) != 1:
        return "signed attributes must hold exactly one messageDigest", None, []
    claimed = attributes.octets_value(digests[0][0], "messageDigest attribute")
    if claimed != content_digest:
        return "message digest does not match the content", None, []
    signing_time: dt.datetime | None = None
    times = attributes.values_of(attrs, oids.SIGNING_TIME)
    if times:
        if len(times) != 1 or len(times[0]) != 1:
            return "signed attributes must hold at most one signingTime", None, []
        try:
            signing_time = der_time(times[0][0])
        except (ValueError, TypeError, KeyError) as exc:
            return f"malformed signingTime attribute ({type(exc).__name__})", None, []
        if not isinstance(signing_time, dt.datetime):
            return "malformed signingTime attribute", None, []
    capabilities: list[str] = []
    for values in attributes.values_of(attrs, oids.SMIME_CAPABILITIES):
        for value in values:
            try:
                capabilities.extend(attributes.capability_oids(value))
            except MalformedMessage:
                break  # capabilities are advisory: ignore a malformed list
    return None, signing_time, capabilities


_DER_TIME = re.compile(rb"\x17\x0d([0-9]{12})Z|\x18\x0f([0-9]{14})Z")


def der_time(value: bytes) -> Any:
    """A Time value (RFC 5652 11.3: UTCTime or GeneralizedTime) as asn1crypto reads it. The
    DER form every signer writes is read here (asn1crypto took 18 µs a message); any other
    form, and any value that is not a date, by asn1crypto."""
    match = _DER_TIME.fullmatch(value)
    if match is not None:
        digits = match[1] or match[2]
        year, rest = ((int(digits[:2]), digits[2:]) if match[1] else
                      (int(digits[:4]), digits[4:]))
        if match[1]:
            year += 2000 if year < 50 else 1900  # RFC 5280 4.1.2.5.1
        try:
            return dt.datetime(year, int(rest[:2]), int(rest[2:4]), int(rest[4:6]),
                               int(rest[6:8]), int(rest[8:10]), tzinfo=dt.UTC)
        except ValueError:
            pass  # not a date: asn1crypto says what it makes of it
    return cms.Time.load(value).native


def _verify_signature(
    cert: x509.Certificate,
    sig_oid: str,
    parameters: Callable[[], bytes | None],  # read only for RSA-PSS
    digest: str,
    signature: bytes,
    data: bytes,
) -> None:
    key = cert.public_key()
    if isinstance(key, rsa.RSAPublicKey):
        if sig_oid == oids.RSASSA_PSS:
            pss_hash, salt = _pss_parameters(parameters())
            key.verify(
                signature,
                data,
                padding.PSS(mgf=padding.MGF1(hash_algorithm(pss_hash)), salt_length=salt),
                hash_algorithm(pss_hash),
            )
            return
        if sig_oid == oids.RSA_ENCRYPTION or sig_oid in oids.RSA_WITH:
            sig_hash = oids.RSA_WITH.get(sig_oid, digest)
            key.verify(signature, data, padding.PKCS1v15(), hash_algorithm(sig_hash))
            return
    elif isinstance(key, ec.EllipticCurvePublicKey):
        if sig_oid in oids.ECDSA_WITH or sig_oid == oids.EC_PUBLIC_KEY:
            sig_hash = oids.ECDSA_WITH.get(sig_oid, digest)
            key.verify(signature, data, ec.ECDSA(hash_algorithm(sig_hash)))
            return
    elif isinstance(key, dsa.DSAPublicKey) and sig_oid in oids.DSA_FAMILY:
        # verify-only, for old mail (RFC 4134 examples); we never sign with DSA
        sig_hash = oids.DSA_FAMILY[sig_oid] or digest
        key.verify(signature, data, hash_algorithm(sig_hash))
        return
    raise UnsupportedAlgorithm(f"unsupported signature algorithm {sig_oid} for this key")


def _pss_parameters(params: bytes | None) -> tuple[str, int]:
    """RSASSA-PSS-params (RFC 4055 section 3.1): hash, MGF1 hash (must match), salt length."""
    if params is None:
        return "sha1", 20

    parsed = asn1.parse(algos.RSASSAPSSParams, params, "RSA-PSS parameters")
    hash_name = oids.DIGESTS.get(parsed["hash_algorithm"]["algorithm"].dotted)
    mgf_hash = oids.DIGESTS.get(parsed["mask_gen_algorithm"]["parameters"]["algorithm"].dotted)
    if hash_name is None or mgf_hash != hash_name:
        raise UnsupportedAlgorithm("unsupported RSA-PSS parameters")
    salt: int = parsed["salt_length"].native
    return hash_name, salt
