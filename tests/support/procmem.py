"""A benchmark's view of a child process's memory (Linux /proc) and its stop; shared by the
benches in bench/ that run the proxy in a child process."""

from __future__ import annotations

import subprocess
from pathlib import Path


def status_bytes(pid: int, field: str) -> int:
    """A memory field of /proc/PID/status (VmRSS, VmHWM...) in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(field)


def reset_peak(pid: int) -> None:
    """Start VmHWM again from the current RSS (clear_refs 5)."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")


def stop_child(proc: subprocess.Popen[bytes], timeout: float) -> None:
    """Close its stdin (the children serve until it closes), then wait, then kill."""
    if proc.stdin:
        proc.stdin.close()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
