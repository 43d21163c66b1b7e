"""Interleaved A/B of the IMAP front between two checkouts: what one change does to the
one-by-one fetch (or the resync), where the machine's speed moves too much between runs
for two separate `bench/imap.py` runs to say.

Against one Dovecot (started here, as bench/imap.py does, with its "plain" mailbox of
`--count` messages of about 20 KB): in each of `--rounds` rounds, a proxy child of each
checkout and a bare relay (`relay_child`) are started, each client reads the folder once
(the proxy learns its messages are plain, as a client that opened it before), then
`--what seq` (1000 x `UID FETCH n BODY.PEEK[]`, each awaited) or `--what sync` (`FETCH 1:*
(FLAGS BODYSTRUCTURE ENVELOPE RFC822.SIZE)`) is timed on direct, A, relay and B, the order
reversed every other round. `--what first`: the first `FETCH 1:* BODY.PEEK[]` of the
`--count` encrypted messages of "enc" through a new proxy child of A and of B (nothing
opened before), messages/s and the child's CPU per message in all its threads: what a
change to opening does. Each proxy child's CPU (user + system, /proc) is read around
its turn: CPU per command moves less with the machine's speed than the times do.

    .venv/bin/python bench/imap_ab.py OLD_CHECKOUT [NEW_CHECKOUT] [--rounds 5]
                                      [--count 1000] [--what seq|sync|first] [--json]

A checkout is a directory with this repository's bench/imap.py and smime_proxy/ (`git
worktree add /tmp/old COMMIT`); NEW defaults to this one. `--json` prints one object last:
per side the median seconds, ratio to direct and CPU µs per command (per message for sync).
Needs root and the Debian packages of the test upstream, as bench/imap.py does.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import imap as bench
from smime_proxy.harness import start_upstream

SYNC = "(FLAGS BODYSTRUCTURE ENVELOPE RFC822.SIZE)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("old", type=Path, help="checkout A")
    parser.add_argument("new", type=Path, nargs="?",
                        default=Path(__file__).resolve().parents[1], help="checkout B")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--what", choices=("seq", "sync", "first"), default="seq")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    scripts = {"A": args.old / "bench" / "imap.py", "B": args.new / "bench" / "imap.py"}
    for script in scripts.values():
        if not script.is_file():
            raise SystemExit(f"no {script}: a checkout of this repository is needed")
    base = Path(tempfile.mkdtemp(prefix="smime-bench-imap-ab-"))
    os.chmod(base, 0o711)  # noqa: S103 (the daemons' users need to reach their files)
    up = start_upstream(base / "upstream", users={bench.USER: bench.PASSWORD,
                                                        "alice": "alice-pw"})
    times: dict[str, list[tuple[float, float]]] = {}
    try:
        work = base / "proxy"
        work.mkdir()
        alice, bob = bench.prepare_work(work, up)
        env = bench.Env(up, work, up.ssl_context(), args.count)
        bench.fill(env, random.Random(1), alice, bob, 0, bench.MB)
        direct = env.direct("plain")
        uids = bench.uids_of(direct)
        bench.fetch_all(direct, "BODY.PEEK[]", args.count)  # Dovecot's caches, untimed
        if args.what == "first":
            direct.select("enc")
            bench.fetch_all(direct, "BODY.PEEK[]", args.count)
        direct.close()

        def run(client: bench.Client) -> None:
            if args.what == "seq":
                bench.fetch_seq(client, uids)
            else:
                bench.fetch_all(client, SYNC, args.count)

        for number in range(args.rounds if args.what == "first" else 0):
            for side in ("A", "B") if number % 2 == 0 else ("B", "A"):
                times.setdefault(side, []).append(first_fetch(work, scripts[side], args.count))
                seconds, cpu = times[side][-1]
                print(f"round {number + 1} {side:6s} {args.count / seconds:8.1f} messages/s  "
                      f"CPU {cpu / args.count * 1e3:6.2f} ms per message", file=sys.stderr)
        for number in range(0 if args.what == "first" else args.rounds):
            children = {side: bench.ProxyProcess(work, script=script)
                        for side, script in scripts.items()}
            children["relay"] = bench.ProxyProcess(work, bare_relay=True)
            clients: dict[str, bench.Client] = {}
            try:
                clients["direct"] = env.direct("plain")
                for side, child in children.items():
                    clients[side] = bench.connect(side, child.port, mailbox="plain",
                                                  starttls=child.tls)
                    if side != "relay":  # the proxy learns the folder, as in bench/imap.py
                        bench.fetch_all(clients[side], "BODY.PEEK[]", args.count)
                order = ["direct", "A", "relay", "B"]
                for side in order if number % 2 == 0 else order[::-1]:
                    measured = children.get(side)
                    cpu = measured.cpu_seconds()[0] if measured is not None else 0.0
                    start = time.perf_counter()
                    run(clients[side])
                    seconds = time.perf_counter() - start
                    cpu = measured.cpu_seconds()[0] - cpu if measured is not None else 0.0
                    times.setdefault(side, []).append((seconds, cpu))
                    print(f"round {number + 1} {side:6s} {seconds:8.3f} s  CPU "
                          f"{cpu / args.count * 1e6:6.0f} µs per command", file=sys.stderr)
            finally:
                for client in clients.values():
                    client.close()
                for child in children.values():
                    child.stop()
    finally:
        up.stop()
        shutil.rmtree(base, ignore_errors=True)
    result: dict[str, object] = {"what": args.what, "rounds": args.rounds, "count": args.count}
    if args.what == "first":
        for side, runs in times.items():
            rate = args.count / statistics.median(s for s, _ in runs)
            cpu_ms = statistics.median(c for _, c in runs) / args.count * 1e3
            result[f"{side}_per_s"], result[f"{side}_cpu_ms_per_msg"] = (
                round(rate, 1), round(cpu_ms, 2))
            print(f"{side:6s} {rate:8.1f} messages/s  CPU {cpu_ms:6.2f} ms per message")
        if args.json:
            print(json.dumps(result))
        return
    direct_s = statistics.median(s for s, _ in times["direct"])
    for side, runs in times.items():
        seconds = statistics.median(s for s, _ in runs)
        result[f"{side}_s"] = round(seconds, 4)
        result[f"{side}_ratio"] = round(direct_s / seconds, 4)
        if side != "direct":
            cpu = statistics.median(c for _, c in runs)
            result[f"{side}_cpu_us_per_command"] = round(cpu / args.count * 1e6, 1)
        print(f"{side:6s} {seconds:8.3f} s  {direct_s / seconds:6.3f} of Dovecot", end="")
        print("" if side == "direct" else
              f"  CPU {statistics.median(c for _, c in runs) / args.count * 1e6:6.0f} µs")
    if args.json:
        print(json.dumps(result))


def first_fetch(work: Path, script: Path, count: int) -> tuple[float, float]:
    """The first `FETCH 1:* BODY.PEEK[]` of "enc" through a new proxy child of `script`
    (nothing opened yet, bob's key unlocked): seconds, and the child's CPU in all its
    threads. Every message must come back opened."""
    child = bench.ProxyProcess(work, script=script)
    try:
        client = bench.connect("proxy", child.port, mailbox="enc", starttls=child.tls)
        try:
            cpu = child.cpu_seconds()[0]
            start = time.perf_counter()
            reply = bench.fetch_all(client, "BODY.PEEK[]", count, keep=True)
            seconds = time.perf_counter() - start
            cpu = child.cpu_seconds()[0] - cpu
        finally:
            client.close()
    finally:
        child.stop()
    if bench.not_opened(reply.literals):
        raise SystemExit(f"{script}: {bench.not_opened(reply.literals)} messages not opened")
    return seconds, cpu


if __name__ == "__main__":
    main()
