"""Benchmark: several proxy nodes (issue 12): the IMAP encrypted first fetch with one node
and with two, and what one unlock check costs with each place unlocks can live.

In one run, against the real Dovecot and Postfix (started here) and a real PostgreSQL and
Redis (started here, in temporary directories, as the tests start them):

- bob's key and alice's in the shared key store on PostgreSQL; `--count` encrypted messages
  of about 20 KB to bob (GCM, two in three signed by alice) appended to his INBOX directly.
- Two `smime-proxy serve` nodes sharing that store and unlocks in Redis (`sessions:`), each
  with its own data directory; bob unlocked once, from this process, through the same
  Redis (the nodes see it as any node's unlock).
- Rounds (`--rounds`, the median kept): bob's unlock is ended and made again first (every
  node drops what it opened under the old one: each fetch is a first fetch), then
    one_node    FETCH 1:* BODY.PEEK[] through node A (messages/s);
    two_nodes   the two halves at once, one through each node (messages/s, all together).
  Every message shown must carry an X-SMIME-Status without `error=`.
- Unlock checks (`SecureMail.agent_for`, the call each opening makes), 2000 each, p50 and p99
  in microseconds: unlocks in this process's memory, in Redis, and in a key agent process
  (`smime-proxy agent`, over its Unix socket).

On this 2-core machine two nodes share the cores with Dovecot and the client, so the ratio
says little about a real cluster (issue 12: report it); the check latencies are the per-node
cost of sharing.

    .venv/bin/python bench/cluster.py [--count 300] [--rounds 3] [--json]

`BENCH_CLUSTER_PROFILE=FILE` writes a cProfile of node A. `--json` prints one JSON object as
the last line: `one_node_first_fetch_per_s`,
`two_nodes_first_fetch_per_s`, `two_nodes_ratio`, and `check_p50_us_*` / `check_p99_us_*`
for `memory`, `redis`, `agent`. Needs root (as the tests) and the Debian packages
scripts/test.sh installs.
"""

from __future__ import annotations

import argparse
import base64
import imaplib
import json
import os
import random
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import yaml  # noqa: E402

from smime_proxy.agent.client import AgentClient  # noqa: E402
from smime_proxy.app import open_sessions, open_stores  # noqa: E402
from smime_proxy.config import SessionsConfig, StoreConfig  # noqa: E402
from smime_proxy.crypto.keyagent import InProcessKeyAgent  # noqa: E402
from smime_proxy.harness import Upstream, start_upstream  # noqa: E402
from smime_proxy.keystore.ports import MemoryKeyStore  # noqa: E402
from smime_proxy.keystore.service import SecureMail  # noqa: E402
from smime_proxy.smime import Recipient, encrypt_message, sign_message  # noqa: E402
from support.control import free_port  # noqa: E402
from support.pki import NOW, Identity, make_ca, make_user  # noqa: E402
from support.postgres import PostgresServer  # noqa: E402
from support.redis import RedisServer  # noqa: E402

SMP = "bench-cluster-secure-mail-pw"
SMIME_PROXY = Path(sys.executable).with_name("smime-proxy")


def messages(rng: random.Random, count: int, alice: Identity, bob: Identity) -> list[bytes]:
    agent = InProcessKeyAgent(alice.key, alice.cert, tuple(alice.chain))
    out = []
    for i in range(count):
        words = " ".join(rng.choice(("lorem", "ipsum", "dolor", "amet", "magna"))
                         for _ in range(3000))
        inner = (f"From: Alice <alice@example.test>\r\nTo: bob@example.test\r\n"
                 f"Subject: cluster {i}\r\nMIME-Version: 1.0\r\n"
                 f"Content-Type: text/plain\r\n\r\n{words}\r\n").encode()
        if i % 3:
            inner = sign_message(inner, agent, now=NOW)
        out.append(encrypt_message(inner, [Recipient(bob.cert, supports_gcm=True)]))
    return out


def node_config(work: Path, up: Upstream, name: str, ca_pem: Path, store: dict[str, str],
                sessions: dict[str, str]) -> tuple[Path, int]:
    plain = {"host": "127.0.0.1", "tls": None, "plaintext_loopback": True}
    port = free_port()
    endpoint = {"host": up.host, "verify": True, "ca_file": str(up.ca_file), "tls": "starttls"}
    config = {
        "listeners": {"imap": {**plain, "port": port}, "smtp": {**plain, "port": free_port()},
                      "control": {**plain, "port": free_port()}},
        "upstream": {"imap": {**endpoint, "port": up.imap_port},
                     "smtp": {**endpoint, "port": up.submission_port}},
        "data_dir": str(work / name / "data"),
        "trust_roots": [str(ca_pem)],
        "users": {"username_format": "%Ln", "local_domains": ["example.test"]},
        "logging": {"level": "warning"},
        "store": store, "sessions": sessions,
    }
    (work / name).mkdir(parents=True)
    path = work / name / "smime-proxy.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path, port


def wait_port(port: int, proc: subprocess.Popen[bytes]) -> None:
    import socket

    deadline = time.monotonic() + 30
    while True:
        if proc.poll() is not None:
            raise SystemExit(f"a node exited ({proc.returncode})")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise SystemExit("a node did not listen in 30 s") from None
            time.sleep(0.1)


def fetch(port: int, password: str, first: int, last: int) -> int:
    """FETCH first:last BODY.PEEK[] through a node; the messages shown opened."""
    imap = imaplib.IMAP4("127.0.0.1", port)
    try:
        imap.login("bob", password)
        imap.select("INBOX", readonly=True)
        _, data = imap.fetch(f"{first}:{last}", "(BODY.PEEK[])")
        shown = [part[1] for part in data if isinstance(part, tuple)]
        bad = [m for m in shown if b"X-SMIME-Status:" not in m[:2000]
               or b"error=" in m[:2000].split(b"\r\n\r\n", 1)[0]]
        if len(shown) != last - first + 1 or bad:
            raise SystemExit(f"{len(shown)} messages shown, {len(bad)} not opened")
        return len(shown)
    finally:
        imap.logout()


def latencies(check: Callable[[str, datetime], object], user: str,
              count: int = 2000) -> tuple[float, float]:
    """p50 and p99 of `check(user, now)` (SecureMail.agent_for) in microseconds."""
    samples = []
    for _ in range(count):
        start = time.perf_counter_ns()
        check(user, datetime.now(UTC))
        samples.append((time.perf_counter_ns() - start) / 1000)
    samples.sort()
    return samples[len(samples) // 2], samples[int(len(samples) * 0.99)]


def run(count: int, rounds: int) -> dict[str, float]:
    work = Path(tempfile.mkdtemp(prefix="smime-bench-cluster-"))
    work.chmod(0o711)
    up = start_upstream(work / "upstream")
    postgres, redis = PostgresServer.start(), RedisServer.start()
    procs: list[subprocess.Popen[bytes]] = []
    try:
        ca = make_ca("Bench Cluster CA")
        alice, bob = (make_user(f"{u}@example.test", ca) for u in ("alice", "bob"))
        ca_pem = work / "ca.pem"
        ca_pem.write_bytes(ca.cert_pem())
        _, dsn = postgres.fresh_database()
        key_file = work / "cluster.key"
        key_file.write_text(base64.b64encode(secrets.token_bytes(32)).decode())
        key_file.chmod(0o600)
        store = {"backend": "postgresql", "dsn": dsn}
        sessions = {"backend": "redis", "url": redis.url(), "cluster_key_file": str(key_file)}
        shared = open_stores(work / "local", store=StoreConfig("postgresql", dsn=dsn),
                             sessions=SessionsConfig("redis", url=redis.url(),
                                                     cluster_key_file=key_file))
        mail = shared.secure_mail
        for name, ident in (("alice", alice), ("bob", bob)):
            mail.import_pkcs12(name, ident.key_pem() + ident.cert_pem(), b"", SMP)
        rng = random.Random(12)
        with imaplib.IMAP4(up.host, up.imap_port) as imap:
            imap.login("bob", up.users["bob"])
            for message in messages(rng, count, alice, bob):
                imap.append("INBOX", "", None, message)
        ports = []
        for name in ("a", "b"):
            path, port = node_config(work, up, name, ca_pem, store, sessions)
            argv = [str(SMIME_PROXY), "serve", "--config", str(path)]
            profile = os.environ.get("BENCH_CLUSTER_PROFILE")
            if profile and name == "a":  # node A under cProfile (written when it stops)
                argv = [sys.executable, "-m", "cProfile", "-o", profile, "-m", "smime_proxy",
                        "serve", "--config", str(path)]
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL)
            procs.append(proc)
            wait_port(port, proc)
            ports.append(port)
        password = up.users["bob"]
        one, two = [], []
        for _ in range(rounds):
            mail.lock("bob")
            mail.unlock("bob", SMP, datetime.now(UTC))
            start = time.perf_counter()
            fetch(ports[0], password, 1, count)
            one.append(count / (time.perf_counter() - start))
            mail.lock("bob")
            mail.unlock("bob", SMP, datetime.now(UTC))
            half = count // 2
            threads = [threading.Thread(target=fetch, args=(ports[0], password, 1, half)),
                       threading.Thread(target=fetch, args=(ports[1], password, half + 1,
                                                            count))]
            start = time.perf_counter()
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            two.append(count / (time.perf_counter() - start))
        results = {"one_node_first_fetch_per_s": round(statistics.median(one), 1),
                   "two_nodes_first_fetch_per_s": round(statistics.median(two), 1)}
        results["two_nodes_ratio"] = round(results["two_nodes_first_fetch_per_s"]
                                           / results["one_node_first_fetch_per_s"], 3)

        # unlock checks: memory, Redis (the shared stores above), a key agent process
        memory = SecureMail(MemoryKeyStore(), kdf_iterations=1000)
        memory.import_pkcs12("bob", bob.key_pem() + bob.cert_pem(), b"", SMP)
        memory.unlock("bob", SMP, datetime.now(UTC))
        socket_path = work / "agent" / "agent.sock"
        agent_proc = subprocess.Popen([str(SMIME_PROXY), "agent", "--socket",
                                       str(socket_path)], stdout=subprocess.DEVNULL)
        procs.append(agent_proc)
        while not socket_path.exists():
            time.sleep(0.05)
        held = SecureMail(MemoryKeyStore(), kdf_iterations=1000,
                          holder=AgentClient(socket_path), sessions=open_sessions(None))
        held.import_pkcs12("bob", bob.key_pem() + bob.cert_pem(), b"", SMP)
        held.unlock("bob", SMP, datetime.now(UTC))
        for name, secure_mail in (("memory", memory), ("redis", mail), ("agent", held)):
            p50, p99 = latencies(secure_mail.agent_for, "bob")
            results[f"check_p50_us_{name}"] = round(p50, 1)
            results[f"check_p99_us_{name}"] = round(p99, 1)
        shared.close()
        return results
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(15)
        redis.stop()
        postgres.stop()
        up.stop()
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    results = run(args.count, args.rounds)
    for key, value in sorted(results.items()):
        print(f"{key:32} {value}")
    if args.json:
        print(json.dumps(results, sort_keys=True))


if __name__ == "__main__":
    main()
