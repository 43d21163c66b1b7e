"""Mail the SMTP front writes (RFC 9788 injected headers, the default) read back through the
IMAP front from the real Dovecot (issue 13): one ordinary message whose header fields are
the protected ones, in every view; with `signatures: keep` the signed layer too."""

from __future__ import annotations

import dataclasses
import imaplib
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from smime_proxy.app import DaemonServices
from smime_proxy.harness import Upstream
from smime_proxy.smtp.keys import ServiceKeys
from smime_proxy.smtp.submission import plan_submission
from support.imap_proxy import LoopThread, imap_services, running_front, upstream_imap
from support.smtp_proxy import UNLOCK_URL, KeyWorld, key_world, people, policy


@pytest.fixture(scope="module")
def world() -> KeyWorld:
    return fresh_world()


def fresh_world() -> KeyWorld:
    """alice and bob with unlocked keys; bob knows alice's certificate."""
    w = key_world()
    ids = people().ids
    w.give_key("alice", ids["alice"], unlock=True)
    w.give_key("bob", ids["bob"], unlock=True)
    w.know("bob", ids["alice"])
    return w


def submitted(world: KeyWorld, token: str, *, protection: str = "injected") -> bytes:
    """What the SMTP front relays for bob's message to alice (hide_subject on)."""
    message = (f"From: Bob <bob@example.test>\r\nTo: Alice <alice@example.test>\r\n"
               f"Subject: secret plans {token}\r\nDate: Mon, 01 Jun 2026 12:00:00 +0000\r\n"
               f"Message-ID: <{token}@example.test>\r\nMIME-Version: 1.0\r\n"
               f"Content-Type: text/plain; charset=utf-8\r\n\r\nmeet at noon\r\n").encode()
    plan = plan_submission(
        message, user="bob", sender="bob@example.test", recipients=["alice@example.test"],
        policy=policy(f"global: {{hide_subject: true, header_protection: {protection}}}"),
        keys=ServiceKeys(world.secure_mail, world.contacts, world.now), now=world.now,
        unlock_url=UNLOCK_URL)
    assert plan.signed and plan.encrypted
    return plan.copies[0].message


@contextmanager
def alice_sessions(upstream: Upstream, loop: LoopThread, services: DaemonServices
                   ) -> Iterator[tuple[imaplib.IMAP4, imaplib.IMAP4]]:
    """alice logged in through a running proxy and, for comparison, directly at Dovecot."""
    with running_front(loop, services) as front:
        proxy = imaplib.IMAP4("127.0.0.1", front.port, timeout=30)
        proxy.login("alice", upstream.users["alice"])
        direct = imaplib.IMAP4(upstream.host, upstream.imap_port, timeout=30)
        direct.login("alice", upstream.users["alice"])
        try:
            yield proxy, direct
        finally:
            proxy.logout()
            direct.logout()


def select_uid(imap: imaplib.IMAP4, token: str) -> str:
    assert imap.select("INBOX")[0] == "OK"
    typ, data = imap.uid("SEARCH", "HEADER", "Message-ID", f'"<{token}@example.test>"')
    assert typ == "OK" and len((data[0] or b"").split()) == 1
    return (data[0] or b"").decode()


def fetched(imap: imaplib.IMAP4, uid: str, items: str) -> list[object]:
    typ, data = imap.uid("FETCH", uid, items)
    assert typ == "OK", data
    return list(data)


def whole(data: list[object]) -> bytes:
    part = data[0]
    assert isinstance(part, tuple) and isinstance(part[1], bytes)
    return part[1]


@pytest.mark.parametrize("protection", ["injected", "wrapped"])
def test_a_protected_message_is_one_ordinary_message(upstream: Upstream, loop: LoopThread,
                                                     world: KeyWorld, tmp_path: Path,
                                                     protection: str) -> None:
    token = uuid.uuid4().hex[:12]
    upstream.deliver("alice", submitted(world, token, protection=protection))
    services = imap_services(tmp_path, world, upstream_imap(upstream))
    with alice_sessions(upstream, loop, services) as (proxy, direct):
        uid = select_uid(proxy, token)
        assert select_uid(direct, token) == uid
        stored = whole(fetched(direct, uid, "BODY.PEEK[]"))
        assert b"Subject: [...]" in stored or b"Subject: ..." in stored
        shown = whole(fetched(proxy, uid, "BODY.PEEK[]"))
        header = shown.split(b"\r\n\r\n", 1)[0]
        status = header.split(b"\r\n", 1)[0]
        assert status == (b"X-SMIME-Status: encrypted=yes; cipher=aes-256-cbc;"
                          b" signature=valid; signer=bob@example.test; headers=protected")
        assert f"Subject: secret plans {token}\r\n".encode() in header + b"\r\n"
        for hidden in (b"[...]", b"HP-Outer", b"hp=", b"multipart/signed",
                       b"message/rfc822", b"smime.p7s", b"ForwardedMessage"):
            assert hidden not in shown, hidden
        assert shown.endswith(b"\r\n\r\nmeet at noon\r\n")
        structure = fetched(proxy, uid, "(BODYSTRUCTURE ENVELOPE)")[0]
        assert isinstance(structure, bytes)
        assert b'BODYSTRUCTURE ("text" "plain"' in structure
        assert f'"secret plans {token}"'.encode() in structure
        # the operator's view: opened (by the search, then the cache answered)
        registry = services.metrics.registry
        assert (registry.get_sample_value("smime_imap_messages_opened_total",
                                          {"outcome": "decrypted"}) or 0) >= 1
        assert (registry.get_sample_value("smime_imap_view_cache_lookups_total",
                                          {"result": "hit"}) or 0) >= 2
        assert (registry.get_sample_value("smime_imap_open_seconds_count") or 0) >= 1


def test_keep_shows_the_signed_layer_with_the_protected_subject(
        upstream: Upstream, loop: LoopThread, world: KeyWorld, tmp_path: Path) -> None:
    token = uuid.uuid4().hex[:12]
    upstream.deliver("alice", submitted(world, token))
    services = imap_services(tmp_path, world, upstream_imap(upstream))
    services = dataclasses.replace(
        services, config=dataclasses.replace(services.config, signatures="keep"))
    with alice_sessions(upstream, loop, services) as (proxy, _direct):
        uid = select_uid(proxy, token)
        shown = whole(fetched(proxy, uid, "BODY.PEEK[]"))
        header = shown.split(b"\r\n\r\n", 1)[0] + b"\r\n"
        assert b"Content-Type: multipart/signed" in header
        assert f"Subject: secret plans {token}\r\n".encode() in header
        assert b"[...]" not in header


@pytest.mark.parametrize("padding", [0, 600 * 1024])  # 600 KiB: collected, not streamed
def test_a_sent_copy_is_sealed_at_rest_and_reads_back_exactly(
        upstream: Upstream, loop: LoopThread, world: KeyWorld, tmp_path: Path,
        padding: int) -> None:
    """Issue 13: the client's APPEND to Sent is stored encrypted to alice (Dovecot holds
    ciphertext, openssl opens it with her key) and reads back through the proxy byte for
    byte; an APPEND to another folder is stored as written."""
    from support.smime_check import decrypt

    token = uuid.uuid4().hex[:12]
    sent = (f"From: Alice <alice@example.test>\r\nTo: bob@example.test\r\n"
            f"Bcc: hidden@example.test\r\nSubject: sent {token}\r\n"
            f"Message-ID: <{token}@example.test>\r\nMIME-Version: 1.0\r\n"
            f"Content-Type: text/plain; charset=utf-8\r\n\r\nour plan {token}\r\n"
            + "padding line\r\n" * (padding // 14)).encode()
    services = imap_services(tmp_path, world, upstream_imap(upstream))
    with alice_sessions(upstream, loop, services) as (proxy, direct):
        for folder in ("Sent", "INBOX"):
            typ, data = proxy.append(folder, "(\\Seen)", None, sent)
            assert typ == "OK", data
        for folder in ("Sent", "INBOX"):
            assert proxy.select(folder)[0] == "OK" and direct.select(folder)[0] == "OK"
            uid = select_uid(proxy, token) if folder == "INBOX" else _uid(proxy, token)
            stored = whole(fetched(direct, uid, "BODY.PEEK[]"))
            shown = whole(fetched(proxy, uid, "BODY.PEEK[]"))
            if folder == "INBOX":
                assert stored == sent and shown.endswith(sent)
                continue
            assert b"application/pkcs7-mime" in stored and b"our plan" not in stored
            assert b"hidden@example.test" not in stored
            assert decrypt(stored, people().ids["alice"], tmp_path).endswith(sent)
            assert shown.split(b"\r\n", 1)[1] == sent  # after the status field


def _uid(imap: imaplib.IMAP4, token: str) -> str:
    """The UID of the message whose Subject holds `token` in the selected folder (its
    Message-ID is inside the sealed copy too, and outside for the listing)."""
    typ, data = imap.uid("SEARCH", "SUBJECT", token)
    assert typ == "OK" and len((data[0] or b"").split()) == 1, data
    return (data[0] or b"").decode()


def test_a_senders_announced_gcm_is_used_when_replying(
        upstream: Upstream, loop: LoopThread, tmp_path: Path) -> None:
    """Issue 14 (capabilities): alice reads bob's signed mail through the proxy (his
    signature announces AES-256-GCM); her reply to him is then encrypted with GCM."""
    world = fresh_world()  # alice has never read bob's mail
    token = uuid.uuid4().hex[:12]
    upstream.deliver("alice", submitted(world, token))
    assert not world.contacts.certificates_for("alice", "bob@example.test")
    services = imap_services(tmp_path, world, upstream_imap(upstream))
    with alice_sessions(upstream, loop, services) as (proxy, _direct):
        uid = select_uid(proxy, token)
        assert b"signature=valid" in whole(fetched(proxy, uid, "BODY.PEEK[]"))
    reply = (f"From: Alice <alice@example.test>\r\nTo: bob@example.test\r\n"
             f"Subject: Re: {token}\r\n\r\nnoon is fine\r\n").encode()
    plan = plan_submission(
        reply, user="alice", sender="alice@example.test", recipients=["bob@example.test"],
        policy=policy(), keys=ServiceKeys(world.secure_mail, world.contacts, world.now),
        now=world.now, unlock_url=UNLOCK_URL)
    assert plan.encrypted and plan.copies[0].cipher == "aes-256-gcm"
