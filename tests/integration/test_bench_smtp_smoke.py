"""Smoke run of bench/smtp.py: it runs against its own real upstream, and `--json` prints
every documented key last. No timing assertion: numbers belong to the benchmark report."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench" / "smtp.py"
KEYS = [
    "direct_msgs_per_s", "passthrough_msgs_per_s", "sign_msgs_per_s",
    "sign_encrypt_msgs_per_s", "passthrough_ratio", "sign_ratio", "sign_encrypt_ratio",
    "large_25m_direct_s", "large_25m_passthrough_s", "large_25m_sign_encrypt_s",
    "rss_growth_25m_ratio", "rss_growth_25m_passthrough_ratio",
]


def test_bench_smtp_quick_json() -> None:
    proc = subprocess.run([sys.executable, str(BENCH), "--quick", "--json"],
                          capture_output=True, timeout=900, check=False)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")[-3000:]
    data = json.loads(proc.stdout.decode().strip().splitlines()[-1])
    missing = [k for k in KEYS if k not in data]
    assert not missing, missing
    for key in KEYS:
        value = data[key]
        assert isinstance(value, int | float) and math.isfinite(value) and value > 0, key
