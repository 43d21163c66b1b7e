"""Benchmark: LMTP delivery through the Store Encrypted filter against direct delivery to
Dovecot's LMTP.

In one run, against the real Dovecot (started here on 127.0.0.1): 500 messages of 20 KB,
4 concurrent LMTP clients, each on one kept connection (as Postfix caches its LMTP
connections), one message per transaction, timed until every message is in the
recipient's Maildir, delivered
  - directly to Dovecot's LMTP (to alice),
  - through the filter (a separate process, as `smime-proxy serve` runs it) to carol, who
    does not store encrypted (pass-through),
  - through the filter to bob, whose mail is stored encrypted (sealed to his certificate).
Rounds are interleaved and the best of each is kept (the machine is shared).

    .venv/bin/python bench/at_rest.py [--count 500] [--clients 4] [--rounds 2] [--json]

`--json` prints one JSON object as the last line: `direct_msgs_per_s`,
`passthrough_msgs_per_s`, `store_encrypted_msgs_per_s`, `passthrough_ratio`,
`store_encrypted_ratio`, `passthrough_filter_cpu_ms` and `store_encrypted_filter_cpu_ms` (the
filter process's CPU per message, the lowest of the rounds), and
`folder_encrypt_msgs_per_s` (`at_rest.convert`, as `smime-proxy store encrypt --all` runs
it, on a folder of COUNT messages). Bars (issue 11):
store_encrypted >= 0.5 x direct; folder encryption >= 200 msg/s.
`BENCH_AT_REST_PROFILE=FILE` writes a cProfile of the filter process. Needs root and the
Debian packages of the test upstream.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from smime_proxy.accounts import Accounts  # noqa: E402
from smime_proxy.config import ListenerConfig, UpstreamEndpoint  # noqa: E402
from smime_proxy.harness import Upstream, start_upstream  # noqa: E402
from smime_proxy.harness.upstream import default_config_dir  # noqa: E402
from smime_proxy.keystore.ports import MemoryKeyStore  # noqa: E402
from smime_proxy.keystore.service import SecureMail  # noqa: E402
from smime_proxy.lmtp.server import LmtpFront  # noqa: E402
from smime_proxy.lmtp.upstream import StorePool  # noqa: E402
from smime_proxy.policy import parse_policy  # noqa: E402
from support.pki import NOW, Identity, make_ca, make_user  # noqa: E402
from support.procmem import stop_child  # noqa: E402

KEY_PASSWORD = "bench-secure-mail-pw"


def filter_child(work: Path) -> None:
    """Serve the LMTP filter until stdin closes; print `PORT n` once listening."""
    from smime_proxy import event_loop

    cfg = json.loads((work / "child.json").read_text())
    secure_mail = SecureMail(MemoryKeyStore(), kdf_iterations=1000)
    secure_mail.import_pkcs12("bob", (work / "bob.pem").read_bytes(), b"", KEY_PASSWORD)
    front = LmtpFront(
        secure_mail=secure_mail,
        listener=ListenerConfig("127.0.0.1", 0, None, plaintext_loopback=True),
        upstream=UpstreamEndpoint(cfg["host"], cfg["port"], "none", False, None),
        accounts=Accounts("%Ln"),
        policy=parse_policy({"users": {"bob@example.test": {"store_encrypted": True}}}),
        now=lambda: NOW)

    async def main() -> None:
        await front.start()
        print(f"PORT {front.port}", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
        await front.stop(1.0)

    profile = os.environ.get("BENCH_AT_REST_PROFILE")
    if profile:  # a cProfile of the filter process, for finding where its time goes
        import cProfile

        cProfile.runctx("event_loop.run(main())", globals(),
                        {"main": main, "event_loop": event_loop}, profile)
    else:
        event_loop.run(main())  # the loop `smime-proxy serve` runs on


def delivered(up: Upstream, user: str) -> int:
    new = up.maildirs[user] / "new"
    return len(os.listdir(new)) if new.is_dir() else 0


def message(rng: random.Random, index: int, to: str, size: int) -> bytes:
    head = (f"From: Dave <dave@example.org>\r\nTo: {to}\r\nSubject: at rest {index}\r\n"
            f"Message-ID: <rest-{index}-{rng.randrange(10**9)}@example.org>\r\n"
            "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n").encode()
    words = [rng.choice(("lorem", "ipsum", "dolor", "sit", "amet")) for _ in range(size // 6)]
    lines = [" ".join(words[i:i + 12]) for i in range(0, len(words), 12)]
    return head + ("\r\n".join(lines) + "\r\n").encode()[: size - len(head)] + b"\r\n"


async def send_all(port: int, to: str, messages: list[bytes], clients: int) -> None:
    queue = list(reversed(messages))

    async def client() -> None:
        # one kept connection per client, as Postfix's LMTP client caches its connections
        # (lmtp_connection_cache_on_demand): a transaction per message, not a connection
        pool = StorePool("127.0.0.1", port, step_seconds=120, size=1)
        try:
            while queue:
                data = queue.pop()
                [reply] = await pool.deliver("dave@example.org", [to], data)
                if reply is None or reply.code != 250:
                    raise SystemExit(f"delivery failed: {reply}")
        finally:
            await pool.close()

    await asyncio.gather(*(client() for _ in range(clients)))


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (/proc/PID/stat)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def timed(up: Upstream, port: int, user: str, messages: list[bytes], clients: int) -> float:
    before = delivered(up, user)
    start = time.perf_counter()
    asyncio.run(send_all(port, f"{user}@example.test", messages, clients))
    deadline = time.monotonic() + 600
    while delivered(up, user) < before + len(messages):
        if time.monotonic() > deadline:
            raise SystemExit("not every message was delivered in time")
        time.sleep(0.01)
    return time.perf_counter() - start


def folder_rate(up: Upstream, owner: Identity, messages: list[bytes], work: Path) -> float:
    """Messages per second of `at_rest.convert` encrypting a folder of `messages` in place
    (bob's, over IMAP to Dovecot, journaled), appended there first."""
    import imaplib

    from smime_proxy.at_rest.convert import Journal, StoredMessages, convert
    from smime_proxy.imap.upstream import authenticate, close_client, open_client
    from smime_proxy.smime import seal_stored_copy

    with imaplib.IMAP4(up.host, up.imap_port) as imap:
        imap.login("bob", up.users["bob"])
        imap.create("Archive")
        for data in messages:
            imap.append("Archive", "(\\Seen)", None, data)

    async def main() -> float:
        client = await open_client(UpstreamEndpoint(up.host, up.imap_port, "none", False, None),
                                   connect_timeout=10, handshake_timeout=10)
        try:
            assert await authenticate(client, "bob", up.users["bob"])
            stored = StoredMessages(client, "Archive")
            await stored.select()
            start = time.perf_counter()
            uids = await stored.candidates("encrypt")
            done = await convert(stored, Journal(work / "journal.jsonl"), uids,
                                 lambda m: seal_stored_copy(m, owner.cert))
            seconds = time.perf_counter() - start
            if done.done != len(messages):
                raise SystemExit(f"only {done.done} of {len(messages)} encrypted")
            return len(messages) / seconds
        finally:
            await close_client(client)

    return asyncio.run(main())


def run(count: int, clients: int, rounds: int, size: int,
        mail_fsync: str = "optimized") -> dict[str, float]:
    base = Path(tempfile.mkdtemp(prefix="smime-bench-rest-"))
    os.chmod(base, 0o711)  # noqa: S103 (the daemons' users need to reach their files)
    config_dir = None
    if mail_fsync != "optimized":  # Dovecot's templates with another mail_fsync
        config_dir = base / "upstream-config"
        shutil.copytree(default_config_dir(), config_dir)
        with (config_dir / "dovecot.conf").open("a") as conf:
            conf.write(f"\nmail_fsync = {mail_fsync}\n")
    up = start_upstream(base / "upstream", config_dir=config_dir)
    work = base / "filter"
    work.mkdir()
    try:
        ca = make_ca("Bench CA")
        bob = make_user("bob@example.test", ca)
        (work / "bob.pem").write_bytes(bob.key_pem() + bob.cert_pem() + ca.cert_pem())
        (work / "child.json").write_text(json.dumps({"host": up.host, "port": up.lmtp_port}))
        child = subprocess.Popen([sys.executable, __file__, "--filter-child", str(work)],
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        assert child.stdout is not None
        line = child.stdout.readline().decode()
        if not line.startswith("PORT "):
            stop_child(child, 10)
            raise SystemExit(f"filter did not start: {line!r}")
        port = int(line.split()[1])
        rng = random.Random(1)
        best: dict[str, float] = {}
        cpu: dict[str, float] = {}
        try:
            for _ in range(rounds):
                # one user per way, so that no way delivers into a fuller Maildir than
                # another (Dovecot and the delivery count slow down as new/ grows)
                for name, target, user in (("direct", up.lmtp_port, "alice"),
                                           ("passthrough", port, "carol"),
                                           ("store_encrypted", port, "bob")):
                    batch = [message(rng, i, f"{user}@example.test", size)
                             for i in range(count)]
                    cpu_before = cpu_seconds(child.pid)
                    seconds = timed(up, target, user, batch, clients)
                    best[name] = max(best.get(name, 0.0), count / seconds)
                    if name != "direct":  # the filter process's CPU per message
                        used = (cpu_seconds(child.pid) - cpu_before) * 1000 / count
                        cpu[name] = min(cpu.get(name, used), used)
        finally:
            stop_child(child, 10)
        results = {f"{k}_msgs_per_s": round(v, 1) for k, v in best.items()}
        for name in ("passthrough", "store_encrypted"):
            results[f"{name}_ratio"] = round(best[name] / best["direct"], 3)
            results[f"{name}_filter_cpu_ms"] = round(cpu[name], 3)
        results["folder_encrypt_msgs_per_s"] = round(
            folder_rate(up, bob, [message(rng, i, "bob@example.test", size)
                                  for i in range(count)], work), 1)
        return results
    finally:
        up.stop()
        shutil.rmtree(base, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--count", type=int, default=500)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--size", type=int, default=20 * 1024)
    parser.add_argument("--json", action="store_true", help="print one JSON object last")
    parser.add_argument("--mail-fsync", choices=("optimized", "always", "never"),
                        default="optimized",
                        help="Dovecot's mail_fsync for both paths (never: no disk flush in "
                             "the timings, the filter's own cost stands out)")
    parser.add_argument("--filter-child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.filter_child:
        filter_child(Path(args.filter_child))
        return
    results = run(args.count, args.clients, args.rounds, args.size, args.mail_fsync)
    for key, value in sorted(results.items()):
        print(f"{key:28} {value}")
    if args.json:
        print(json.dumps(results, sort_keys=True))


if __name__ == "__main__":
    main()
