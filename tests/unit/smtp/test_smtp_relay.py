"""The upstream DATA writer: dot-stuffing in ~1 MiB pieces equals whole-message stuffing,
whatever falls on a piece boundary; and a multi-piece message arrives byte for byte, by DATA
and by BDAT (CHUNKING)."""

from __future__ import annotations

import pytest

from smime_proxy.smtp import relay
from support.fake_smtp import FakeUpstream
from support.smtp_proxy import async_client, key_world, make_front, plain_upstream


def _reference(message: bytes) -> bytes:
    stuffed = message.replace(b"\r\n.", b"\r\n..")
    return b"." + stuffed if stuffed.startswith(b".") else stuffed


@pytest.mark.parametrize("shift", [-3, -2, -1, 0, 1, 2])
def test_pieces_equal_whole_stuffing(monkeypatch: pytest.MonkeyPatch, shift: int) -> None:
    monkeypatch.setattr(relay, "PIECE", 64)
    line = b"." + b"x" * 20 + b"\r\n"
    message = b".first\r\n" + b"y" * (60 + shift) + b"\r\n" + line * 20 + b"..\r\n.\r\n"
    pieces = list(relay.dot_stuffed_pieces(message))
    assert len(pieces) > 3
    assert b"".join(pieces) == _reference(message)
    assert all(p.endswith(b"\n") for p in pieces)


def test_no_final_crlf_gets_one() -> None:
    assert b"".join(relay.dot_stuffed_pieces(b"a\r\nb")) == b"a\r\nb\r\n"


@pytest.mark.parametrize("chunking", [False, True])
async def test_multi_piece_message_arrives_intact(chunking: bool) -> None:
    world = key_world()
    body = b"".join((b"." if i % 7 == 0 else b"") + b"line %d " % i + b"z" * 60 + b"\r\n"
                    for i in range(45_000))  # ~3 MB: several pieces
    message = b"X-SMIME-Sign: no\r\nSubject: big\r\n\r\n" + body
    fake = FakeUpstream(chunking=chunking)
    await fake.start()
    front = make_front(world, plain_upstream(fake.port))
    await front.start()
    try:
        async with async_client(front.port, login=("alice", "alice-pw"), seconds=60) as c:
            errors, _ = await c.sendmail("alice@example.test", ["bob@example.test"], message)
            assert errors == {}
    finally:
        await front.stop(1.0)
        await fake.stop()
    [delivery] = fake.delivered
    assert delivery.data == b"Subject: big\r\n\r\n" + body
