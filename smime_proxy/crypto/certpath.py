"""Certificate path validation for S/MIME signers (RFC 8550), over cryptography's verifier.

Explicit trust roots only (never the system store). End-entity policy: an rfc822Name-bearing
certificate whose EKU, if present, allows emailProtection (or anyExtendedKeyUsage); keyUsage,
if present, allows digitalSignature or nonRepudiation. CA policy: cryptography's WebPKI CA
defaults except EKU, which is optional but must allow emailProtection when present.

May import: errors, cryptography, stdlib.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections import OrderedDict
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


class _ValidatedChains:
    """Chains validated already, by their inputs, with the window in which they hold.

    A correspondent's every message brings the same certificates: their chain is built and
    checked once (cryptography's verifier cost a tenth of opening a signed message), then
    reused while `now` is inside every certificate's validity period, the only check of
    path validation that depends on the time (RFC 5280 6.1.3 (a)(2)). A failure is not kept.
    """

    def __init__(self, size: int = 512) -> None:
        self.size = size
        self.chains: OrderedDict[object, tuple[list[x509.Certificate], dt.datetime,
                                               dt.datetime, object]] = OrderedDict()
        self.lock = threading.Lock()

    def get(self, key: object, now: dt.datetime) -> list[x509.Certificate] | None:
        with self.lock:
            found = self.chains.get(key)
            if found is None or not found[1] <= now <= found[2]:
                return None
            self.chains.move_to_end(key)
            return list(found[0])

    def put(self, key: object, chain: list[x509.Certificate], inputs: object) -> None:
        """`inputs`: the objects whose identities `key` holds, kept with the chain so that
        none of those identities can be another object's while the entry lives."""
        start = max(certificate.not_valid_before_utc for certificate in chain)
        end = min(certificate.not_valid_after_utc for certificate in chain)
        with self.lock:
            self.chains[key] = (list(chain), start, end, inputs)
            self.chains.move_to_end(key)
            while len(self.chains) > self.size:
                self.chains.popitem(last=False)


_VALIDATED = _ValidatedChains()


def validate_signer_chain(
    signer: x509.Certificate,
    intermediates: Sequence[x509.Certificate],
    trust_roots: Sequence[x509.Certificate],
    now: dt.datetime,
) -> list[x509.Certificate]:
    """Return the validated chain (signer first, root last) or raise ChainUntrusted."""
    if not trust_roots:
        raise ChainUntrusted("no trust roots configured")
    inputs = (signer, tuple(intermediates), tuple(trust_roots))
    # by identity: a certificate's hash is computed over its DER at each call, every trust
    # root's at every message (the entry keeps `inputs` alive: no id can be reused)
    key = (id(signer), tuple(map(id, inputs[1])), tuple(map(id, inputs[2])))
    known = _VALIDATED.get(key, now)
    if known is not None:
        return known
    chain = _validate(signer, intermediates, trust_roots, now)
    _VALIDATED.put(key, chain, inputs)
    return chain


def _validate(
    signer: x509.Certificate,
    intermediates: Sequence[x509.Certificate],
    trust_roots: Sequence[x509.Certificate],
    now: dt.datetime,
) -> list[x509.Certificate]:
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
