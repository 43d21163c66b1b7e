"""Benchmark: all IMAP views of 1000 messages of about 20 KB.

"All views" of one message = parse it (`MessageView`), then BODYSTRUCTURE, BODY and ENVELOPE
(as IMAP values; a second figure also renders them with the wire layer's `render()`),
RFC822.SIZE, RFC822.HEADER, RFC822.TEXT, BODY[],
BODY[HEADER.FIELDS (...)], BODY[HEADER.FIELDS.NOT (...)], and for every part BODY[n],
BODY[n.MIME] and, for leaf parts, BINARY.SIZE[n] (transfer decoding). Bar: <= 0.5 ms per
message (>= 2000 messages/s), measured in process CPU time (the machine is shared; the wall
clock figure is printed too).

    .venv/bin/python bench/imap_views.py [--count 1000] [--rounds 5] [--json]

`--json` prints one JSON object as the last line (`views_per_s_20k`, `ms_per_message_20k`,
`parse_only_per_s_20k`, ...).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import random
import time

from smime_proxy.imap.views import MessageView
from smime_proxy.imap.views import ViewSection as Section
from smime_proxy.imap.wire.values import render
from smime_proxy.mime.transfer import UnknownCte
from smime_proxy.mime.tree import Part

_WORDS = [
    "lorem", "ipsum", "dolor", "sit", "amet", "consectetur", "adipiscing", "elit", "sed", "do",
    "eiusmod", "tempor", "incididunt", "ut", "labore", "et", "dolore", "magna", "aliqua",
    "enim", "ad", "minim", "veniam", "quis", "nostrud", "exercitation",
]


def make_message(rng: random.Random, target: int = 20_000) -> bytes:
    """A realistic ~20 KB message: text + html alternative and a base64 attachment."""

    def text(n: int) -> str:
        words = [rng.choice(_WORDS) for _ in range(n)]
        lines = [" ".join(words[i : i + 12]) for i in range(0, len(words), 12)]
        return "\r\n".join(lines) + "\r\n"

    plain = text(700)
    html = "<html><body><p>" + text(700).replace("\r\n", "</p>\r\n<p>") + "</p></body></html>\r\n"
    used = len(plain) + len(html) + 2000
    blob = rng.randbytes(max(1000, (target - used) * 3 // 4))
    b64 = base64.encodebytes(blob).decode("ascii").replace("\n", "\r\n")
    n = rng.randrange(1_000_000)
    headers = (
        f"Return-Path: <sender{n}@example.com>\r\n"
        f"Received: from mx{n}.example.com (mx.example.com [192.0.2.{n % 250}])\r\n"
        "\tby imap.example.org (Postfix) with ESMTPS id ABCDEF123\r\n"
        "\tfor <rcpt@example.org>; Mon, 1 Jan 2024 10:00:00 +0000 (UTC)\r\n"
        f"From: \"Sender {n}\" <sender{n}@example.com>\r\n"
        "To: Recipient <rcpt@example.org>, other@example.org\r\n"
        "Cc: \"Team\" <team@example.org>\r\n"
        f"Subject: Quarterly report {n} =?utf-8?q?f=C3=BCr?= review\r\n"
        "Date: Mon, 1 Jan 2024 10:00:00 +0000\r\n"
        f"Message-ID: <{n}.abc@example.com>\r\n"
        "MIME-Version: 1.0\r\n"
        'Content-Type: multipart/mixed; boundary="=_outer_boundary_0123456789"\r\n\r\n'
    )
    body = (
        "This is a multi-part message in MIME format.\r\n"
        "--=_outer_boundary_0123456789\r\n"
        'Content-Type: multipart/alternative; boundary="=_alt_boundary_9876543210"\r\n\r\n'
        "--=_alt_boundary_9876543210\r\n"
        "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 7bit\r\n\r\n"
        + plain
        + "--=_alt_boundary_9876543210\r\n"
        "Content-Type: text/html; charset=utf-8\r\n"
        "Content-Transfer-Encoding: quoted-printable\r\n\r\n"
        + html
        + "--=_alt_boundary_9876543210--\r\n"
        "--=_outer_boundary_0123456789\r\n"
        'Content-Type: application/pdf; name="report.pdf"\r\n'
        "Content-Transfer-Encoding: base64\r\n"
        'Content-Disposition: attachment; filename="report.pdf"\r\n\r\n'
        + b64
        + "--=_outer_boundary_0123456789--\r\n"
    )
    return (headers + body).encode("utf-8")


def _part_numbers(root: Part) -> list[tuple[tuple[int, ...], Part]]:
    out: list[tuple[tuple[int, ...], Part]] = []

    def walk(part: Part, prefix: tuple[int, ...]) -> None:
        for i, child in enumerate(part.children, 1):
            out.append(((*prefix, i), child))
            if child.is_multipart:
                walk(child, (*prefix, i))

    if root.is_multipart:
        walk(root, ())
    else:
        out.append(((1,), root))
    return out


_FIELDS = Section(text="HEADER.FIELDS", fields=(b"From", b"To", b"Subject", b"Date"))
_FIELDS_NOT = Section(text="HEADER.FIELDS.NOT", fields=(b"Received", b"Return-Path"))


def all_views(message: bytes, wire: bool = False) -> int:
    """Compute every view of one message (and, with `wire`, render the structured ones to wire
    bytes with smime_proxy.imap.wire.values.render); returns a checksum-like byte count."""
    view = MessageView(message)
    structured = (view.bodystructure(), view.body(), view.envelope())
    total = sum(len(render(value)) for value in structured) if wire else len(structured)
    total += view.size
    total += len(view.rfc822_header()) + len(view.rfc822_text()) + len(view.section(Section()))
    total += len(view.section(_FIELDS)) + len(view.section(_FIELDS_NOT))
    for numbers, part in _part_numbers(view.root):
        total += len(view.section(Section(numbers)))
        total += len(view.section(Section(numbers, "MIME")))
        if not part.is_multipart:
            with contextlib.suppress(UnknownCte):
                total += view.binary_size(numbers)
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    rng = random.Random(20_000)
    messages = [make_message(rng) for _ in range(args.count)]
    avg_size = sum(map(len, messages)) / len(messages)

    # CPU time of this process (the machine is shared: wall time is also reported)
    best_all = best_parse = best_wall = best_wire = float("inf")
    for _ in range(args.rounds):
        wall, start = time.perf_counter(), time.process_time()
        for message in messages:
            all_views(message)
        best_all = min(best_all, time.process_time() - start)
        best_wall = min(best_wall, time.perf_counter() - wall)
        start = time.process_time()
        for message in messages:
            all_views(message, wire=True)
        best_wire = min(best_wire, time.process_time() - start)
        start = time.process_time()
        for message in messages:
            MessageView(message)
        best_parse = min(best_parse, time.process_time() - start)

    views_per_s = len(messages) / best_all
    ms_per_message = best_all * 1000 / len(messages)
    result = {
        "messages": len(messages),
        "avg_message_bytes": round(avg_size),
        "views_per_s_20k": round(views_per_s, 1),
        "ms_per_message_20k": round(ms_per_message, 4),
        "parse_only_per_s_20k": round(len(messages) / best_parse, 1),
        "views_with_wire_render_per_s_20k": round(len(messages) / best_wire, 1),
        "ms_per_message_with_wire_render_20k": round(best_wire * 1000 / len(messages), 4),
        "wall_views_per_s_20k": round(len(messages) / best_wall, 1),
        "bar_ms_per_message": 0.5,
        "bar_met": ms_per_message <= 0.5,
    }
    print(f"{len(messages)} messages, {avg_size / 1024:.1f} KiB average, best of "
          f"{args.rounds} rounds, process CPU time")
    print(f"all views:  {views_per_s:10.0f} messages/s  {ms_per_message:.3f} ms/message "
          f"(bar 0.5 ms: {'met' if result['bar_met'] else 'NOT met'})")
    print(f"+ render:   {result['views_with_wire_render_per_s_20k']:10.0f} messages/s  "
          f"{result['ms_per_message_with_wire_render_20k']:.3f} ms/message "
          "(BODYSTRUCTURE, BODY, ENVELOPE also rendered by imap.wire.values.render)")
    print(f"parse only: {result['parse_only_per_s_20k']:10.0f} messages/s")
    print(f"wall clock: {result['wall_views_per_s_20k']:10.0f} messages/s (all views)")
    if args.json:
        print(json.dumps(result))


if __name__ == "__main__":
    main()
