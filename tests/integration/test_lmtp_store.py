"""Store Encrypted: the LMTP filter in front of the real Dovecot LMTP. Plain mail to a
`store_encrypted` user is stored sealed to their certificate (openssl cms decrypts it back
to the original, byte for byte), other recipients of the same transaction get it unchanged,
S/MIME mail is stored unchanged, and every recipient gets its own reply (RFC 2033 4.2): the
store's own for an unknown user, 451 when the store does not answer."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from smime_proxy.accounts import Accounts
from smime_proxy.config import ListenerConfig, UpstreamEndpoint
from smime_proxy.crypto.keyagent import InProcessKeyAgent
from smime_proxy.display import open_message
from smime_proxy.harness import Upstream
from smime_proxy.lmtp.server import NO_ANSWER, LmtpFront
from smime_proxy.lmtp.upstream import deliver
from support import pki
from support.mailbox import wait_for
from support.smime_check import decrypt, smime_type
from support.smtp_proxy import key_world, people, policy

STORE_ENCRYPTED = "users: {bob@example.test: {store_encrypted: yes}}"


def _message(token: str, content_type: str = "text/plain; charset=utf-8") -> bytes:
    return (f"From: Dave <dave@example.org>\r\nTo: bob@example.test, alice@example.test\r\n"
            f"Subject: {token}\r\nMessage-ID: <{token}@example.org>\r\nMIME-Version: 1.0\r\n"
            f"Content-Type: {content_type}\r\n\r\nconfidential body of {token}\r\n"
            f".a line with a leading dot\r\n").encode()


@asynccontextmanager
async def _front(store_port: int, rules: str = STORE_ENCRYPTED,
                 bob_wants: bool = False) -> AsyncIterator[LmtpFront]:
    world = key_world()
    world.give_key("bob", people().ids["bob"], unlock=False)  # no unlock needed
    if bob_wants:
        world.secure_mail.set_store_encrypted_choice("bob", True)
    front = LmtpFront(
        secure_mail=world.secure_mail,
        listener=ListenerConfig("127.0.0.1", 0, None, plaintext_loopback=True),
        upstream=UpstreamEndpoint("127.0.0.1", store_port, "none", False, None),
        accounts=Accounts("%Ln"), policy=policy(rules), now=lambda: world.now, timeout=10)
    await front.start()
    try:
        yield front
    finally:
        await front.stop(1.0)


async def _send(front: LmtpFront, recipients: list[str], message: bytes) -> list[str]:
    replies = await deliver("127.0.0.1", front.port, "dave@example.org", recipients, message,
                            step_seconds=30)
    return [r.line if r is not None else "none" for r in replies]


async def test_plain_mail_is_stored_encrypted_for_the_user_who_wants_it(
        upstream: Upstream, tmp_path: Path) -> None:
    message = _message("lmtp-store-1")
    async with _front(upstream.lmtp_port) as front:
        replies = await _send(front, ["bob@example.test", "alice@example.test"], message)
    assert [r[:3] for r in replies] == ["250", "250"], replies
    [stored] = await asyncio.to_thread(wait_for, upstream, "bob", "lmtp-store-1")
    assert smime_type(stored) == "authEnveloped-data"
    assert b"confidential body" not in stored
    inner = decrypt(stored, people().ids["bob"], tmp_path)
    assert inner.endswith(message)  # the whole message, byte for byte, inside
    # and the IMAP front shows exactly what arrived
    bob = people().ids["bob"]
    shown = open_message(stored, InProcessKeyAgent(bob.key, bob.cert, tuple(bob.chain)), [],
                         now=pki.NOW)
    assert shown.content.split(b"\r\n", 1)[1] == message
    assert shown.status == "encrypted=yes; cipher=aes-256-gcm; signature=none"
    [plain] = await asyncio.to_thread(wait_for, upstream, "alice", "lmtp-store-1")
    assert b"confidential body of lmtp-store-1" in plain and smime_type(plain) is None


async def test_the_users_own_switch_and_smime_mail_unchanged(upstream: Upstream) -> None:
    signed = _message("lmtp-store-2", 'multipart/signed; protocol="application/pkcs7-signature"'
                      '; micalg=sha-256; boundary="b"')
    async with _front(upstream.lmtp_port, rules="", bob_wants=True) as front:
        assert (await _send(front, ["bob@example.test"], _message("lmtp-store-3")))[0][:3] \
            == "250"
        assert (await _send(front, ["bob@example.test"], signed))[0][:3] == "250"
    [sealed] = await asyncio.to_thread(wait_for, upstream, "bob", "lmtp-store-3")
    assert smime_type(sealed) == "authEnveloped-data"
    [kept] = await asyncio.to_thread(wait_for, upstream, "bob", "lmtp-store-2")
    assert b"confidential body of lmtp-store-2" in kept


async def test_one_reply_per_recipient_from_the_store(upstream: Upstream) -> None:
    async with _front(upstream.lmtp_port) as front:
        replies = await _send(front, ["nobody@example.test", "bob@example.test",
                                      "carol@example.test"], _message("lmtp-store-4"))
    assert replies[0].startswith("550"), replies  # Dovecot: no such user
    assert [r[:3] for r in replies[1:]] == ["250", "250"], replies


async def test_a_store_that_does_not_answer_gives_451_to_each_recipient() -> None:
    with socket.socket() as silent:  # accepts, never speaks
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        port = silent.getsockname()[1]
        async with _front(port) as front:
            front.timeout = 0.5
            replies = await _send(front, ["bob@example.test", "alice@example.test"],
                                  _message("lmtp-store-5"))
    assert replies == [NO_ANSWER, NO_ANSWER]


@pytest.mark.parametrize("rules", ["users: {bob@example.test: {store_encrypted: maybe}}"])
def test_store_encrypted_is_yes_or_no(rules: str) -> None:
    from smime_proxy.errors import ConfigError

    with pytest.raises(ConfigError, match="store_encrypted"):
        policy(rules)


async def test_too_big_and_bare_line_ends_get_one_reply_per_recipient(
        upstream: Upstream) -> None:
    async with _front(upstream.lmtp_port) as front:
        front.max_message = 200
        replies = await _send(front, ["bob@example.test", "alice@example.test"],
                              _message("lmtp-store-6"))
        assert [r[:3] for r in replies] == ["552", "552"], replies
        front.max_message = 10_000
        reader, writer = await asyncio.open_connection("127.0.0.1", front.port)
        writer.write(b"LHLO test\r\nMAIL FROM:<dave@example.org>\r\n"
                     b"RCPT TO:<bob@example.test>\r\nRCPT TO:<alice@example.test>\r\n")
        writer.write(b"DATA\r\n")
        await writer.drain()
        seen = b""
        while b"354" not in seen:
            seen += await asyncio.wait_for(reader.read(4096), 10)
        # a bare LF before a dot: never an end of data, and the message is refused
        writer.write(b"Subject: smuggle\r\n\r\nline\n.\nMAIL FROM:<x>\r\n.\r\n")
        await writer.drain()
        answer = b""
        while answer.count(b"\r\n") < 2:
            answer += await asyncio.wait_for(reader.read(4096), 10)
        writer.close()
        await writer.wait_closed()
    assert [line[:3] for line in answer.split(b"\r\n")[:2]] == [b"550", b"550"], answer


async def test_a_kept_store_connection_that_was_closed_is_replaced(upstream: Upstream) -> None:
    async with _front(upstream.lmtp_port) as front:
        assert (await _send(front, ["alice@example.test"], _message("lmtp-store-8")))[0][:3] \
            == "250"
        [kept] = front.store._idle
        kept.writer.transport.abort()  # as when the store closes an idle connection
        replies = await _send(front, ["alice@example.test"], _message("lmtp-store-9"))
        assert replies[0][:3] == "250", replies
        assert front.store._idle and front.store._idle[0] is not kept
    assert len(await asyncio.to_thread(wait_for, upstream, "alice", "lmtp-store-9")) == 1


@pytest.mark.parametrize(("sender", "token", "return_path"), [
    ("", "lmtp-bounce-1", b"Return-Path: <>"),  # a bounce: the null reverse-path
    ('"dave q"@example.org', "lmtp-quoted-1", b'Return-Path: <"dave q"@example.org>'),
    ("dave.q+tag@mail.example.org", "lmtp-plain-1", b"Return-Path: <dave.q+tag@mail.example.org>"),
])
async def test_the_envelope_sender_reaches_the_store_as_sent(
        upstream: Upstream, sender: str, token: str, return_path: bytes) -> None:
    """The filter's own parse of `<dot-atom@domain>` and aiosmtpd's for anything else both
    hand Dovecot the reverse-path the MTA gave (a bounce's `<>` included)."""
    async with _front(upstream.lmtp_port, rules="") as front:
        [reply] = await deliver("127.0.0.1", front.port, sender, ["alice@example.test"],
                                _message(token), step_seconds=30)
    assert reply is not None and reply.code == 250, reply
    [stored] = await asyncio.to_thread(wait_for, upstream, "alice", token)
    assert stored.startswith(return_path + b"\r\n") or return_path + b"\n" in stored, stored[:200]
