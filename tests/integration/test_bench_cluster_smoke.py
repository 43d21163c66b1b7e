"""Smoke run of bench/cluster.py: two nodes over its own real Dovecot, PostgreSQL and Redis,
and `--json` prints every documented key last. No timing assertion: numbers belong to the
benchmark report."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench" / "cluster.py"
KEYS = ["one_node_first_fetch_per_s", "two_nodes_first_fetch_per_s", "two_nodes_ratio",
        *(f"check_{q}_us_{where}" for q in ("p50", "p99")
          for where in ("memory", "redis", "agent"))]


def test_bench_cluster_small_json() -> None:
    proc = subprocess.run([sys.executable, str(BENCH), "--count", "6", "--rounds", "1",
                           "--json"], capture_output=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")[-3000:]
    assert b"Traceback" not in proc.stderr, proc.stderr.decode(errors="replace")[-3000:]
    data = json.loads(proc.stdout.decode().strip().splitlines()[-1])
    assert sorted(data) == sorted(KEYS)
    for key in KEYS:
        value = data[key]
        assert isinstance(value, int | float) and math.isfinite(value) and value > 0, key
