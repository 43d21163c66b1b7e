"""A view of processes through Linux /proc: a child's memory and its stop (shared by the
benches in bench/ that run the proxy in a child process), the processes there are, and what
a process's memory holds."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Process:
    """One process as /proc/PID/stat and cmdline show it."""

    pid: int
    comm: str
    ppid: int
    pgrp: int
    cmdline: bytes  # its arguments, NUL-separated


def processes() -> Iterator[Process]:
    """Every process there is now (one that ends while it is read is passed over)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        # "pid (comm) state ppid pgrp ...": comm may hold spaces and parentheses
        fields = stat[stat.rindex(")") + 2 :].split()
        yield Process(int(entry.name), stat[stat.index("(") + 1 : stat.rindex(")")],
                      int(fields[1]), int(fields[2]), cmdline)


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
