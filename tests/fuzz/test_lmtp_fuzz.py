"""Hostile input to the Store Encrypted filter: whatever bytes arrive as a message,
`lmtp.store.stored_form` answers (sealed, or unchanged with a reason) and never raises, and a
sealed copy opens back to exactly those bytes; whatever a store answers, `lmtp.upstream`
gives one result per recipient and never raises.

Found here: a GCM-sealed message whose decrypted start was not UTF-8 text (a raw 8-bit
header) could not be opened ("cannot decrypt"): the plausibility check against a wrong key
is for unauthenticated ciphers only, GCM's tag proves the key."""

from __future__ import annotations

import asyncio
import contextlib
import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from smime_proxy import event_loop
from smime_proxy.at_rest.forms import stored_form
from smime_proxy.crypto.keyagent import InProcessKeyAgent
from smime_proxy.display import open_message
from smime_proxy.lmtp.upstream import deliver
from support import pki
from support.smtp_proxy import people

_MESSAGES = st.one_of(
    st.binary(max_size=400),
    st.builds(lambda head, body: head + b"\r\n\r\n" + body,
              st.sampled_from([b"Subject: s", b"From: a@b\r\nSubject: x",
                               b"Content-Type: multipart/signed; boundary=b",
                               b"Content-Type: application/pkcs7-mime",
                               b"Content-Type: text/plain\r\n folded", b"\x00\xff: bad",
                               b"X" * 1200]),
              st.binary(max_size=200)),
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(message=_MESSAGES)
def test_stored_form_never_raises_and_seals_losslessly(message: bytes) -> None:
    # what the filter receives has CRLF line ends only (its DATA reader refuses the rest)
    message = re.sub(rb"\r\n|\r|\n", b"\r\n", message)
    bob = people().ids["bob"]
    form = stored_form(message, bob.cert, wanted=True)
    if not form.encrypted:
        assert form.message == message and form.reason
        return
    agent = InProcessKeyAgent(bob.key, bob.cert, tuple(bob.chain))
    shown = open_message(form.message, agent, [], now=pki.NOW)
    assert shown.status == "encrypted=yes; cipher=aes-256-gcm; signature=none"
    assert shown.content.split(b"\r\n", 1)[1] == message


_REPLIES = st.lists(st.sampled_from([
    b"220 ready\r\n", b"250-x\r\n250 PIPELINING\r\n", b"250 ok\r\n", b"354 go\r\n",
    b"550 no\r\n", b"451 later\r\n", b"garbage\r\n", b"2", b"", b"250" + b"-x\r\n" * 150,
    b"\xff\xfe\r\n"]), max_size=12)


@pytest.mark.parametrize("recipients", [1, 3])
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(replies=_REPLIES)
def test_any_store_answer_gives_one_result_per_recipient(recipients: int,
                                                         replies: list[bytes]) -> None:
    script = b"".join(replies)

    async def run() -> list[object]:
        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.write(script)
            with contextlib.suppress(OSError):
                await writer.drain()
            writer.close()

        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            results = await deliver("127.0.0.1", port, "a@b", [f"r{i}@x" for i in
                                                               range(recipients)],
                                    b"Subject: s\r\n\r\nbody\r\n", step_seconds=0.5)
        finally:
            server.close()
            await server.wait_closed()
        return list(results)

    results = event_loop.run(run())  # the loop the daemon runs on
    assert len(results) == recipients
