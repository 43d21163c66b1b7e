"""Benchmark: SMTP submission through the proxy against direct submission to Postfix.

In one run, against the real upstream (Debian's Postfix + Dovecot on 127.0.0.1, started
here): 200 messages of 10 KB, 4 concurrent clients each with its own connection and AUTH,
timed until every message is in bob's Maildir, sent
  - directly to Postfix's submission port (AUTH, no TLS),
  - through the proxy (client -> proxy without TLS on loopback, proxy -> Postfix STARTTLS)
    as pass-through (X-SMIME-Sign: no, X-SMIME-Encrypt: no), signed, signed + encrypted;
then one 25 MB message (a base64 attachment) through a fresh proxy process: time until
delivered and the proxy's peak RSS growth (VmHWM after minus VmRSS before, reset between).
Rounds are interleaved and the best of each is kept (the machine is shared).

    .venv/bin/python bench/smtp.py [--count 200] [--clients 4] [--rounds 2] [--quick] [--json]

`--json` prints one JSON object as the last line: `direct_msgs_per_s`,
`passthrough_msgs_per_s`, `sign_msgs_per_s`, `sign_encrypt_msgs_per_s`, `passthrough_ratio`,
`sign_ratio`, `sign_encrypt_ratio`, `large_25m_direct_s`, `large_25m_passthrough_s`,
`large_25m_sign_encrypt_s`, `rss_growth_25m_ratio` (sign+encrypt, the worst case),
`rss_growth_25m_passthrough_ratio`. Bars: sign+encrypt >= 0.5 x direct, pass-through >= 0.8 x,
RSS growth <= 4 x the message size. Needs root and the Debian packages of the test upstream.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import random
import shutil
import smtplib
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from smime_proxy.config import ListenerConfig, UpstreamEndpoint  # noqa: E402
from smime_proxy.harness import Upstream, start_upstream  # noqa: E402
from smime_proxy.keystore.contacts import Contacts  # noqa: E402
from smime_proxy.keystore.ports import MemoryAddressBook, MemoryKeyStore  # noqa: E402
from smime_proxy.keystore.service import SecureMail  # noqa: E402
from smime_proxy.policy import Policy  # noqa: E402
from smime_proxy.smtp.server import SmtpFront, SmtpSettings  # noqa: E402
from support.pki import NOW, make_ca, make_user  # noqa: E402
from support.procmem import reset_peak, status_bytes, stop_child  # noqa: E402

KEY_PASSWORD = "bench-secure-mail-pw"
MODES = {
    "passthrough": "X-SMIME-Sign: no\r\nX-SMIME-Encrypt: no\r\n",
    "sign": "X-SMIME-Sign: yes\r\nX-SMIME-Encrypt: no\r\n",
    "sign_encrypt": "X-SMIME-Sign: yes\r\nX-SMIME-Encrypt: yes\r\n",
}


# --- the proxy process ------------------------------------------------------------------


def proxy_child(work: Path) -> None:
    """Serve the SMTP front until stdin closes; print `PORT n` once listening."""
    from smime_proxy import event_loop
    from smime_proxy.memory import tune_memory

    tune_memory()  # as `smime-proxy serve` does at start (cli.main)
    cfg = json.loads((work / "child.json").read_text())
    secure_mail = SecureMail(MemoryKeyStore(), kdf_iterations=1000)
    contacts = Contacts(MemoryAddressBook())
    secure_mail.import_pkcs12("alice", (work / "alice.pem").read_bytes(), b"", KEY_PASSWORD)
    secure_mail.unlock("alice", KEY_PASSWORD, NOW)
    contacts.add("alice", (work / "bob-cert.pem").read_bytes())
    front = SmtpFront(
        secure_mail=secure_mail, contacts=contacts,
        listener=ListenerConfig(host="127.0.0.1", port=0, tls=None, plaintext_loopback=True),
        upstream=UpstreamEndpoint(host=cfg["host"], port=cfg["port"], tls="starttls",
                                  verify=True, ca_file=Path(cfg["ca_file"])),
        unlock_url="https://127.0.0.1:8443/", policy=Policy(), now=lambda: NOW,
        settings=SmtpSettings(),
    )

    async def main() -> None:
        await front.start()
        print(f"PORT {front.port}", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
        await front.stop(1.0)

    event_loop.run(main())  # the loop `smime-proxy serve` runs on


class ProxyProcess:
    def __init__(self, work: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--proxy-child", str(work)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().decode()
        if not line.startswith("PORT "):
            self.stop()
            raise SystemExit(f"proxy child did not start: {line!r}")
        self.port = int(line.split()[1])

    def status(self, field: str) -> int:
        return status_bytes(self.proc.pid, field)

    def reset_peak(self) -> None:
        reset_peak(self.proc.pid)

    def stop(self) -> None:
        stop_child(self.proc, 10)


# --- clients and delivery -----------------------------------------------------------------


def delivered(up: Upstream) -> int:
    """Messages in bob's Maildir/new (Dovecot's LMTP delivers there; nobody reads it)."""
    new = up.maildirs["bob"] / "new"
    return len(os.listdir(new)) if new.is_dir() else 0


def wait_delivered(up: Upstream, target: int, timeout: float) -> None:
    """Poll every 10 ms (listing thousands of files more often would steal CPU from the
    daemons being measured)."""
    deadline = time.monotonic() + timeout
    while delivered(up) < target:
        if time.monotonic() > deadline:
            raise SystemExit(f"only {delivered(up)} of {target} messages delivered in time")
        time.sleep(0.01)


def message(rng: random.Random, index: int, mode_headers: str, size: int) -> bytes:
    head = (f"From: Alice <alice@example.test>\r\nTo: Bob <bob@example.test>\r\n"
            f"Subject: bench {index}\r\nDate: Mon, 01 Jun 2026 12:00:00 +0000\r\n"
            f"Message-ID: <bench-{index}-{rng.randrange(10**9)}@example.test>\r\n"
            f"{mode_headers}MIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n"
            "\r\n").encode()
    words = [rng.choice(("lorem", "ipsum", "dolor", "sit", "amet", "elit", "magna"))
             for _ in range(size // 6)]
    lines = [" ".join(words[i:i + 12]) for i in range(0, len(words), 12)]
    body = ("\r\n".join(lines) + "\r\n").encode()[: size - len(head)]
    return head + body.rsplit(b"\r\n", 1)[0] + b"\r\n"


def send_all(port: int, messages: list[bytes], clients: int) -> None:
    errors: list[BaseException] = []

    def client(chunk: list[bytes]) -> None:
        try:
            with smtplib.SMTP("127.0.0.1", port, timeout=300) as c:
                c.login("alice", "alice-pw")
                for m in chunk:
                    refused = c.sendmail("alice@example.test", ["bob@example.test"], m)
                    assert not refused, refused
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=client, args=(messages[i::clients],))
               for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise SystemExit(f"a client failed: {errors[0]!r}")


def timed_run(up: Upstream, port: int, messages: list[bytes], clients: int) -> float:
    before = delivered(up)
    start = time.perf_counter()
    send_all(port, messages, clients)
    wait_delivered(up, before + len(messages), timeout=600)
    return time.perf_counter() - start


def large_message(rng: random.Random, size: int, mode_headers: str) -> bytes:
    head = (f"From: alice@example.test\r\nTo: bob@example.test\r\nSubject: large\r\n"
            f"{mode_headers}MIME-Version: 1.0\r\n"
            'Content-Type: multipart/mixed; boundary="b"\r\n\r\n'
            "--b\r\nContent-Type: text/plain\r\n\r\nA large attachment.\r\n"
            "--b\r\nContent-Type: application/octet-stream; name=big.bin\r\n"
            "Content-Transfer-Encoding: base64\r\n\r\n").encode()
    blob = rng.randbytes((size - len(head) - 20) * 3 // 4)
    b64 = base64.encodebytes(blob).replace(b"\n", b"\r\n")
    return head + b64 + b"--b--\r\n"


def run_large(up: Upstream, work: Path, data: bytes, mode: str) -> tuple[float, float]:
    """(seconds until delivered, peak RSS growth / message size) in a fresh proxy."""
    proxy = ProxyProcess(work)
    try:
        rng = random.Random(7)
        timed_run(up, proxy.port, [message(rng, 0, MODES[mode], 10_240)], 1)  # warm up
        baseline = proxy.status("VmRSS")
        proxy.reset_peak()
        seconds = timed_run(up, proxy.port, [data], 1)
        peak = proxy.status("VmHWM")
    finally:
        proxy.stop()
    return seconds, (peak - baseline) / len(data)


# --- main ----------------------------------------------------------------------------------


def run(count: int, clients: int, rounds: int, size: int, large_mb: int) -> dict[str, float]:
    base = Path(tempfile.mkdtemp(prefix="smime-bench-smtp-"))
    os.chmod(base, 0o711)  # noqa: S103 (the daemons' users need to reach their files)
    up = start_upstream(base / "upstream")
    work = base / "proxy"
    work.mkdir()
    try:
        ca = make_ca("Bench CA")
        alice = make_user("alice@example.test", ca)
        bob = make_user("bob@example.test", ca)
        (work / "alice.pem").write_bytes(alice.key_pem() + alice.cert_pem() + ca.cert_pem())
        (work / "bob-cert.pem").write_bytes(bob.cert_pem())
        (work / "child.json").write_text(json.dumps(
            {"host": up.host, "port": up.submission_port, "ca_file": str(up.ca_file)}))
        proxy = ProxyProcess(work)
        rng = random.Random(1)
        best: dict[str, float] = {}
        try:
            warm = [message(rng, i, MODES["sign_encrypt"], size) for i in range(8)]
            timed_run(up, proxy.port, warm, clients)
            timed_run(up, up.submission_port, warm, clients)
            for _ in range(rounds):
                for name in ("direct", "passthrough", "sign", "sign_encrypt"):
                    headers = MODES.get(name, "")
                    batch = [message(rng, i, headers, size) for i in range(count)]
                    port = up.submission_port if name == "direct" else proxy.port
                    seconds = timed_run(up, port, batch, clients)
                    best[name] = max(best.get(name, 0.0), count / seconds)
        finally:
            proxy.stop()
        results: dict[str, float] = {f"{k}_msgs_per_s": round(v, 1) for k, v in best.items()}
        for name in ("passthrough", "sign", "sign_encrypt"):
            results[f"{name}_ratio"] = round(best[name] / best["direct"], 3)
        big = large_mb * 1024 * 1024
        data_plain = large_message(rng, big, MODES["passthrough"])
        data_crypt = large_message(rng, big, MODES["sign_encrypt"])
        results["large_25m_direct_s"] = round(timed_run(up, up.submission_port,
                                                        [data_plain], 1), 3)
        t_pass, rss_pass = run_large(up, work, data_plain, "passthrough")
        t_crypt, rss_crypt = run_large(up, work, data_crypt, "sign_encrypt")
        results["large_25m_passthrough_s"] = round(t_pass, 3)
        results["large_25m_sign_encrypt_s"] = round(t_crypt, 3)
        results["rss_growth_25m_passthrough_ratio"] = round(rss_pass, 2)
        results["rss_growth_25m_ratio"] = round(rss_crypt, 2)
        return results
    finally:
        up.stop()
        shutil.rmtree(base, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--size", type=int, default=10_240)
    parser.add_argument("--large-mb", type=int, default=25)
    parser.add_argument("--quick", action="store_true", help="40 messages, 1 round, 5 MB")
    parser.add_argument("--json", action="store_true", help="print one JSON object last")
    parser.add_argument("--proxy-child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.proxy_child:
        proxy_child(Path(args.proxy_child))
        return
    if args.quick:
        args.count, args.rounds, args.large_mb = 40, 1, 5
    r = run(args.count, args.clients, args.rounds, args.size, args.large_mb)
    print(f"{args.count} x {args.size // 1024} KB, {args.clients} clients with AUTH, until "
          f"delivered (best of {args.rounds}):")
    print(f"  direct to Postfix        {r['direct_msgs_per_s']:8.1f} msg/s")
    for name, bar in (("passthrough", 0.8), ("sign", None), ("sign_encrypt", 0.5)):
        bar_text = f"   (bar >= {bar} x)" if bar else ""
        print(f"  proxy {name:<18} {r[f'{name}_msgs_per_s']:8.1f} msg/s  "
              f"{r[f'{name}_ratio']:.2f} x direct{bar_text}")
    print(f"one {args.large_mb} MB message until delivered: direct "
          f"{r['large_25m_direct_s']:.2f} s, pass-through {r['large_25m_passthrough_s']:.2f} s, "
          f"sign+encrypt {r['large_25m_sign_encrypt_s']:.2f} s")
    print(f"proxy peak RSS growth / message size: sign+encrypt {r['rss_growth_25m_ratio']:.2f} x, "
          f"pass-through {r['rss_growth_25m_passthrough_ratio']:.2f} x   (bar <= 4 x)")
    if args.json:
        print(json.dumps(r, sort_keys=True))


if __name__ == "__main__":
    main()
