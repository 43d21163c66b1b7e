"""`decide(policy, sender, recipients, headers) -> Decision`: what to do with one message.

Precedence, weakest first: built-in defaults < `global` < `domains` (and rules whose sender
pattern names a domain) < `users` (and rules naming sender addresses) < the message's own
`X-SMIME-Sign` / `X-SMIME-Encrypt` headers and subject tags. Within one level, a rule that
also matches a recipient is more specific than one that does not; of equally specific rules
the later in the file wins, except for `sign` and `encrypt`, where the stricter value wins
(a rule can add protection for some recipients but never remove it for others).

A header chooses within what the rules allow (DESIGN: "a header cannot switch off required"):

=================  ==================  ===========================================
rule says          header `yes`        header `no`
=================  ==================  ===========================================
never              message refused     never
if-unlocked /      required            never
if-possible
required           required            required (the header is ignored; said so)
=================  ==================  ===========================================

A header asking for protection the rule forbids refuses the message: the user asked for
something we will not do, and sending it unprotected would mislead them.

Pure: no I/O, no clock.

May import: policy.model, stdlib.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from smime_proxy.policy.model import (
    DEFAULTS,
    CipherName,
    EncryptMode,
    Fallback,
    HeaderProtection,
    Pattern,
    Policy,
    SignMode,
)

_STRICT_SIGN: dict[str, int] = {"never": 0, "if-unlocked": 1, "required": 2}
_STRICT_ENCRYPT: dict[str, int] = {"never": 0, "if-possible": 1, "required": 2}
SIGN_HEADER = "x-smime-sign"
ENCRYPT_HEADER = "x-smime-encrypt"


@dataclass(frozen=True)
class Decision:
    """The effective settings for one message, and why."""

    sign: SignMode
    encrypt: EncryptMode
    ciphers: tuple[CipherName, ...]
    fallback: Fallback
    header_protection: HeaderProtection
    hide_subject: bool
    subject_tags: tuple[tuple[str, str], ...]
    gcm_recipients: tuple[str, ...]
    refusal: str | None = None
    """Set when the message must be refused (a header asks for what the policy forbids, or
    a malformed X-SMIME header): the readable reason."""
    reasons: tuple[str, ...] = field(default=())

    def supports_gcm(self, address: str) -> bool:
        """Whether the policy declares that `address` reads AES-GCM (AuthEnvelopedData)."""
        return any(Pattern(p).matches(address) for p in self.gcm_recipients)

    def explain(self) -> str:
        lines = [f"sign: {self.sign}", f"encrypt: {self.encrypt}",
                 f"ciphers: {', '.join(self.ciphers)}",
                 f"fallback (encryption impossible): {self.fallback}",
                 f"header protection: {self.header_protection}",
                 f"hide subject: {'yes' if self.hide_subject else 'no'}"]
        if self.refusal:
            lines.append(f"REFUSED: {self.refusal}")
        lines.append("because:")
        lines.extend(f"  - {reason}" for reason in self.reasons)
        return "\n".join(lines) + "\n"


def store_encrypted(policy: Policy, address: str) -> tuple[bool, str]:
    """Whether incoming plain mail to `address` is stored encrypted to its owner (the LMTP
    filter), and which rule said so. Rules are keyed by the mailbox owner's address here:
    `users.bob@example.test: {store_encrypted: yes}` is about mail *to* bob."""
    address = address.lower()
    value, origin = bool(DEFAULTS.store_encrypted), "built-in default"
    for rule in policy.matching(address, [address]):
        if rule.settings.store_encrypted is not None:
            value, origin = rule.settings.store_encrypted, rule.where
    return value, origin


def header_requests(headers: Sequence[tuple[str, str]]) -> dict[str, list[str]]:
    """The X-SMIME-Sign/-Encrypt values of a header list (lower-cased, stripped)."""
    out: dict[str, list[str]] = {SIGN_HEADER: [], ENCRYPT_HEADER: []}
    for name, value in headers:
        key = name.strip().lower()
        if key in out:
            out[key].append(value.strip().lower())
    return out


def find_subject_tags(subject: str, tags: Sequence[tuple[str, str]]) -> tuple[str, list[str]]:
    """(subject with every tag removed, names of the tags found: "sign"/"encrypt")."""
    found: list[str] = []
    for name, tag in tags:
        lowered = subject.lower()
        index = lowered.find(tag.lower())
        if index < 0:
            continue
        found.append(name)
        while index >= 0:
            subject = subject[:index] + subject[index + len(tag):]
            lowered = subject.lower()
            index = lowered.find(tag.lower())
    return " ".join(subject.split()) if found else subject, found


def decide(
    policy: Policy,
    sender: str,
    recipients: Sequence[str],
    headers: Sequence[tuple[str, str]] = (),
) -> Decision:
    """The decision for a message from `sender` to `recipients` (envelope and To/Cc) with
    the given header fields ((name, unfolded value) pairs; Subject is read for tags)."""
    sender = sender.lower()
    recipients = [r.lower() for r in recipients]
    reasons: list[str] = []
    values: dict[str, object] = {name: value for name, value in DEFAULTS.items()}
    origin: dict[str, str] = {name: "built-in default" for name in values}
    level_sign: tuple[int, str] | None = None
    level_encrypt: tuple[int, str] | None = None
    current_key: tuple[str, bool] | None = None
    for rule in policy.matching(sender, recipients):
        key = (rule.level, bool(rule.recipients))
        if key != current_key:  # a more specific group: its values override
            current_key = key
            level_sign = level_encrypt = None
        for name, value in rule.settings.items():
            if name == "sign":
                assert isinstance(value, str)
                if level_sign is not None and _STRICT_SIGN[value] < level_sign[0]:
                    continue  # an equally specific rule already asks for more
                level_sign = (_STRICT_SIGN[value], rule.where)
            elif name == "encrypt":
                assert isinstance(value, str)
                if level_encrypt is not None and _STRICT_ENCRYPT[value] < level_encrypt[0]:
                    continue
                level_encrypt = (_STRICT_ENCRYPT[value], rule.where)
            values[name] = value
            origin[name] = rule.where
    sign: SignMode = values["sign"]  # type: ignore[assignment]
    encrypt: EncryptMode = values["encrypt"]  # type: ignore[assignment]
    reasons.append(f"sign: {sign} (from {origin['sign']})")
    reasons.append(f"encrypt: {encrypt} (from {origin['encrypt']})")
    if values["smime"] is False:  # S/MIME turned off for this account or domain
        sign, encrypt = "never", "never"
        reasons.append(f"smime: off (from {origin['smime']}): neither signed nor encrypted")
    for name in ("ciphers", "fallback", "header_protection", "hide_subject", "subject_tags"):
        if origin[name] != "built-in default":
            reasons.append(f"{name} from {origin[name]}")
    tags: tuple[tuple[str, str], ...] = values["subject_tags"]  # type: ignore[assignment]

    requests = header_requests(headers)
    subject = next((v for n, v in headers if n.strip().lower() == "subject"), "")
    _, tagged = find_subject_tags(subject, tags)
    refusal: str | None = None
    for what, header, tag_name in (("sign", SIGN_HEADER, "sign"),
                                   ("encrypt", ENCRYPT_HEADER, "encrypt")):
        asked = set(requests[header])
        source = f"header X-SMIME-{what.capitalize()}"
        if tag_name in tagged:
            asked.add("yes")
            source = f"subject tag {dict(tags)[tag_name]!r}" if not requests[header] \
                else f"{source} and subject tag"
        if not asked:
            continue
        bad = asked - {"yes", "no"}
        if bad or len(asked) > 1:
            refusal = refusal or (f"{source}: expected one value, yes or no" if not bad
                                  else f"{source}: expected yes or no")
            reasons.append(f"{source}: unusable value, message refused")
            continue
        wanted = asked.pop()
        current = sign if what == "sign" else encrypt
        if wanted == "yes":
            if current == "never":
                refusal = refusal or (
                    f"{source} asks to {what}, but S/MIME is turned off for this sender"
                    if values["smime"] is False else
                    f"{source} asks to {what}, but the policy says {what}: never for this "
                    "sender")
                reasons.append(f"{source}: yes, but policy {what}: never: message refused")
                continue
            if current != "required":
                reasons.append(f"{source}: yes -> {what}: required")
            else:
                reasons.append(f"{source}: yes (already required)")
            new = "required"
        else:
            if current == "required":
                reasons.append(f"{source}: no is ignored: the policy requires {what}")
                continue
            reasons.append(f"{source}: no -> {what}: never")
            new = "never"
        if what == "sign":
            sign = new  # type: ignore[assignment]
        else:
            encrypt = new  # type: ignore[assignment]
    fallback: Fallback = values["fallback"]  # type: ignore[assignment]
    if fallback == "signed" and sign == "never" and encrypt == "if-possible":
        fallback = "plain"
    return Decision(
        sign=sign,
        encrypt=encrypt,
        ciphers=values["ciphers"],  # type: ignore[arg-type]
        fallback=fallback,
        header_protection=values["header_protection"],  # type: ignore[arg-type]
        hide_subject=bool(values["hide_subject"]),
        subject_tags=tags,
        gcm_recipients=values["gcm_recipients"],  # type: ignore[arg-type]
        refusal=refusal,
        reasons=tuple(reasons),
    )
