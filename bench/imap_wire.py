"""Benchmark: framing a 20 MB stream of FETCH responses, buffered and streaming, against a
plain memory copy of the same bytes in the same run.

The stream is ~1000 `* n FETCH (UID n RFC822.SIZE s FLAGS (\\Seen) BODY[] {s}` responses of
about 20 KB each (mail-like text with CRLF lines inside the literals), fed to
`ClientFramer.receive_data` in socket-sized chunks (64 KiB by default), draining
`next_event()` after each chunk, as the I/O shell will.

- framing:   stream_threshold=None, every response handed on as one `Message`;
- streaming: stream_threshold=0, every literal handed on as LiteralStart/Chunk/End;
- memcpy:    each chunk copied into a preallocated buffer (the floor of any pass-through).

MB is 10^6 bytes; each figure is the best of `--repeat` runs. `--json` prints one JSON
object as the last line. Run: `.venv/bin/python bench/imap_wire.py [--json]`.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from collections.abc import Callable

from smime_proxy.imap.wire.framing import (
    ClientFramer,
    LiteralChunk,
    LiteralStart,
    Message,
    MessageTail,
    NeedData,
)


def make_stream(total: int, message_size: int, seed: int = 4) -> tuple[bytes, int, int]:
    """(stream, number of responses, total literal octets)."""
    rng = random.Random(seed)
    words = [b"lorem", b"ipsum", b"dolor", b"sit", b"amet", b"a1", b"OK", b"{12}", b")", b"*"]
    line_pool = []
    for _ in range(200):
        line = b" ".join(rng.choice(words) for _ in range(rng.randint(3, 14)))
        line_pool.append(line + b"\r\n")
    parts: list[bytes] = []
    size = count = literal_total = 0
    while size < total:
        count += 1
        body = bytearray(b"From: a@example.org\r\nSubject: bench\r\n\r\n")
        while len(body) < message_size:
            body += rng.choice(line_pool)
        head = b"* %d FETCH (UID %d RFC822.SIZE %d FLAGS (\\Seen) BODY[] {%d}\r\n" % (
            count,
            count,
            len(body),
            len(body),
        )
        response = head + bytes(body) + b")\r\n"
        parts.append(response)
        size += len(response)
        literal_total += len(body)
    parts.append(b"a1 OK FETCH completed\r\n")
    return b"".join(parts), count, literal_total


def chunked(stream: bytes, chunk_size: int) -> list[bytes]:
    return [stream[i : i + chunk_size] for i in range(0, len(stream), chunk_size)]


def run_framer(chunks: list[bytes], threshold: int | None) -> tuple[int, int]:
    """(messages, literal octets seen in chunks) after framing all chunks."""
    framer = ClientFramer(stream_threshold=threshold)
    messages = streamed = 0
    for chunk in chunks:
        framer.receive_data(chunk)
        while True:
            event = framer.next_event()
            if isinstance(event, NeedData):
                break
            if isinstance(event, LiteralChunk):
                streamed += len(event.data)
            elif isinstance(event, (Message, MessageTail)):
                messages += 1
            elif isinstance(event, LiteralStart):
                pass
    return messages, streamed


def run_memcpy(chunks: list[bytes], total: int) -> None:
    dest = bytearray(total)
    offset = 0
    for chunk in chunks:
        dest[offset : offset + len(chunk)] = chunk
        offset += len(chunk)


def best_time(action: Callable[[], object], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        action()
        best = min(best, time.perf_counter() - start)
    return best


def measure(
    size_mb: float = 20.0, message_size: int = 20_000, chunk_size: int = 65536, repeat: int = 5
) -> dict[str, float | int]:
    """The figures as a dict (also for other benchmarks, e.g. bench/imap_views.py)."""
    stream, count, literal_total = make_stream(int(size_mb * 1e6), message_size)
    chunks = chunked(stream, chunk_size)

    # Correctness first: both modes see every response and every literal octet.
    if run_framer(chunks, None) != (count + 1, 0) or run_framer(chunks, 0) != (
        count + 1,
        literal_total,
    ):
        raise AssertionError("the framer lost responses or literal octets")

    megabytes = len(stream) / 1e6
    t_framing = best_time(lambda: run_framer(chunks, None), repeat)
    t_streaming = best_time(lambda: run_framer(chunks, 0), repeat)
    t_memcpy = best_time(lambda: run_memcpy(chunks, len(stream)), repeat)
    return {
        "stream_bytes": len(stream),
        "responses": count,
        "chunk_size": chunk_size,
        "framing_mb_per_s": round(megabytes / t_framing, 1),
        "streaming_mb_per_s": round(megabytes / t_streaming, 1),
        "memcpy_mb_per_s": round(megabytes / t_memcpy, 1),
        "framing_vs_memcpy": round(t_memcpy / t_framing, 4),
        "streaming_vs_memcpy": round(t_memcpy / t_streaming, 4),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=float, default=20.0, help="stream size (10^6 bytes)")
    parser.add_argument("--message-size", type=int, default=20_000, help="literal size")
    parser.add_argument("--chunk-size", type=int, default=65536, help="receive_data size")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--json", action="store_true", help="print a JSON object last")
    args = parser.parse_args(argv)

    result = measure(args.size_mb, args.message_size, args.chunk_size, args.repeat)
    megabytes = int(result["stream_bytes"]) / 1e6
    count = result["responses"]
    print(f"stream: {megabytes:.1f} MB, {count} FETCH responses, {args.chunk_size}-byte reads")
    print(f"framing (buffered):  {result['framing_mb_per_s']:>10.1f} MB/s")
    print(f"framing (streaming): {result['streaming_mb_per_s']:>10.1f} MB/s")
    print(f"memcpy:              {result['memcpy_mb_per_s']:>10.1f} MB/s")
    print(
        f"ratio to memcpy: buffered {result['framing_vs_memcpy']:.3f}, "
        f"streaming {result['streaming_vs_memcpy']:.3f}"
    )
    if args.json:
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
