"""Smoke run of bench/at_rest.py: it runs against its own real Dovecot, and `--json` prints
every documented key last. No timing assertion: numbers belong to the benchmark report."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench" / "at_rest.py"
KEYS = ["direct_msgs_per_s", "passthrough_msgs_per_s", "store_encrypted_msgs_per_s",
        "passthrough_ratio", "store_encrypted_ratio", "folder_encrypt_msgs_per_s",
        "passthrough_filter_cpu_ms", "store_encrypted_filter_cpu_ms"]


def test_bench_at_rest_small_json() -> None:
    # 40 messages: the filter's CPU is read in clock ticks of 10 ms, and 5 messages (about
    # 20 ms of it) read as none once in a while (CI, December 4th 2026)
    proc = subprocess.run([sys.executable, str(BENCH), "--count", "40", "--rounds", "1",
                           "--json"], capture_output=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")[-3000:]
    data = json.loads(proc.stdout.decode().strip().splitlines()[-1])
    assert sorted(data) == sorted(KEYS)
    for key in KEYS:
        value = data[key]
        assert isinstance(value, int | float) and math.isfinite(value) and value > 0, key
