"""Dovecot's imaptest for the tests: built once from the copy in tests/tools/imaptest/ (CI has no
../shared), cached outside the repository, run, and its output parsed.

- `build()` runs `tests/tools/imaptest/build.sh` into `~/.cache/smime-proxy/imaptest-<hash>`
  (`$XDG_CACHE_HOME` when set), the hash over the archive, the patch and build.sh, so a second
  session, or a second checkout, does not rebuild. Parallel sessions wait on a lock file.
- `groups()`: the compliance suite's test groups (one file each) and the capabilities each
  needs, read from the archive, so tests can be parametrized before anything is built.
- `run()`: one imaptest run (compliance with `test=`, or stress with `secs=`); parsed by
  `parse_compliance()` (the summary lines and every `*** Test` failure block) and
  `parse_stress()` (commands from the `Totals:` table, `Error:` lines).
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import shutil
import subprocess
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

TOOL_DIR = Path(__file__).resolve().parents[1] / "tools" / "imaptest"
ARCHIVE = TOOL_DIR / "imaptest-924f619.tar.gz"
SOURCES = (ARCHIVE, TOOL_DIR / "debian-2.3.19-parser.patch", TOOL_DIR / "build.sh")
TESTS_IN_ARCHIVE = "imaptest/src/tests/"
BUILD_TIMEOUT = 600.0


class ImaptestError(Exception):
    """imaptest could not be built, or a run ended without its summary."""


@dataclass(frozen=True)
class Imaptest:
    binary: Path
    """The wrapper script (sets the Dovecot library path)."""
    tests: Path
    """The compliance suite: one file per test group (and `.mbox` files they use)."""


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "smime-proxy"


def source_hash() -> str:
    digest = hashlib.sha256()
    for path in SOURCES:
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def build() -> Imaptest:
    """The built imaptest, building it first if this source hash has no build yet."""
    out = cache_root() / f"imaptest-{source_hash()}"
    built = Imaptest(out / "imaptest", out / "tests")
    if _complete(built):
        return built
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out.parent / f"{out.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another session may be building the same one
        if _complete(built):
            return built
        # build.sh writes a wrapper holding its OUTDIR: build in place, but only a finished
        # build gets the `complete` mark, and a half-built directory is started afresh
        shutil.rmtree(out, ignore_errors=True)
        try:
            proc = subprocess.run(["bash", str(TOOL_DIR / "build.sh"), str(out)],
                                  capture_output=True, timeout=BUILD_TIMEOUT, check=False)
        except subprocess.TimeoutExpired:
            raise ImaptestError(f"building imaptest took over {BUILD_TIMEOUT:.0f} s") from None
        if proc.returncode != 0 or not built.binary.is_file():
            tail = (proc.stdout + proc.stderr).decode(errors="replace")[-3000:]
            raise ImaptestError(
                f"building imaptest failed (exit {proc.returncode}); needs the Debian packages "
                f"dovecot-dev build-essential autoconf automake libtool pkg-config "
                f"(scripts/test.sh installs them):\n{tail}")
        (out / "complete").write_text(source_hash() + "\n")
    return built


def _complete(built: Imaptest) -> bool:
    return (built.binary.parent / "complete").is_file() and built.binary.is_file()


def groups() -> dict[str, frozenset[str]]:
    """Test group name -> the capabilities it requires (upper case), from the archive."""
    found: dict[str, frozenset[str]] = {}
    with tarfile.open(ARCHIVE) as archive:
        for member in archive.getmembers():
            name = member.name.removeprefix(TESTS_IN_ARCHIVE)
            if (not member.name.startswith(TESTS_IN_ARCHIVE) or not member.isfile()
                    or "/" in name or name.endswith(".mbox") or name.startswith(".")):
                continue
            stream = archive.extractfile(member)
            assert stream is not None
            found[name] = _required_capabilities(stream.read())
    return dict(sorted(found.items()))


def _required_capabilities(text: bytes) -> frozenset[str]:
    """The `capabilities:` line of a test's header (the lines before the first empty one)."""
    for line in text.split(b"\n\n", 1)[0].splitlines():
        key, _, value = line.partition(b":")
        if key.strip().lower() == b"capabilities":
            return frozenset(value.decode(errors="replace").upper().split())
    return frozenset()


@dataclass
class RunOutput:
    argv: list[str]
    returncode: int
    text: str


def run(tool: Imaptest, port: int, user: str, password: str, *, extra: Sequence[str] = (),
        timeout: float = 120.0) -> RunOutput:
    argv = [str(tool.binary), "host=127.0.0.1", f"port={port}", f"user={user}",
            f"pass={password}", *extra]
    try:
        proc = subprocess.run(argv, capture_output=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise ImaptestError(f"imaptest did not end in {timeout:.0f} s: {argv[1:]}") from None
    text = (proc.stdout + proc.stderr).decode(errors="replace")
    return RunOutput([*argv[:4], "pass=***", *argv[5:]], proc.returncode, text)


# --- compliance ----------------------------------------------------------------------------

_SUMMARY = re.compile(
    r"^(?P<groups>\d+) test groups: (?P<failed>\d+) failed, (?P<skipped>\d+) skipped", re.M)
_COUNTS = re.compile(r"^(?P<kind>base protocol|extensions): (?P<failed>\d+)/(?P<total>\d+) "
                     r"individual commands failed", re.M)
_FAILURE = re.compile(r"^\*\*\* Test (?P<name>\S+) ", re.M)


@dataclass(frozen=True)
class Compliance:
    groups: int
    failed_groups: int
    skipped_groups: int
    base_failed: int
    base_total: int
    ext_failed: int
    ext_total: int
    failures: dict[str, list[str]] = field(default_factory=dict, compare=False)
    """group -> its `*** Test ...` blocks, as imaptest printed them."""
    errors: list[str] = field(default_factory=list, compare=False)
    """`Error:` lines (connection and login trouble)."""

    @property
    def commands(self) -> int:
        """Commands run (0: the group was skipped for a missing capability)."""
        return self.base_total + self.ext_total

    @property
    def outcome(self) -> tuple[int, int, int, int, int, int]:
        """What must be equal direct and through the proxy."""
        return (self.failed_groups, self.skipped_groups, self.base_failed, self.base_total,
                self.ext_failed, self.ext_total)

    def report(self) -> str:
        lines = [f"{self.groups} groups: {self.failed_groups} failed, {self.skipped_groups} "
                 f"skipped; base {self.base_failed}/{self.base_total}, extensions "
                 f"{self.ext_failed}/{self.ext_total}"]
        lines += self.errors[:10]
        for blocks in self.failures.values():
            lines += blocks
        return "\n".join(lines)


def parse_compliance(output: RunOutput) -> Compliance:
    text = output.text
    summary = _SUMMARY.search(text)
    counts = {m["kind"]: (int(m["failed"]), int(m["total"])) for m in _COUNTS.finditer(text)}
    if summary is None or len(counts) != 2:
        raise ImaptestError(f"no imaptest summary (exit {output.returncode}) from "
                            f"{output.argv[1:]}:\n{text[-3000:]}")
    failures: dict[str, list[str]] = {}
    for block in re.split(r"\n\s*\n", text):
        block = block.strip()
        match = _FAILURE.match(block)
        if match is not None:
            failures.setdefault(match["name"], []).append(block)
    errors = [line for line in text.splitlines() if line.startswith(("Error:", "Panic:",
                                                                       "Fatal:"))]
    return Compliance(
        groups=int(summary["groups"]), failed_groups=int(summary["failed"]),
        skipped_groups=int(summary["skipped"]),
        base_failed=counts["base protocol"][0], base_total=counts["base protocol"][1],
        ext_failed=counts["extensions"][0], ext_total=counts["extensions"][1],
        failures=failures, errors=errors)


# --- stress --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Stress:
    commands: int
    seconds: float
    errors: list[str]
    """Every `Error:` line (imaptest's own checks of the server's answers, and connection
    trouble)."""

    @property
    def rate(self) -> float:
        return self.commands / self.seconds if self.seconds else 0.0


def parse_stress(output: RunOutput, seconds: float) -> Stress:
    """The `Totals:` table: a header line of command names, a percentage line, a separator,
    then the counts (as bench/imap.py reads it)."""
    lines = output.text.splitlines()
    if "Totals:" not in lines or len(lines) < lines.index("Totals:") + 5:
        raise ImaptestError(f"imaptest: no totals (exit {output.returncode}):\n"
                            + "\n".join(lines[-20:]))
    totals = lines[lines.index("Totals:") + 4]
    commands = sum(int(x) for x in totals.split())
    errors = [line for line in lines if "Error:" in line or line.startswith(("Panic:",
                                                                              "Fatal:"))]
    return Stress(commands, seconds, errors)
