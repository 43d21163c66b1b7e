"""A real Thunderbird (Debian's 153 ESR) in front of the product (issue 13's client test).

The product runs as a user starts it (``demo_proxy``: the demo config, keys for alice, bob
and carol, ``smime-proxy serve``, in front of the session's real Dovecot + Postfix).
Thunderbird runs on its own Xvfb with a fresh profile whose only account is bob's, at the
proxy's IMAP and SMTP listeners (STARTTLS, the demo's TLS CA trusted; the demo's S/MIME CA
trusted for mail), and is driven with Marionette (support/thunderbird.py). Every assertion is
on what Thunderbird shows: the message list, the message pane's text, its attachment list,
its S/MIME indicators and its alerts; or, for sending, on what arrived at Dovecot.

With ``signatures: keep`` (``keep_proxy``, clients/conftest.py: a second proxy on a copy of
the demo) Thunderbird gets alice's multipart/signed and judges the signature itself: "ok"
when its profile trusts the demo S/MIME CA, "Digital Signature Is Not Valid" when it does not
(``security_info``: the texts of its Message Security panel).

Each test leaves screenshots, Thunderbird's IMAP log (``imap-commands.txt``: every command it
sent) and ``shown-*.json`` (what it showed) in its artifacts directory (clients/conftest.py).
"""

from __future__ import annotations

import dataclasses
import email
import email.policy
import email.utils
import imaplib
import json
import secrets
import smtplib
import ssl
import time
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Protocol

import pytest

from smime_proxy.harness import Upstream
from support import mailbox
from support.cmsutil import openssl
from support.demo_proxy import DemoProxy
from support.smime_check import recipient_serial_list, smime_type
from support.thunderbird import Crypto, MessageShown, Thunderbird, missing
from support.thunderbird_profile import Account, TrustedCert

pytestmark = [
    pytest.mark.clients,
    pytest.mark.skipif(missing() is not None, reason=str(missing())),
]


@dataclasses.dataclass(frozen=True)
class Sent:
    subject: str
    body: str
    """A line of the body that only the decrypted message holds."""


def submit(proxy: DemoProxy, sender: str, to: str, subject: str, body: str, *,
           protect: bool) -> None:
    """``sender`` submits a message through the proxy's SMTP listener (STARTTLS, AUTH), with
    ``X-SMIME-Sign``/``X-SMIME-Encrypt`` ``yes`` (``protect``) or ``no``."""
    msg = EmailMessage()
    msg["From"] = f"{sender.capitalize()} <{sender}@example.test>"
    msg["To"] = f"{to}@example.test"
    msg["Subject"] = subject
    msg["Date"] = email.utils.formatdate(localtime=True)
    msg["Message-ID"] = email.utils.make_msgid(domain="example.test")
    msg["X-SMIME-Sign"] = msg["X-SMIME-Encrypt"] = "yes" if protect else "no"
    msg.set_content(body + "\n")
    context = ssl.create_default_context(cafile=str(proxy.tls_ca))
    with smtplib.SMTP(proxy.host, proxy.smtp_port, timeout=60) as smtp:
        smtp.starttls(context=context)
        smtp.login(sender, proxy.mail_passwords[sender])
        smtp.send_message(msg)


def deliver(proxy: DemoProxy, upstream: Upstream, subject: str, body: str, *,
            protect: bool) -> Sent:
    """alice sends bob ``subject`` (its last word unique); returns once Dovecot has it
    (checked to be S/MIME or not)."""
    submit(proxy, "alice", "bob", subject, body, protect=protect)
    token = subject.rsplit(maxsplit=1)[-1]
    stored = mailbox.wait_for(upstream, "bob", token)
    assert len(stored) == 1, f"{subject!r} arrived {len(stored)} times"
    assert (smime_type(stored[0]) == "enveloped-data") is protect, stored[0][:800]
    return Sent(subject, body)


def record(artifacts: Path, label: str, shown: MessageShown) -> None:
    """Keep what Thunderbird showed (``shown-<label>.json``) and print it (``-s``)."""
    data = dataclasses.asdict(shown)
    (artifacts / f"shown-{label}.json").write_text(json.dumps(data, indent=2) + "\n")
    print(f"\n{label}: {json.dumps(data, indent=2)}")


@dataclasses.dataclass(frozen=True)
class Inbox:
    encrypted: Sent
    plain: Sent


@pytest.fixture(scope="module")
def bob_inbox(demo_proxy: DemoProxy, upstream: Upstream) -> Inbox:
    """alice has sent bob one signed+encrypted message and one plain one (the policy's
    defaults would sign and encrypt both: the plain one says ``no`` to both)."""
    demo_proxy.unlock("alice")
    token = secrets.token_hex(4)
    return Inbox(
        encrypted=deliver(demo_proxy, upstream, f"Encrypted hello e{token}",
                          f"Only bob can read this: the secret word is saffron-{token}.",
                          protect=True),
        plain=deliver(demo_proxy, upstream, f"Plain hello p{token}",
                      f"Anyone can read this: the word is meadow-{token}.", protect=False),
    )


def account(proxy: DemoProxy, user: str) -> Account:
    return Account(user=user, password=proxy.mail_passwords[user],
                   address=f"{user}@example.test", full_name=user.capitalize(),
                   imap_host=proxy.host, imap_port=proxy.imap_port,
                   smtp_host=proxy.host, smtp_port=proxy.smtp_port)


class StartThunderbird(Protocol):
    def __call__(self, user: str, *, proxy: DemoProxy | None = None,
                 trust_smime_ca: bool = True) -> Thunderbird: ...


@pytest.fixture
def thunderbird(demo_proxy: DemoProxy, artifacts: Path,
                tmp_path: Path) -> Iterator[StartThunderbird]:
    """``thunderbird(user)`` starts Thunderbird with a fresh profile for ``user``'s account
    at the proxy (``proxy``, the demo proxy unless given) trusting its TLS CA and (unless
    ``trust_smime_ca`` is false) its S/MIME CA for mail; everything it started is stopped
    when the test ends, however it ends."""
    started: list[Thunderbird] = []

    def start(user: str, *, proxy: DemoProxy | None = None,
              trust_smime_ca: bool = True) -> Thunderbird:
        proxy = proxy or demo_proxy
        certs = [TrustedCert("smime-proxy demo TLS CA", proxy.tls_ca, "C,,")]
        if trust_smime_ca:
            certs.append(TrustedCert("smime-proxy demo S/MIME CA", proxy.smime_ca, ",C,"))
        tb = Thunderbird(tmp_path / f"thunderbird-{user}-{len(started)}", artifacts,
                         account(proxy, user), certs)
        started.append(tb)
        tb.start()
        return tb

    try:
        yield start
    finally:
        for tb in started:
            tb.stop()


def test_bob_reads_decrypted_mail(demo_proxy: DemoProxy, bob_inbox: Inbox, artifacts: Path,
                                  thunderbird: StartThunderbird) -> None:
    demo_proxy.unlock("bob")
    tb = thunderbird("bob")
    tb.show_folder("INBOX")
    listed = tb.wait_for_subjects([bob_inbox.encrypted.subject, bob_inbox.plain.subject])
    tb.screenshot("listed")
    print("listed:", listed)

    encrypted = tb.open_message(bob_inbox.encrypted.subject)
    record(artifacts, "encrypted", encrypted)
    assert encrypted.loaded
    assert bob_inbox.encrypted.body in encrypted.body
    assert encrypted.alerts == []
    assert encrypted.subject == bob_inbox.encrypted.subject
    # Thunderbird got a decrypted message: it never tried (and failed) to decrypt it itself
    assert encrypted.crypto.encrypted != "notok"
    assert encrypted.crypto.encryption_status is None

    plain = tb.open_message(bob_inbox.plain.subject)
    record(artifacts, "plain", plain)
    assert plain.loaded
    assert plain.body.strip() == bob_inbox.plain.body
    assert plain.attachments == []
    assert not plain.crypto.box
    assert plain.alerts == []


def test_decrypted_mail_is_shown_as_one_plain_message(
        demo_proxy: DemoProxy, bob_inbox: Inbox, artifacts: Path,
        thunderbird: StartThunderbird) -> None:
    """Issue 13: header protection is not shown as an attached message (an RFC 8551
    message/rfc822 wrapper was: Thunderbird names it "<Subject>.eml", or
    "ForwardedMessage.eml" without a Subject), the pane shows the body and nothing else, and
    the signature indicator does not contradict the proxy's verdict (alice's valid
    signature): either none (the proxy removed the verified signature and says so in
    X-SMIME-Status) or Thunderbird's own "ok"."""
    demo_proxy.unlock("bob")
    tb = thunderbird("bob")
    tb.show_folder("INBOX")
    tb.wait_for_subjects([bob_inbox.encrypted.subject])
    shown = tb.open_message(bob_inbox.encrypted.subject)
    record(artifacts, "encrypted", shown)
    assert shown.loaded and shown.alerts == []
    assert shown.crypto.signed in (None, "ok"), shown.crypto
    assert shown.crypto.signature_status in (None, "SUCCESS"), shown.crypto
    assert shown.crypto.encrypted != "notok", shown.crypto
    assert [a for a in shown.attachments
            if a.content_type == "message/rfc822" or a.name.endswith(".eml")] == []
    assert shown.attachments == []
    assert shown.body.strip() == bob_inbox.encrypted.body


def test_a_tag_asks_the_proxy_to_encrypt_the_stored_message(
        demo_proxy: DemoProxy, upstream: Upstream, artifacts: Path,
        thunderbird: StartThunderbird) -> None:
    """Issue 11, from an unmodified client: bob tags a plain message with a tag named
    $SmimeEncrypt; Dovecot then holds it encrypted, and Thunderbird still lists it and
    shows it as it was."""
    demo_proxy.unlock("alice")
    demo_proxy.unlock("bob")
    token = secrets.token_hex(4)
    sent = deliver(demo_proxy, upstream, f"Tag me t{token}",
                   f"Keep this one safe: {token}.", protect=False)
    tb = thunderbird("bob")
    tb.show_folder("INBOX")
    tb.wait_for_subjects([sent.subject])
    assert tb.tag_message(sent.subject, "$SmimeEncrypt") == "$smimeencrypt"

    def sealed() -> bool:
        stored = mailbox.fetch(upstream, "bob", token)
        return [smime_type(m) for m in stored] == ["authEnveloped-data"]

    tb.wait_for(sealed, "the message stored encrypted", timeout=30)
    [stored] = mailbox.fetch(upstream, "bob", token)
    assert sent.body.encode() not in stored and b"smimeencrypt" not in stored.lower()
    tb.wait_for_subjects([sent.subject])
    shown = tb.open_message(sent.subject, reselect=True)
    record(artifacts, "tagged", shown)
    assert shown.loaded and shown.alerts == []
    assert shown.body.strip() == sent.body


def test_locked_key_lists_the_folder_and_says_why_it_cannot_open(
        demo_proxy: DemoProxy, upstream: Upstream, bob_inbox: Inbox, artifacts: Path,
        thunderbird: StartThunderbird) -> None:
    demo_proxy.unlock("alice")
    demo_proxy.lock("bob")
    locked = deliver(demo_proxy, upstream, f"While locked {secrets.token_hex(4)}",
                     f"Readable after unlocking: juniper-{secrets.token_hex(4)}.",
                     protect=True)
    tb = thunderbird("bob")
    tb.show_folder("INBOX")
    listed = tb.wait_for_subjects([locked.subject, bob_inbox.encrypted.subject,
                                   bob_inbox.plain.subject])
    tb.screenshot("listed-while-locked")
    print("listed while locked:", listed)

    refused = tb.open_message(locked.subject)
    record(artifacts, "locked", refused)
    assert locked.body not in refused.body
    # the proxy's NO text reaches the user as an alert (when opening it, today; an alert of
    # the background download would do as well)
    assert any("locked" in alert.lower() for alert in tb.alerts), tb.alerts

    # the plain message opens as ever while the key is locked
    plain = tb.open_message(bob_inbox.plain.subject)
    record(artifacts, "plain-while-locked", plain)
    assert plain.body.strip() == bob_inbox.plain.body
    assert plain.alerts == []

    demo_proxy.unlock("bob")
    opened = tb.open_message(locked.subject, reselect=True)
    record(artifacts, "unlocked", opened)
    assert opened.loaded
    assert locked.body in opened.body
    assert opened.alerts == []


def test_thunderbird_sends_signed_and_encrypted(
        demo_proxy: DemoProxy, upstream: Upstream, artifacts: Path, tmp_path: Path,
        thunderbird: StartThunderbird) -> None:
    """bob's Thunderbird sends to alice through the proxy's SMTP listener; what Dovecot stored
    is S/MIME as the demo policy says (sign when unlocked, encrypt when every recipient has a
    certificate: both here), and alice can decrypt it and verify bob's signature with
    ``openssl cms``."""
    demo_proxy.unlock("bob")
    token = secrets.token_hex(4)
    subject = f"From Thunderbird {token}"
    body = f"Sent by Thunderbird through the proxy: heather-{token}."
    tb = thunderbird("bob")
    tb.send_message("alice@example.test", subject, body)

    stored = mailbox.wait_for(upstream, "alice", token)
    assert len(stored) == 1, f"{len(stored)} copies arrived"
    message = stored[0]
    (artifacts / "arrived.eml").write_bytes(message)
    parsed = email.message_from_bytes(message, policy=email.policy.default)
    assert parsed.get_content_type() == "application/pkcs7-mime"
    # AES-256-GCM once bob has read a signed message of alice's through the proxy (her
    # signature announces it: issue 14's capabilities), AES-256-CBC before that
    assert smime_type(message) in ("enveloped-data", "authEnveloped-data")
    assert parsed["Subject"] == subject
    assert body.encode() not in message
    assert len(recipient_serial_list(message)) == 2  # alice, and bob (the sender's copy)

    p12 = tmp_path / "alice.p12"
    p12.write_bytes(demo_proxy.export_p12("alice", "export-pw"))
    pem = tmp_path / "alice.pem"
    openssl("pkcs12", "-in", str(p12), "-nodes", "-passin", "pass:export-pw", "-out", str(pem))
    decrypted = openssl("cms", "-decrypt", "-recip", str(pem), "-inkey", str(pem),
                        stdin=message)
    assert b"multipart/signed" in decrypted.split(b"\r\n\r\n", 1)[0].lower() \
        or b"multipart/signed" in decrypted.split(b"\n\n", 1)[0].lower(), decrypted[:400]
    signer = tmp_path / "signer.pem"
    content = openssl("cms", "-verify", "-CAfile", str(demo_proxy.smime_ca),
                      "-signer", str(signer), stdin=decrypted)
    assert body.encode() in content
    assert openssl("x509", "-in", str(signer), "-noout", "-email").strip() \
        == b"bob@example.test"
    # header protection: RFC 9788 injected headers in the signed part, no wrapper
    signed_part = decrypted.split(b"\n--", 2)[1]
    assert b'hp="cipher"' in signed_part and b"message/rfc822" not in decrypted
    assert f"Subject: {subject}".encode() in signed_part

    # Thunderbird's own Sent copy went through the proxy's IMAP: sealed to bob at rest
    deadline = time.monotonic() + 30
    while not (sent := mailbox.fetch(upstream, "bob", token, mailbox="Sent")):
        assert time.monotonic() < deadline, "no Sent copy"
        time.sleep(0.5)
    assert len(sent) == 1 and b"application/pkcs7-mime" in sent[0]
    assert body.encode() not in sent[0]
    (artifacts / "sent-copy.eml").write_bytes(sent[0])


# --- signatures: keep: Thunderbird judges alice's signature itself --------------------------


def shown_through(proxy: DemoProxy, user: str, token: str) -> bytes:
    """The one message of ``user``'s INBOX whose Subject has ``token``, as ``proxy`` shows it
    (``BODY.PEEK[]`` through its IMAP listener): what Thunderbird gets."""
    with imaplib.IMAP4(proxy.host, proxy.imap_port, timeout=60) as imap:
        imap.starttls(ssl.create_default_context(cafile=str(proxy.tls_ca)))
        imap.login(user, proxy.mail_passwords[user])
        imap.select("INBOX", readonly=True)
        _, found = imap.uid("SEARCH", "SUBJECT", f'"{token}"')
        uids = (found[0] or b"").split()
        assert len(uids) == 1, found
        _, data = imap.uid("FETCH", uids[0].decode(), "(BODY.PEEK[])")
    parts: list[bytes] = [item[1] for item in data if isinstance(item, tuple)]
    assert len(parts) == 1, data
    return parts[0]


@pytest.fixture(scope="module")
def kept(keep_proxy: DemoProxy, upstream: Upstream) -> Sent:
    """alice has sent bob a signed+encrypted message through the ``signatures: keep`` proxy's
    SMTP listener."""
    keep_proxy.unlock("alice")
    token = secrets.token_hex(4)
    return deliver(keep_proxy, upstream, f"Signed and kept k{token}",
                   f"Thunderbird checks alice's signature: the word is thistle-{token}.",
                   protect=True)


@dataclasses.dataclass(frozen=True)
class Verdict:
    """What Thunderbird shows for alice's kept signature."""

    signed_icon: str | None
    """The signed icon's state (message-signed-<state>.svg); None: hidden."""
    signature_status: str
    signed_icon_alt: str
    signature_label: str
    explanation: str


TRUSTED = Verdict("ok", "SUCCESS", "Good signature", "Message Is Signed",
                  "This message includes a valid digital signature.")
UNTRUSTED = Verdict(None, "VERIFY_UNTRUSTED", "", "Digital Signature Is Not Valid",
                    "issued by a certificate authority that you do not trust")


@pytest.mark.parametrize(("trust_smime_ca", "verdict"),
                         [(True, TRUSTED), (False, UNTRUSTED)], ids=["trusted", "untrusted"])
def test_keep_thunderbird_judges_the_signature(
        keep_proxy: DemoProxy, kept: Sent, artifacts: Path, trust_smime_ca: bool,
        verdict: Verdict, thunderbird: StartThunderbird) -> None:
    """``signatures: keep``: the proxy decrypts and shows alice's multipart/signed as it is
    (its own verdict in X-SMIME-Status), and Thunderbird verifies the signature itself.

    - The demo S/MIME CA trusted for mail: the header's "S/MIME" button with the signed
      icon "ok" ("Good signature"); its panel says "Message Is Signed", signed by
      alice@example.test, issued by the demo CA.
    - Not trusted: the "S/MIME" button without any icon (Thunderbird shows a bad signature's
      icon only on an encrypted message, and this one reaches it decrypted), status
      VERIFY_UNTRUSTED; its panel says "Digital Signature Is Not Valid" (a CA "you do not
      trust"), though the proxy verified it.

    Either way the panel says "Message Is Not Encrypted" (Thunderbird got it decrypted), the
    body shows, smime.p7s is not listed as an attachment, and there is no alert. The default,
    ``strip``, shows no S/MIME button at all (test_decrypted_mail_is_shown_as_one_plain_message):
    the user sees the proxy's verdict only in X-SMIME-Status, whatever their client trusts.
    """
    keep_proxy.unlock("bob")
    token = kept.subject.rsplit(maxsplit=1)[-1]
    given = shown_through(keep_proxy, "bob", token)
    (artifacts / "shown-by-proxy.eml").write_bytes(given)
    parsed = email.message_from_bytes(given, policy=email.policy.default)
    assert parsed.get_content_type() == "multipart/signed"
    assert "signature=valid; signer=alice@example.test" in str(parsed["X-SMIME-Status"])

    tb = thunderbird("bob", proxy=keep_proxy, trust_smime_ca=trust_smime_ca)
    tb.show_folder("INBOX")
    tb.wait_for_subjects([kept.subject])
    shown = tb.open_message(kept.subject)
    record(artifacts, "kept", shown)
    info = tb.security_info()
    data = dataclasses.asdict(info) if info else None
    (artifacts / "security-info.json").write_text(json.dumps(data, indent=2) + "\n")
    print(f"\nsecurity info: {json.dumps(data, indent=2)}")

    assert shown.loaded and shown.alerts == [] and tb.alerts == []
    assert shown.subject == kept.subject
    assert shown.body.strip() == kept.body
    assert shown.attachments == []  # not even smime.p7s
    assert shown.crypto == Crypto(box=True, tech="S/MIME", encrypted=None,
                                  signed=verdict.signed_icon,
                                  signature_status=verdict.signature_status,
                                  encryption_status=None)
    assert info is not None and info.panel_open and info.confirm == ""
    assert info.signed_icon_alt == verdict.signed_icon_alt
    assert info.signature_label == verdict.signature_label
    assert verdict.explanation in info.signature_explanation
    assert (info.signed_by, info.signer_email, info.signer_issuer) \
        == ("alice@example.test", "alice@example.test", "smime-proxy Server CA")
    assert info.encryption_label == "Message Is Not Encrypted"
