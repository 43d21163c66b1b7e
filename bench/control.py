"""Control endpoint bench: idle daemon RSS and `GET /api/v1/status` latency on loopback.

Starts the real upstream (Dovecot + Postfix, smime_proxy.harness) and `smime-proxy serve` as a
subprocess whose control listener is plain HTTP on 127.0.0.1, warms the credential cache with
one request (one IMAP LOGIN upstream), then times sequential keep-alive `status` requests.
For scale it also times a direct IMAP LOGIN to Dovecot (what an uncached request costs).

Bar (issue 3): idle RSS < 80 MB, status p50 < 20 ms. Measured here, never asserted in tests.

Usage::

    .venv/bin/python bench/control.py [--requests 500] [--json]

`--json` prints one JSON object as the last line (`idle_rss_mb`, `status_p50_ms`,
`status_p95_ms`, `uncached_login_ms`, `imap_login_ms`).
"""

from __future__ import annotations

import argparse
import base64
import http.client
import imaplib
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from smime_proxy.harness import Upstream, start_upstream

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def write_config(workdir: Path, upstream: Upstream, control_port: int) -> Path:
    config: dict[str, Any] = {
        "listeners": {
            "imap": {"host": "127.0.0.1", "port": free_port(), "plaintext_loopback": True},
            "smtp": {"host": "127.0.0.1", "port": free_port(), "plaintext_loopback": True},
            "control": {"host": "127.0.0.1", "port": control_port, "plaintext_loopback": True},
        },
        "upstream": {
            "imap": {"host": upstream.host, "port": upstream.imap_port, "tls": "starttls",
                     "verify": True, "ca_file": str(upstream.ca_file)},
            "smtp": {"host": upstream.host, "port": upstream.submission_port,
                     "tls": "starttls", "verify": True, "ca_file": str(upstream.ca_file)},
        },
        "data_dir": str(workdir / "data"),
        "logging": {"level": "warning"},
    }
    path = workdir / "smime-proxy.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def wait_healthy(port: int, proc: subprocess.Popen[bytes], limit: float = 30.0) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"smime-proxy serve exited with {proc.returncode}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/health")
            if conn.getresponse().status == 200:
                conn.close()
                return
            conn.close()
        except OSError:
            pass
        time.sleep(0.05)
    raise RuntimeError("the daemon did not become healthy")


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index]


def bench(requests: int) -> dict[str, float]:
    workdir = Path(tempfile.mkdtemp(prefix="smime-bench-control-"))
    os.chmod(workdir, 0o711)  # noqa: S103 (the daemons' users need search permission)
    upstream = start_upstream(workdir / "upstream")
    proc: subprocess.Popen[bytes] | None = None
    try:
        # direct IMAP LOGIN (STARTTLS), for scale
        logins = []
        for _ in range(5):
            started = time.perf_counter()
            with imaplib.IMAP4(upstream.host, upstream.imap_port) as imap:
                imap.starttls(upstream.ssl_context())
                imap.login("alice", upstream.users["alice"])
            logins.append((time.perf_counter() - started) * 1000)

        port = free_port()
        config = write_config(workdir, upstream, port)
        env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
        proc = subprocess.Popen(
            [sys.executable, "-m", "smime_proxy", "serve", "--config", str(config)],
            env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_healthy(port, proc)
        token = base64.b64encode(f"alice:{upstream.users['alice']}".encode()).decode()
        headers = {"Authorization": f"Basic {token}", "Host": f"127.0.0.1:{port}"}
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

        def status() -> float:
            started = time.perf_counter()
            conn.request("GET", "/api/v1/status", headers=headers)
            response = conn.getresponse()
            response.read()
            if response.status != 200:
                raise RuntimeError(f"status answered {response.status}")
            return (time.perf_counter() - started) * 1000

        uncached = status()  # one IMAP LOGIN upstream, then cached
        for _ in range(20):
            status()
        times = [status() for _ in range(requests)]
        conn.close()
        time.sleep(1.0)
        idle = rss_mb(proc.pid)
        return {
            "idle_rss_mb": round(idle, 1),
            "status_p50_ms": round(statistics.median(times), 3),
            "status_p95_ms": round(percentile(times, 0.95), 3),
            "uncached_login_ms": round(uncached, 3),
            "imap_login_ms": round(statistics.median(logins), 3),
            "requests": requests,
        }
    finally:
        if proc is not None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        upstream.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--json", action="store_true", help="print one JSON object last")
    args = parser.parse_args()
    result = bench(args.requests)
    print(f"idle daemon RSS:            {result['idle_rss_mb']:.1f} MB   (bar < 80 MB)")
    print(f"status p50 / p95:           {result['status_p50_ms']:.2f} / "
          f"{result['status_p95_ms']:.2f} ms   (bar p50 < 20 ms; {args.requests} requests, "
          "keep-alive, credential cache warm)")
    print(f"first status (uncached):    {result['uncached_login_ms']:.2f} ms")
    print(f"direct IMAP STARTTLS LOGIN: {result['imap_login_ms']:.2f} ms (median of 5)")
    if args.json:
        print(json.dumps(result, sort_keys=True))


if __name__ == "__main__":
    main()
