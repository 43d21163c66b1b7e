"""Certificate path validation for S/MIME signers (RFC 8550), over cryptography's verifier.

Explicit trust roots only (never the system store). End-entity policy: an rfc822Name-bearing
certificate whose EKU, if present, allows emailProtection (or anyExtendedKeyUsage); keyUsage,
if present, allows digitalSignature or nonRepudiation. CA policy: cryptography's WebPKI CA
defaults except EKU, which is optional but must allow emailProtection when present.

May import: errors, cryptography.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from cryptography import x509
from cryptography.x509 import verification
from cryptography.x509.oid import ExtendedKeyUsageOID

from smime_proxy.errors import ChainUntrusted

_EMAIL_EKUS = {ExtendedKeyUsageOID.EMAIL_PROTECTION, ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE}
_MAX_DEPTH = 8


def _eku_allows_email(
    _policy: verification.Policy, _cert: x509.Certificate, eku: x509.ExtendedKeyUsage | None
) -> None:
    if eku is not None and not _EMAIL_EKUS.intersection(eku):
        raise ValueError("extended key usage does not allow emailProtection")


def _ee_key_usage(
    _policy: verification.Policy, _cert: x509.Certificate, usage: x509.KeyUsage | None
) -> None:
    if usage is not None and not (usage.digital_signature or usage.content_commitment):
        raise ValueError("key usage does not allow digital signatures")


def _ca_basic_constraints(
    _policy: verification.Policy, _cert: x509.Certificate, bc: x509.BasicConstraints | None
) -> None:
    if bc is None or not bc.ca:
        raise ValueError("issuer is not a CA")


def _ca_key_usage(
    _policy: verification.Policy, _cert: x509.Certificate, usage: x509.KeyUsage | None
) -> None:
    if usage is not None and not usage.key_cert_sign:
        raise ValueError("issuer key usage does not allow certificate signing")


def _ca_policy() -> verification.ExtensionPolicy:
    # S/MIME CAs in the wild (NSS, RFC 4134, corporate CAs) often mark basicConstraints
    # non-critical, which the WebPKI defaults refuse: require CA:TRUE with any criticality.
    return (
        verification.ExtensionPolicy.permit_all()
        .require_present(
            x509.BasicConstraints, verification.Criticality.AGNOSTIC, _ca_basic_constraints
        )
        .may_be_present(x509.KeyUsage, verification.Criticality.AGNOSTIC, _ca_key_usage)
        .may_be_present(x509.ExtendedKeyUsage, verification.Criticality.AGNOSTIC, _eku_allows_email)
    )


def _ee_policy() -> verification.ExtensionPolicy:
    return (
        verification.ExtensionPolicy.permit_all()
        .may_be_present(x509.ExtendedKeyUsage, verification.Criticality.AGNOSTIC, _eku_allows_email)
        .may_be_present(x509.KeyUsage, verification.Criticality.AGNOSTIC, _ee_key_usage)
    )


def validate_signer_chain(
    signer: x509.Certificate,
    intermediates: Sequence[x509.Certificate],
    trust_roots: Sequence[x509.Certificate],
    now: dt.datetime,
) -> list[x509.Certificate]:
    """Return the validated chain (signer first, root last) or raise ChainUntrusted."""
    if not trust_roots:
        raise ChainUntrusted("no trust roots configured")
    try:
        verifier = (
            verification.PolicyBuilder()
            .store(verification.Store(list(trust_roots)))
            .time(now)
            .max_chain_depth(_MAX_DEPTH)
            .extension_policies(ca_policy=_ca_policy(), ee_policy=_ee_policy())
            .build_client_verifier()
        )
        verified = verifier.verify(signer, list(intermediates))
    except verification.VerificationError as exc:
        raise ChainUntrusted(_describe(signer, now, str(exc))) from None
    except ValueError as exc:  # unsupported key or signature algorithm in the chain
        raise ChainUntrusted(f"certificate chain not usable: {exc}") from None
    return list(verified.chain)


def _describe(signer: x509.Certificate, now: dt.datetime, detail: str) -> str:
    if now < signer.not_valid_before_utc:
        return "signer certificate is not yet valid"
    if now > signer.not_valid_after_utc:
        return "signer certificate has expired"
    # cryptography's messages are technical (and quote whole certificates): keep the reason.
    reason = detail.splitlines()[0] if detail else "unknown reason"
    if "ValueError: " in reason:
        reason = reason.split("ValueError: ", 1)[1].split(" (encountered", 1)[0]
    elif reason.startswith("validation failed: "):
        reason = reason.removeprefix("validation failed: ")
    return "certificate chain not trusted: " + reason[:160]
