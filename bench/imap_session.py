"""Benchmark: the IMAP session's own work on a client reading plain mail one message at a
time, without sockets, against the framing any IMAP-aware proxy must do on the same bytes.

The session (`imap.session.ImapSession`) is logged in, has selected a folder of `--count`
plain messages of about 20 KB and learnt they are plain (one `FETCH 1:* BODY.PEEK[]`).
Then, per command, as the I/O shell feeds it: the client's `aN UID FETCH n BODY.PEEK[]`,
and the upstream's answer (the message as a literal, then the tagged OK) in 4 KB pieces,
as Dovecot writes them; each piece goes to `take_literal_piece` first, then to
`upstream_data`, as in imap/connection.py.

- session: the above, µs of process CPU per command;
- framing: the same bytes through a `ServerFramer` (the command) and a `ClientFramer` (the
  answer), events drained, nothing else: the floor for the session's Python.

The figure it follows is the proxy's CPU per command of bench/imap.py's one-by-one fetch
(`plain_fetch_seq_proxy_cpu_us_per_cmd`), without the network and TLS around it: less
bound to the machine's hour, so a change to the session shows here first. Each figure is
the best of `--rounds`.

    .venv/bin/python bench/imap_session.py [--count 1000] [--rounds 5] [--json]

`--json` prints one JSON object as the last line (`session_us_per_cmd`,
`framing_us_per_cmd`, `framing_over_session`).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.imap_views import make_message
from smime_proxy.imap.session import (
    Action,
    ImapSession,
    SendToClient,
    SessionSettings,
)
from smime_proxy.imap.wire.framing import ClientFramer, NeedData, ServerFramer

T = TypeVar("T")

PIECE = 4096  # Dovecot's imap process writes 4 KB pieces
CLASSIFY = b"BODY[HEADER.FIELDS (CONTENT-TYPE X-SMIME-STATUS)]"


def answer_pieces(number: int, uid: int, tag: bytes, message: bytes) -> list[bytes]:
    whole = (b"* %d FETCH (UID %d BODY[] {%d}\r\n" % (number, uid, len(message)) + message
             + b")\r\n" + tag + b" OK Fetch completed (0.001 + 0.000 secs).\r\n")
    return [whole[i : i + PIECE] for i in range(0, len(whole), PIECE)]


def ready_session(messages: list[bytes]) -> ImapSession:
    """Logged in, the folder selected and every message known plain."""
    session = ImapSession(SessionSettings(plaintext_login=True))

    def say(actions: list[Action]) -> bytes:
        return b"".join(a.data for a in actions if isinstance(a, SendToClient))

    session.start()
    session.upstream_data(b"* CAPABILITY IMAP4rev1 LITERAL+ IDLE AUTH=PLAIN\r\n"
                          b"~spx1 OK Pre-login capabilities listed.\r\n")
    session.client_data(b"a1 LOGIN alice secret\r\n")
    session.upstream_data(b"a1 OK [CAPABILITY IMAP4rev1 IDLE] Logged in\r\n")
    session.client_data(b"s SELECT INBOX\r\n")
    session.upstream_data(b"* %d EXISTS\r\n* OK [UIDVALIDITY 7] UIDs valid\r\n"
                          b"s OK [READ-WRITE] Done\r\n" % len(messages))
    session.client_data(b"f FETCH 1:* (BODY.PEEK[])\r\n")
    sorted_pass = b"".join(
        b"* %d FETCH (UID %d " % (n, n) + CLASSIFY + b" {2}\r\n\r\n BODY[] {%d}\r\n" % len(m)
        + m + b")\r\n" for n, m in enumerate(messages, 1))
    shown = say(session.upstream_data(sorted_pass + b"f OK Fetch completed.\r\n"))
    if not shown.endswith(b"f OK Fetch completed.\r\n"):
        raise SystemExit("the session did not answer the folder's first FETCH")
    return session


def run_session(session: ImapSession, commands: list[tuple[bytes, list[bytes]]]) -> None:
    for command, pieces in commands:
        session.client_data(command)
        actions: list[Action] = []
        for piece in pieces:
            if not session.take_literal_piece(piece):
                actions = session.upstream_data(piece)
        last = actions[-1] if actions else None
        if not (isinstance(last, SendToClient) and last.data.endswith(b"secs).\r\n")):
            raise SystemExit("the session did not answer a command")


def run_framing(commands: list[tuple[bytes, list[bytes]]]) -> None:
    server, client = ServerFramer(), ClientFramer()
    for command, pieces in commands:
        server.receive_data(command)
        while not isinstance(server.next_event(), NeedData):
            pass
        for piece in pieces:
            client.receive_data(piece)
            while not isinstance(client.next_event(), NeedData):
                pass


def best(rounds: int, prepare: Callable[[], T], run: Callable[[T], None]) -> float:
    """The least process CPU time of `run(prepare())` in `rounds`, `prepare` not timed."""
    times = []
    for _ in range(rounds):
        prepared = prepare()
        start = time.process_time()
        run(prepared)
        times.append(time.process_time() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    rng = random.Random(1)
    messages = [make_message(rng, rng.randrange(17_000, 21_000)) for _ in range(args.count)]
    commands = [(b"a%d UID FETCH %d BODY.PEEK[]\r\n" % (n, n),
                 answer_pieces(n, n, b"a%d" % n, m)) for n, m in enumerate(messages, 1)]
    per_session = best(args.rounds, lambda: ready_session(messages),
                       lambda session: run_session(session, commands)) / args.count * 1e6
    per_framing = best(args.rounds, lambda: commands, run_framing) / args.count * 1e6
    result = {"count": args.count, "rounds": args.rounds,
              "session_us_per_cmd": round(per_session, 1),
              "framing_us_per_cmd": round(per_framing, 1),
              "framing_over_session": round(per_framing / per_session, 3) if per_session else 0}
    print(f"session  {per_session:7.1f} µs per command (process CPU, best of {args.rounds})")
    print(f"framing  {per_framing:7.1f} µs per command, {result['framing_over_session']} of "
          "the session's")
    if args.json:
        print(json.dumps(result))


if __name__ == "__main__":
    main()
