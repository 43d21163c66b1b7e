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


def memory_contains(pid: int, needle: bytes) -> bool:
    """Whether any readable mapping of the process holds `needle` (/proc/PID/maps and
    /proc/PID/mem; needs the right to trace it: the same user, or root). Freed but not yet
    overwritten memory counts too, which is the point: a key that was ever decrypted in a
    process is usually still there."""
    found = False
    overlap = len(needle) - 1
    with open(f"/proc/{pid}/maps") as maps, open(f"/proc/{pid}/mem", "rb", 0) as mem:
        for line in maps:
            fields = line.split()
            span, perms = fields[0], fields[1]
            if not perms.startswith("r") or (len(fields) > 5 and fields[5] == "[vvar]"):
                continue
            start, end = (int(x, 16) for x in span.split("-"))
            tail = b""
            at = start
            while at < end and not found:
                size = min(1 << 22, end - at)
                try:
                    mem.seek(at)
                    chunk = mem.read(size)
                except (OSError, ValueError):
                    break
                found = needle in tail + chunk
                tail = chunk[-overlap:] if overlap else b""
                at += size
            if found:
                return True
    return False
