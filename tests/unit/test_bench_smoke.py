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
