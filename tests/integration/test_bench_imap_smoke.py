"""Smoke run of bench/imap.py: it runs against its own real upstream, measures every figure
without a failure, and `--json` prints every documented key last. No timing assertion:
numbers belong to the benchmark report."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench" / "imap.py"
KEYS = [
    *(f"{name}_{kind}" for name in ("plain_fetch_all", "plain_fetch_seq", "plain_sync",
                                    "plain_sync_first", "append_1m")
      for kind in ("ratio", "direct_s", "proxy_s")),
    *(f"{name}_{kind}" for name in ("plain_fetch_all", "plain_fetch_seq", "plain_sync",
                                    "plain_sync_first")
      for kind in ("direct_msgs_per_s", "proxy_msgs_per_s")),
    "encrypted_first_fetch_s", "encrypted_first_fetch_per_s",
    "encrypted_cached_fetch_s", "encrypted_cached_fetch_per_s", "encrypted_cached_fetch_ratio",
    "encrypted_sync_cached_s", "encrypted_sync_cached_per_s", "encrypted_sync_cached_ratio",
    "idle_connections", "idle_rss_before_mb", "idle_rss_mb", "idle_rss_growth_mb",
    "idle_rss_per_connection_kb", "idle_1000_rss_mb",
    "large_25m_mb", "large_25m_direct_s", "large_25m_proxy_s", "large_25m_rss_growth_mb",
    "large_25m_rss_ratio", "plain_fetch_seq_relay_s", "plain_fetch_seq_relay_ratio",
    "encrypted_open_cpu_ms_per_msg", "encrypted_open_parallel_per_s", "machine_rsa2048_sign_ms",
    "idle_after_fetch_rss_per_connection_kb",
    "plain_fetch_seq_proxy_cpu_us_per_cmd", "plain_fetch_seq_relay_cpu_us_per_cmd",
]


def test_bench_imap_quick_json() -> None:
    proc = subprocess.run([sys.executable, str(BENCH), "--quick", "--json"],
                          capture_output=True, timeout=600, check=False)
    out = proc.stdout.decode(errors="replace")
    assert proc.returncode == 0, (out[-3000:], proc.stderr.decode(errors="replace")[-3000:])
    data = json.loads(out.strip().splitlines()[-1])
    assert data["failures"] == []
    missing = [k for k in KEYS if k not in data]
    assert not missing, missing
    for key in KEYS:
        value = data[key]
        assert isinstance(value, int | float) and math.isfinite(value), key
        # CPU read in clock ticks of 10 ms: 40 commands may round to none
        assert value >= 0 if key.endswith("_cpu_us_per_cmd") else value > 0, key
    assert data["encrypted_not_opened"] == 0  # every encrypted message was shown opened
    assert data["idle_connections"] == 20  # --quick asks for 20


def test_bench_imap_ab_json() -> None:
    """bench/imap_ab.py with this checkout on both sides, one small round of each kind."""
    root = BENCH.parents[1]
    for what in ("seq", "sync", "first"):
        proc = subprocess.run(
            [sys.executable, str(root / "bench" / "imap_ab.py"), str(root), "--rounds", "1",
             "--count", "30", "--what", what, "--json"],
            capture_output=True, timeout=300, check=False)
        out = proc.stdout.decode(errors="replace")
        assert proc.returncode == 0, (out[-3000:], proc.stderr.decode(errors="replace")[-3000:])
        data = json.loads(out.strip().splitlines()[-1])
        assert data["what"] == what
        if what == "first":  # encrypted, every message opened (else the script fails)
            for side in ("A", "B"):
                assert data[f"{side}_per_s"] > 0 and data[f"{side}_cpu_ms_per_msg"] >= 0
            continue
        for side in ("direct", "A", "relay", "B"):
            for kind in ("s", "ratio"):
                value = data[f"{side}_{kind}"]
                assert isinstance(value, int | float) and math.isfinite(value) and value > 0
        for side in ("A", "B"):  # the proxy children's CPU was read (the relay's may be 0)
            assert data[f"{side}_cpu_us_per_command"] >= 0
