"""Daemons as process-group leaders, and stopping a whole group (notes/harness.md gotchas 2-4).

A daemon is started with ``start_new_session=True`` so it leads its own process group, with
stdin from /dev/null and stdout/stderr appended to a log file (never a pipe: the Dovecot master
keeps its stderr open for its whole life). Stopping sends SIGTERM to the group and waits until
no member is left except zombies (PID 1 here reaps orphans slowly; a zombie holds no socket).
"""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path


def spawn(argv: Sequence[str], log_file: Path, *,
          open_files: int = 0) -> subprocess.Popen[bytes]:
    """Start ``argv`` as the leader of a new process group, output appended to ``log_file``.
    ``open_files``: raise the child's soft RLIMIT_NOFILE to at least this (never above the
    hard limit; the caller's own limit is left alone)."""
    # A blocked signal mask is inherited through exec: daemons started by a caller that
    # blocks SIGTERM (to sigwait for it) would ignore our SIGTERM. Clear it in the child.
    blocked = bool(signal.pthread_sigmask(signal.SIG_BLOCK, set()))
    nofile = _raised_nofile(open_files)

    def prepare() -> None:
        if blocked:
            signal.pthread_sigmask(signal.SIG_SETMASK, set())
        if nofile is not None:
            resource.setrlimit(resource.RLIMIT_NOFILE, nofile)

    with open(log_file, "ab") as log:
        return subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
            preexec_fn=prepare if blocked or nofile else None,  # noqa: PLW1509
        )


def _raised_nofile(wanted: int) -> tuple[int, int] | None:
    """(soft, hard) RLIMIT_NOFILE with the soft limit raised to ``wanted`` (at most the hard
    limit), or None when the current soft limit is already as high."""
    infinity = resource.RLIM_INFINITY
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != infinity:
        wanted = min(wanted, hard)
    if soft == infinity or wanted <= soft:
        return None
    return wanted, hard


def group_members(pgid: int) -> list[int]:
    """PIDs of the live (non-zombie) processes whose process group is ``pgid``."""
    members: list[int] = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        # "pid (comm) state ppid pgrp ...": comm may hold spaces and parentheses.
        fields = stat[stat.rfind(")") + 2 :].split()
        if len(fields) >= 3 and int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            members.append(int(entry.name))
    return members


def stop_group(pgid: int, proc: subprocess.Popen[bytes] | None = None, *,
               timeout: float = 5.0) -> None:
    """SIGTERM the process group ``pgid``, then SIGKILL it if anything is left after
    ``timeout`` seconds. ``proc`` (the leader, our child) is reaped so no zombie is left."""
    stop_groups([(pgid, proc)], timeout=timeout)


def stop_groups(groups: Sequence[tuple[int, subprocess.Popen[bytes] | None]], *,
                timeout: float = 5.0) -> None:
    """``stop_group`` for several groups at once: all get SIGTERM first, then we wait."""
    for pgid, _ in groups:
        _signal_group(pgid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    pending = list(groups)
    killed = False
    while pending:
        pending = [
            (pgid, proc) for pgid, proc in pending
            if (proc is not None and proc.poll() is None) or group_members(pgid)
        ]
        if not pending:
            break
        if time.monotonic() >= deadline:
            if killed:
                break
            for pgid, _ in pending:
                _signal_group(pgid, signal.SIGKILL)
            killed = True
            deadline = time.monotonic() + 2.0
        time.sleep(0.005)
    for _, proc in groups:
        if proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=2.0)


def kill_stale_group(pid_file: Path, marker: str) -> None:
    """If ``pid_file`` names a live process group whose leader's command line contains
    ``marker`` (our config path), stop that group: leftovers of a run that was SIGKILLed."""
    try:
        pgid = int(pid_file.read_text().strip())
        cmdline = Path(f"/proc/{pgid}/cmdline").read_bytes().replace(b"\0", b" ")
    except (OSError, ValueError):
        return
    if marker.encode() in cmdline:
        stop_group(pgid)


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, sig)
