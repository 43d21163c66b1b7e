"""`smime-proxy serve` as a real process: start, SIGHUP, SIGTERM, and bad configs (exit 2)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def write_config(directory: Path, *, control_port: int | None = None, extra: str = "") -> Path:
    ports = [free_port(), free_port(), control_port or free_port()]
    path = directory / "smime-proxy.yaml"
    path.write_text(
        "listeners:\n"
        f"  imap: {{host: 127.0.0.1, port: {ports[0]}, plaintext_loopback: true}}\n"
        f"  smtp: {{host: 127.0.0.1, port: {ports[1]}, plaintext_loopback: true}}\n"
        f"  control: {{host: 127.0.0.1, port: {ports[2]}, plaintext_loopback: true}}\n"
        "upstream:\n"
        "  imap: {host: 127.0.0.1, port: 1, tls: none, verify: false}\n"
        "  smtp: {host: 127.0.0.1, port: 1, tls: none, verify: false}\n"
        f"data_dir: {directory / 'data'}\n"
        "logging: {format: json, level: info}\n" + extra,
        encoding="utf-8",
    )
    return path


def serve(config: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "smime_proxy", "serve", "--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        cwd=ROOT,
    )


def read_until(proc: subprocess.Popen[str], needle: str, timeout: float = 30.0) -> list[str]:
    """stderr JSON log lines up to the one whose message contains `needle`."""
    assert proc.stderr is not None
    deadline = time.monotonic() + timeout
    lines: list[str] = []
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        lines.append(line)
        if needle in json.loads(line)["message"]:
            return lines
    raise AssertionError(f"{needle!r} not logged; got {lines}")


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[subprocess.Popen[str]]:
    proc = serve(write_config(tmp_path))
    yield proc
    if proc.poll() is None:
        proc.kill()
        proc.wait()
    for stream in (proc.stdout, proc.stderr):
        if stream is not None:
            stream.close()


def test_start_reload_and_graceful_stop(daemon: subprocess.Popen[str]) -> None:
    read_until(daemon, "ready")
    daemon.send_signal(signal.SIGHUP)
    read_until(daemon, "reloading")
    daemon.send_signal(signal.SIGTERM)
    assert daemon.wait(timeout=30) == 0
    assert daemon.stderr is not None
    rest = daemon.stderr.read()
    assert '"message": "stopped"' in rest


def run_serve(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "smime_proxy", "serve", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        check=False,
    )


def test_port_in_use_is_one_clear_line(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        config = write_config(tmp_path, control_port=busy.getsockname()[1])
        result = run_serve(config)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("smime-proxy: listeners.control.port:")
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("extra", "path"),
    [
        ("surprise: 1\n", "surprise"),
        ("unlock: {idle_timeout: soon}\n", "unlock.idle_timeout"),
        ("trust_roots: [/nonexistent/root.pem]\n", "trust_roots[0]"),
    ],
)
def test_bad_config_names_the_yaml_path(tmp_path: Path, extra: str, path: str) -> None:
    result = run_serve(write_config(tmp_path, extra=extra))
    assert result.returncode == 2
    assert path in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stderr


def test_missing_config_file(tmp_path: Path) -> None:
    result = run_serve(tmp_path / "absent.yaml")
    assert result.returncode == 2
    assert "not found" in result.stderr
