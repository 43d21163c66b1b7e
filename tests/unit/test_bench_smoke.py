"""Smoke run of bench/crypto.py: it runs, and `--json` prints every documented key last.

No timing assertion: the numbers belong to the benchmark report, not to the test suite.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "crypto.py"

KEYS = [
    "sign_10k_per_s",
    "verify_10k_per_s",
    "encrypt_10k_per_s",
    "decrypt_10k_per_s",
    "encrypt_25m_s",
    "decrypt_25m_s",
    "peak_rss_25m_ratio",
    "stream_100m_decrypt_s",
    "openssl_sign_10k_per_s",
    "openssl_verify_10k_per_s",
    "openssl_encrypt_10k_per_s",
    "openssl_decrypt_10k_per_s",
    "openssl_encrypt_25m_s",
    "openssl_decrypt_25m_s",
    "openssl_stream_100m_decrypt_s",
    "sign_10k_speedup",
    "verify_10k_speedup",
    "encrypt_10k_speedup",
    "decrypt_10k_speedup",
    "encrypt_25m_speedup",
    "decrypt_25m_speedup",
    "stream_100m_decrypt_speedup",
]


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl CLI not installed")
def test_bench_crypto_quick_json() -> None:
    proc = subprocess.run(
        [sys.executable, str(BENCH), "--quick", "--json"],
        capture_output=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    lines = proc.stdout.decode().strip().splitlines()
    data = json.loads(lines[-1])
    assert isinstance(data, dict)
    missing = [key for key in KEYS if key not in data]
    assert not missing, missing
    for key in KEYS:
        value = data[key]
        assert isinstance(value, int | float), key
        assert math.isfinite(value) and value > 0, (key, value)
    assert len(lines) > 1, "a human-readable table precedes the JSON line"


def test_bench_imap_session_json() -> None:
    """bench/imap_session.py: the session answers every command of a small run (the script
    fails otherwise), and `--json` prints its keys last."""
    script = BENCH.parent / "imap_session.py"
    proc = subprocess.run(
        [sys.executable, str(script), "--count", "20", "--rounds", "1", "--json"],
        capture_output=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")[-3000:]
    data = json.loads(proc.stdout.decode().strip().splitlines()[-1])
    assert data["count"] == 20
    for key in ("session_us_per_cmd", "framing_us_per_cmd", "framing_over_session"):
        assert isinstance(data[key], int | float) and math.isfinite(data[key]), key
        assert data[key] >= 0, key
