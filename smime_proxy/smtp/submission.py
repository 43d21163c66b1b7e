"""The submission core: what one message becomes before it is relayed (pure logic).

`plan_submission(...)` takes the received message, the envelope and the authenticated user,
asks the policy (`policy.decide`) and the key ports, and returns a `Plan`: one or more
`Copy`s (envelope recipients + the exact bytes to relay), or raises `SubmissionRefused` with
the SMTP reply the client must get. It never touches a socket and never awaits; the CPU work
(signing, encrypting) is done here, so the shell runs it in a worker thread.

What it does, in order:

1. X-SMIME-* header fields are removed (all of them); the policy's subject tags are removed
   from the Subject. Nothing else in the message is changed when no S/MIME is applied
   (pass-through keeps every other byte, the Bcc field included: Postfix's cleanup removes
   it, as it does for every submission).
2. `decide()`; a refusal -> `550 5.7.1`.
3. Encryption (`encrypt: if-possible|required`): to every envelope recipient and every To/Cc
   address, and to the sender's own certificate. Missing or unusable certificates:
   `required` -> `550 5.7.1 ... no usable S/MIME certificate for: a@x, b@y`; `if-possible` ->
   the policy's `fallback` (send signed-only, or as is). Cipher per copy (DESIGN 2):
   AES-256-GCM only when every recipient of the copy is known to read it, else the next
   cipher of the policy's preference list.
4. Signing (`sign: if-unlocked|required`) needs the unlocked key: locked and required ->
   `451 4.7.0` naming the unlock URL (the client keeps the message and retries);
   `if-unlocked` -> unsigned. Sign first, then encrypt (one signature for every copy).
5. Header protection: the whole header (minus Bcc and X-SMIME-*) travels inside.
   `injected` (the default): RFC 9788 Injected Headers, the fields first in the signed or
   encrypted entity, marked `hp="clear"` or `hp="cipher"`; a reader sees one ordinary
   message. `wrapped`: RFC 8551 3.1 message/rfc822 wrapping (readers that do not unwrap
   show a forwarded-message attachment). Either way, when encrypting, outside stay only
   From, To, Cc, Date, Message-ID, Subject, Reply-To, In-Reply-To, References, Sender (the
   Subject replaced by "[...]", or "..." when wrapped, with `hide_subject`).
6. A message the client already signed or encrypted (S/MIME or PGP/MIME) is relayed as it
   is, whatever the policy says; only when the policy requires encryption and the message
   is only signed is it encrypted, the client's signature kept inside (no header
   protection then: the signed entity is not touched).
7. Bcc privacy (DESIGN 9): envelope recipients not named in To/Cc get their own copy,
   encrypted to them (and the sender) only; the To/Cc copy names no Bcc recipient, neither
   in a header nor as a RecipientInfo. Signed-only and plain messages are one copy.

The sender's Sent copy is not SMTP: mail clients store it by IMAP APPEND, which this module
never sees. No extra copy is sent to the sender.

May import: crypto, errors, keystore, mime, policy, smime, cryptography, stdlib.
"""

from __future__ import annotations

import email.utils
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Protocol

from cryptography import x509

from smime_proxy.crypto.keyagent import KeyAgent
from smime_proxy.errors import (
    InputError,
    KeyLocked,
    MalformedMessage,
    NoRecipientCertificate,
    NoSuchKey,
    SmimeProxyError,
)
from smime_proxy.keystore.certs import normalize_address
from smime_proxy.mime.entity import HeaderField, is_pkcs7_mime, parse_entity
from smime_proxy.mime.identity import one_address
from smime_proxy.policy import Decision, Policy, decide, find_subject_tags
from smime_proxy.smime import Cipher, Recipient, encrypt_message, sign_message

MAX_HEADER_BYTES = 102_400
OUTER_FIELDS = ("from", "to", "cc", "date", "message-id", "subject", "reply-to",
                "in-reply-to", "references", "sender")


@dataclass(frozen=True)
class Reply:
    """An SMTP reply: code, enhanced status code, text (one line, safe to log)."""

    code: int
    status: str
    text: str

    def line(self) -> str:
        return f"{self.code} {self.status} {self.text}"


class SubmissionRefused(SmimeProxyError):
    """The message is not relayed; `reply` is what the client gets."""

    def __init__(self, code: int, status: str, text: str) -> None:
        self.reply = Reply(code, status, text)
        super().__init__(self.reply.line())


class Keys(Protocol):
    """What the core needs from the key store and the address book."""

    def may_sign_as(self, user: str, address: str | None) -> bool:
        """Whether `user` may sign mail whose From is `address` (one of their addresses)."""

    def signer(self, user: str) -> KeyAgent:
        """The unlocked key; raises KeyLocked, or NoSuchKey when the user has none."""

    def own_certificate(self, user: str) -> x509.Certificate | None:
        """The user's own certificate (no unlock needed), None if the user has no key."""

    def recipient_certificate(self, user: str, address: str) -> x509.Certificate:
        """The best certificate to encrypt to `address`; raises NoRecipientCertificate."""

    def reads_gcm(self, user: str, address: str, certificate: x509.Certificate) -> bool:
        """Whether that recipient announced AES-256-GCM (smimeCapabilities of their signed
        mail, kept in the user's address book)."""

    def encryption_method(self, user: str) -> str | None:
        """The cipher the user chose on the Secure Mail page, None for the policy's order."""


@dataclass(frozen=True)
class Copy:
    """One upstream transaction: these envelope recipients get exactly `message`."""

    recipients: tuple[str, ...]
    message: bytes = field(repr=False)
    cipher: str | None = None


@dataclass(frozen=True)
class Plan:
    copies: tuple[Copy, ...]
    signed: bool
    encrypted: bool
    decision: Decision
    reasons: tuple[str, ...]

    @property
    def passthrough(self) -> bool:
        return not (self.signed or self.encrypted)


def plan_submission(
    message: bytes,
    *,
    user: str,
    sender: str,
    recipients: Sequence[str],
    policy: Policy,
    keys: Keys,
    now: datetime,
    unlock_url: str,
) -> Plan:
    """Decide and transform one message. Raises `SubmissionRefused`."""
    try:
        entity = parse_entity(message)
    except MalformedMessage:
        raise SubmissionRefused(552, "5.3.4", "message header too large") from None
    if entity.header_end > MAX_HEADER_BYTES:
        raise SubmissionRefused(552, "5.3.4",
                                f"message header larger than {MAX_HEADER_BYTES} bytes")
    fields = list(entity.fields)
    content_type = entity.content_type()
    pairs = [(f.name, _text(f.value())) for f in fields]
    to_cc = _addresses([v for n, v in pairs if n in ("to", "cc")])
    envelope = [r.lower() for r in recipients]
    decision = decide(policy, sender, list(dict.fromkeys(envelope + to_cc)), pairs)
    if decision.refusal:
        raise SubmissionRefused(550, "5.7.1", _one_line(decision.refusal))
    reasons = list(decision.reasons)

    # 1. remove X-SMIME-* fields and subject tags (only these bytes change)
    cleaned, changed = _clean_header(entity.data[: entity.header_end], fields, decision)
    base = b"".join([cleaned, memoryview(entity.data)[entity.header_end:]]) if changed \
        else message
    del entity

    # 1b. a message the client protected itself: relayed as it is, unless the policy
    # requires encryption and it is only signed (then encrypted, the signature kept)
    client = _client_protection(content_type)
    if client == "encrypted" or (client == "signed" and decision.encrypt != "required"):
        reasons.append(f"already {client} by the client: relayed unchanged")
        return _one_copy(recipients, base, False, decision, reasons)

    # 2. encryption: who, with which certificates (and the user's Encryption Method first,
    # when the policy allows it: the policy's list stays the limit)
    bcc = [r for r in dict.fromkeys(envelope) if r not in to_cc]
    visible_envelope = [r for r in dict.fromkeys(envelope) if r in to_cc]
    encrypt = decision.encrypt != "never"
    method = keys.encryption_method(user) if encrypt else None
    if method is not None and method in decision.ciphers:
        decision = replace(decision, ciphers=(
            method, *(c for c in decision.ciphers if c != method)))
        reasons.append(f"ciphers: the sender's Encryption Method {method} first")
    elif method is not None:
        reasons.append(f"the sender's Encryption Method {method} is not among the policy's "
                       f"ciphers ({', '.join(decision.ciphers)}): the policy's order is used")
    certs: dict[str, x509.Certificate] = {}
    if encrypt:
        missing: list[str] = []
        unavailable = False  # a certificate directory could not be asked
        for address in dict.fromkeys(to_cc + envelope):
            try:
                certs[address] = keys.recipient_certificate(user, address)
            except NoRecipientCertificate as exc:
                missing.extend(exc.addresses or [address])
                unavailable = unavailable or exc.unavailable
        if missing:
            names = ", ".join(dict.fromkeys(missing))
            if decision.encrypt == "required" and unavailable:
                # the directory may hold them: a temporary refusal, the client retries
                raise SubmissionRefused(451, "4.4.3", _one_line(
                    f"encryption required, but the certificate directory cannot be "
                    f"reached to look up: {names}; try again later"))
            if decision.encrypt == "required":
                raise SubmissionRefused(550, "5.7.1",
                              _one_line(f"encryption required, but no usable S/MIME "
                                        f"certificate for: {names}"))
            encrypt = False
            down = " (the certificate directory could not be reached)" if unavailable else ""
            reasons.append(f"not encrypted: no usable certificate for {names}{down}; "
                           f"fallback {decision.fallback}")
    own_cert = keys.own_certificate(user) if encrypt else None

    # 3. signing
    agent: KeyAgent | None = None
    want_sign = decision.sign != "never" and client is None
    if client is not None:
        reasons.append("already signed by the client: encrypted, the signature kept")
    if (want_sign and decision.sign != "required" and not encrypt
            and decision.encrypt != "never" and decision.fallback == "plain"):
        want_sign = False
        reasons.append("not signed: encryption impossible and fallback is plain")
    from_values = [f.value() for f in fields if f.name == "from"]
    from_address = one_address(from_values[0])[0] if len(from_values) == 1 else None
    if want_sign and not keys.may_sign_as(user, from_address):
        shown = from_address or "this From"
        if decision.sign == "required":
            raise SubmissionRefused(553, "5.7.1", _one_line(
                f"signing required, but {shown} is not one of your addresses"))
        want_sign = False
        reasons.append(f"not signed: {shown} is not one of the sender's addresses")
    if want_sign:
        try:
            agent = keys.signer(user)
        except KeyLocked:
            if decision.sign == "required":
                raise SubmissionRefused(451, "4.7.0",
                              f"signing required but your S/MIME key is locked: unlock it at "
                              f"{unlock_url} and send again") from None
            reasons.append("not signed: the key is locked (sign: if-unlocked)")
        except (NoSuchKey, InputError):
            if decision.sign == "required":
                raise SubmissionRefused(550, "5.7.1",
                              "signing required but you have no S/MIME key") from None
            reasons.append("not signed: the sender has no S/MIME key")

    if agent is None and not encrypt:
        reasons.append("sent as is (no S/MIME)")
        return _one_copy(recipients, base, False, decision, reasons)

    # 4. header protection, then sign, then encrypt per copy
    payload = base
    del base, message  # keep one live copy at each step (a 25 MB message)
    protected = b""
    if client is not None:
        pass  # the client's signed entity is encrypted exactly as it is
    elif decision.header_protection == "wrapped":
        payload = _wrap(payload, hide_subject=encrypt and decision.hide_subject)
    elif decision.header_protection == "injected":
        payload, protected = _inject(payload, encrypted=encrypt,
                                     hide_subject=encrypt and decision.hide_subject)
    if agent is not None:
        payload = sign_message(payload, agent, now=now, protected=protected)
        protected = b""  # in the signed part, which is encrypted as a whole
    if not encrypt:
        return _one_copy(recipients, payload, agent is not None, decision, reasons)

    copies: list[Copy] = []
    groups: list[tuple[list[str], list[str]]] = []  # (envelope recipients, cert addresses)
    if visible_envelope:
        groups.append((visible_envelope, list(to_cc)))
    for address in bcc:
        groups.append(([address], [address]))
    original = {r.lower(): r for r in recipients}  # RCPT TO as the client wrote it
    # the last copy takes the payload's only reference, so that encrypt_message can free the
    # plaintext before its base64 (25 MB: peak 2.7x the message instead of 3.7x)
    holder = [payload]
    del payload
    def reads_gcm(address: str) -> bool:  # the policy's list, else what they announced
        return (decision.supports_gcm(address)
                or keys.reads_gcm(user, address, certs[address]))

    for index, (rcpts, cert_addresses) in enumerate(groups):
        targets: list[Recipient] = []
        seen: set[x509.Certificate] = set()
        for address in dict.fromkeys(cert_addresses):
            _add_target(targets, seen, Recipient(certs[address],
                                                 supports_gcm=reads_gcm(address)))
        if own_cert is not None:  # the sender (unless already a recipient)
            _add_target(targets, seen, Recipient(own_cert, supports_gcm=True))
        cipher = _cipher(decision, targets)
        if cipher is None:
            names = ", ".join(a for a in cert_addresses if not reads_gcm(a))
            raise SubmissionRefused(
                550, "5.7.1", _one_line(f"no cipher of the policy is readable by: {names}"))
        last = index == len(groups) - 1
        encrypted = encrypt_message(holder.pop() if last else holder[0], targets, cipher=cipher,
                                    protected=protected)
        copies.append(Copy(tuple(original[r] for r in rcpts), encrypted, cipher))
    if own_cert is None:
        reasons.append("the sender has no certificate: not encrypted to the sender")
    if bcc:
        reasons.append(f"{len(bcc)} Bcc recipient(s): separate copies")
    return Plan(tuple(copies), agent is not None, True, decision, tuple(reasons))


def _one_copy(recipients: Sequence[str], message: bytes, signed: bool, decision: Decision,
              reasons: list[str]) -> Plan:
    """One transaction to every envelope recipient (nothing encrypted per recipient)."""
    return Plan((Copy(tuple(dict.fromkeys(recipients)), message),), signed, False, decision,
                tuple(reasons))


def _add_target(targets: list[Recipient], seen: set[x509.Certificate],
                recipient: Recipient) -> None:
    """Add `recipient` unless its certificate is already a target (certificates compare and
    hash by their DER: cheaper than a SHA-256 fingerprint per target and message)."""
    if recipient.certificate not in seen:
        seen.add(recipient.certificate)
        targets.append(recipient)


def _cipher(decision: Decision, targets: Sequence[Recipient]) -> Cipher | None:
    for cipher in decision.ciphers:
        if cipher.endswith("gcm") and not all(t.supports_gcm for t in targets):
            continue
        return cipher
    return None


def _text(value: bytes) -> str:
    return value.decode("utf-8", "replace")


def _one_line(text: str) -> str:
    return " ".join(text.split())[:400]


def _addresses(values: Sequence[str]) -> list[str]:
    found: list[str] = []
    for _, address in email.utils.getaddresses(list(values)):
        try:
            found.append(normalize_address(address))
        except InputError:
            continue
    return list(dict.fromkeys(found))


def _clean_header(header: bytes, fields: Sequence[HeaderField],
                  decision: Decision) -> tuple[bytes, bool]:
    """The header without X-SMIME-* fields and with subject tags removed."""
    out: list[bytes] = []
    changed = False
    for f in fields:
        if f.name.startswith("x-smime-"):
            changed = True
            continue
        if f.name == "subject" and decision.subject_tags:
            value = _text(f.value())
            subject, found = find_subject_tags(value, decision.subject_tags)
            if found:
                changed = True
                name = f.raw.split(b":", 1)[0]
                out.append(name + b": " + subject.encode("utf-8") + b"\r\n")
                continue
        out.append(f.raw)
    if not changed:
        return header, False
    # fields() drops lines that are not fields; keep the header exactly otherwise
    return b"".join(out), True


def _wrap(message: bytes, *, hide_subject: bool) -> bytes:
    """RFC 8551 3.1: the whole message (minus Bcc) as message/rfc822 inside; a few fields
    outside for routing and display. One copy of the body."""
    entity = parse_entity(message)
    outer: list[bytes] = []
    inner: list[bytes] = []
    for f in entity.fields:
        raw = f.line()
        if f.name != "bcc":
            inner.append(raw)
        if f.name in OUTER_FIELDS:
            outer.append(b"Subject: ...\r\n" if f.name == "subject" and hide_subject else raw)
    return b"".join([*outer, b"MIME-Version: 1.0\r\n",
                     b"Content-Type: message/rfc822; forwarded=no\r\n\r\n", *inner,
                     memoryview(entity.data)[entity.header_end:]])


def _inject(message: bytes, *, encrypted: bool, hide_subject: bool) -> tuple[bytes, bytes]:
    """RFC 9788 Injected Headers: (the message to sign or encrypt, the protected fields).

    The protected fields are the whole header (minus Bcc), put first in the entity that is
    signed or encrypted, whose Content-Type says `hp="clear"` (signed only) or `hp="cipher"`
    (RFC 9788 2.1). Outside stay, when encrypting, only the fields mail needs on its way
    (`OUTER_FIELDS`; the Subject "[...]" with `hide_subject`, RFC 9788 3.2.1's baseline),
    each also named in an HP-Outer field inside (RFC 9788 2.2); when only signing, all of
    them. No Legacy Display Element is added to the body (RFC 9788 makes it optional, and a
    reader that does not know it would see it as text)."""
    entity = parse_entity(message)
    protected: list[bytes] = []
    outer: list[bytes] = []
    content: list[bytes] = []
    hp = b"cipher" if encrypted else b"clear"
    for f in entity.fields:
        raw = f.line()
        if f.name.startswith("content-"):
            if f.name == "content-type":
                raw = raw.rstrip(b"\r\n") + b';\r\n hp="' + hp + b'"\r\n'
            content.append(raw)
            continue
        if f.name in ("mime-version", "bcc"):
            continue
        protected.append(raw)
        if not encrypted:
            outer.append(raw)
        elif f.name in OUTER_FIELDS:
            outer.append(b"Subject: [...]\r\n" if f.name == "subject" and hide_subject else raw)
    if not any(f.name == "content-type" for f in entity.fields):
        content.insert(0, b'Content-Type: text/plain; charset=us-ascii; hp="' + hp + b'"\r\n')
    if encrypted:
        protected.extend(b"HP-Outer: " + raw for raw in outer)
    message = b"".join([*outer, b"MIME-Version: 1.0\r\n", *content, b"\r\n",
                        memoryview(entity.data)[entity.body_start:]])
    return message, b"".join(protected)


def _client_protection(content_type: tuple[str, dict[str, str]]) -> str | None:
    """"encrypted", "signed" or None: what the client already did to the message as a whole
    (S/MIME, RFC 8551 3.4-3.5, or PGP/MIME, RFC 3156: the proxy never nests its own)."""
    mime_type, params = content_type
    if mime_type == "multipart/encrypted":
        return "encrypted"
    if mime_type == "multipart/signed":
        return "signed"
    if is_pkcs7_mime(mime_type, params):
        kind = (params.get("smime-type") or "").lower()
        return "signed" if kind == "signed-data" else "encrypted"
    return None
