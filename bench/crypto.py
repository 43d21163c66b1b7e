#!/usr/bin/env python3
"""S/MIME core benchmark: our in-process recipes against the `openssl cms` CLI, same run.

Measures (RSA-2048 keys, fresh test PKI):
- 10 KB messages: sign, verify, encrypt, decrypt (messages per second), in-process, and the
  same operations by `openssl cms` (one process per message, as a mail filter would run it);
- 25 MB message: encrypt and decrypt (seconds), and the peak RSS growth of each as a multiple of
  the message size, measured in a fresh subprocess (VmHWM from /proc/self/status, or
  getrusage's ru_maxrss) - openssl's peak RSS for the same operation comes from wait4();
- a 100 MB message encrypted by `openssl cms -encrypt -stream` (BER, indefinite lengths),
  decrypted by us and by openssl (seconds).

Ratios: `*_speedup` = how many times faster we are than openssl (> 1: we are faster).
Usage: `bench/crypto.py [--quick] [--json]`; `--json` prints one JSON object as the last line.
`--quick` shrinks sizes and repetitions for a smoke run (same keys, meaningless numbers).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from cryptography.hazmat.primitives import serialization  # noqa: E402

from smime_proxy.crypto.keyagent import InProcessKeyAgent  # noqa: E402
from smime_proxy.smime import (  # noqa: E402
    Recipient,
    decrypt_message,
    encrypt_message,
    sign_message,
    verify_message,
)
from support.pki import NOW, Identity, make_ca, make_user  # noqa: E402

SENDER = "bench@example.test"
MB = 1024 * 1024


@dataclass(frozen=True)
class Sizes:
    small: int  # bytes of the "10 KB" message
    large: int  # bytes of the "25 MB" message
    stream: int  # bytes of the "100 MB" streamed message
    ours_reps: int
    openssl_reps: int
    large_reps: int  # best of N for the large (seconds) measurements


FULL = Sizes(small=10 * 1024, large=25 * MB, stream=100 * MB, ours_reps=300, openssl_reps=40,
             large_reps=3)  # fmt: skip
QUICK = Sizes(small=10 * 1024, large=1 * MB, stream=2 * MB, ours_reps=10, openssl_reps=3,
              large_reps=1)  # fmt: skip


def make_message(size: int) -> bytes:
    """An RFC 5322 message of about `size` bytes: text/plain, 76-character CRLF lines."""
    head = (
        f"From: Bench <{SENDER}>\r\nTo: rcpt@example.test\r\nSubject: bench\r\n"
        "Date: Mon, 01 Jun 2026 12:00:00 +0000\r\nMIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=us-ascii\r\n\r\n"
    ).encode()
    line = b"The quick brown fox jumps over the lazy dog 0123456789 abcdefghijklmnopqrs" + b"\r\n"
    count = max(1, (size - len(head)) // len(line))
    return head + line * count


@dataclass
class Setup:
    work: Path
    root: Identity
    user: Identity

    @property
    def agent(self) -> InProcessKeyAgent:
        return InProcessKeyAgent(self.user.key, self.user.cert, tuple(self.user.chain))

    @property
    def recipient(self) -> Recipient:
        return Recipient(self.user.cert, supports_gcm=True, key_transport="oaep")

    def path(self, name: str) -> Path:
        return self.work / name


def setup(work: Path) -> Setup:
    root = make_ca("Bench Root")
    user = make_user(SENDER, root)
    s = Setup(work, root, user)
    s.path("root.pem").write_bytes(root.cert_pem())
    s.path("user.crt").write_bytes(user.cert_pem())
    s.path("user.key").write_bytes(
        user.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return s


def per_second(fn: Callable[[], object], reps: int) -> float:
    fn()  # warm-up
    start = time.perf_counter()
    for _ in range(reps):
        fn()
    return reps / (time.perf_counter() - start)


def seconds(fn: Callable[[], object], reps: int = 1) -> float:
    """Best (minimum) wall time of `reps` runs: the least disturbed by other load."""
    best = float("inf")
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def openssl(*args: str) -> None:
    proc = subprocess.run(["openssl", *args], capture_output=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"openssl {' '.join(args)} failed: {proc.stderr.decode(errors='replace')}")


def openssl_best(reps: int, *args: str) -> tuple[float, int]:
    """(best wall seconds, peak RSS in bytes) of `reps` `openssl` runs."""
    runs = [openssl_rusage(*args) for _ in range(reps)]
    return min(t for t, _ in runs), max(r for _, r in runs)


def openssl_rusage(*args: str) -> tuple[float, int]:
    """(wall seconds, peak RSS in bytes) of one `openssl` run."""
    start = time.perf_counter()
    proc = subprocess.Popen(["openssl", *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
        raise SystemExit(f"openssl {' '.join(args)} failed: {err}")
    if proc.stderr:
        proc.stderr.close()
    return elapsed, usage.ru_maxrss * 1024


def openssl_per_second(make_args: Callable[[int], list[str]], reps: int) -> float:
    openssl(*make_args(-1))
    start = time.perf_counter()
    for i in range(reps):
        openssl(*make_args(i))
    return reps / (time.perf_counter() - start)


# --- peak RSS in a fresh process ----------------------------------------------------------------


def vm_hwm() -> int:
    """Peak resident set size of this process in bytes."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def rss_child(op: str, work: Path) -> None:
    """Run one large operation; print {"before": hwm, "after": hwm, "size": n} as JSON."""
    from smime_proxy.crypto.keyagent import InProcessKeyAgent as Agent
    from smime_proxy.memory import tune_memory

    tune_memory()  # as the CLI and the daemon do at start

    key = serialization.load_pem_private_key((work / "user.key").read_bytes(), password=None)
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    assert isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey)
    cert = x509.load_pem_x509_certificate((work / "user.crt").read_bytes())
    data = (work / ("large.eml" if op == "encrypt" else "large.enc.eml")).read_bytes()
    size = (work / "large.eml").stat().st_size
    # Touch the code paths once on a small input so imports and caches are in the baseline.
    small = make_message(4096)
    warm = encrypt_message(small, [Recipient(cert, supports_gcm=True, key_transport="oaep")],
                           cipher="aes-256-gcm")  # fmt: skip
    decrypt_message(warm, Agent(key, cert))
    before = vm_hwm()
    if op == "encrypt":
        out = encrypt_message(
            data, [Recipient(cert, supports_gcm=True, key_transport="oaep")], cipher="aes-256-gcm"
        )
    else:
        out = decrypt_message(data, Agent(key, cert)).content
    after = vm_hwm()
    print(json.dumps({"before": before, "after": after, "size": size, "out": len(out)}))


def measure_rss(op: str, work: Path) -> float:
    proc = subprocess.run(
        [sys.executable, __file__, "--rss-child", op, "--work", str(work)],
        capture_output=True,
        check=False,
    )
    if proc.returncode != 0:
        raise SystemExit(f"rss child {op} failed: {proc.stderr.decode(errors='replace')}")
    data = json.loads(proc.stdout.decode().strip().splitlines()[-1])
    return float(data["after"] - data["before"]) / float(data["size"])


# --- the benchmark ------------------------------------------------------------------------------


def run(sizes: Sizes) -> dict[str, float]:
    results: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="smime-bench-") as tmp:
        s = setup(Path(tmp))
        crt, key, root = str(s.path("user.crt")), str(s.path("user.key")), str(s.path("root.pem"))
        attime = str(int(NOW.timestamp()))
        agent = s.agent

        # 10 KB, in-process
        small = make_message(sizes.small)
        signed = sign_message(small, agent, now=NOW)
        enc_gcm = encrypt_message(small, [s.recipient], cipher="aes-256-gcm")
        enc_cbc = encrypt_message(small, [Recipient(s.user.cert)], cipher="aes-256-cbc")
        assert verify_message(signed, [s.root.cert], now=NOW).valid
        results["sign_10k_per_s"] = per_second(
            lambda: sign_message(small, agent, now=NOW), sizes.ours_reps
        )
        results["verify_10k_per_s"] = per_second(
            lambda: verify_message(signed, [s.root.cert], now=NOW), sizes.ours_reps
        )
        results["encrypt_10k_per_s"] = per_second(
            lambda: encrypt_message(small, [s.recipient], cipher="aes-256-gcm"), sizes.ours_reps
        )
        results["decrypt_10k_per_s"] = per_second(
            lambda: decrypt_message(enc_gcm, agent), sizes.ours_reps
        )
        results["decrypt_10k_cbc_per_s"] = per_second(
            lambda: decrypt_message(enc_cbc, agent), sizes.ours_reps
        )

        # 10 KB, openssl cms (one process per message)
        s.path("small.eml").write_bytes(small)
        s.path("small.signed.eml").write_bytes(signed)
        s.path("small.enc.eml").write_bytes(enc_gcm)
        out = str(s.path("out.tmp"))
        small_in = str(s.path("small.eml"))
        results["openssl_sign_10k_per_s"] = openssl_per_second(
            lambda _i: ["cms", "-sign", "-in", small_in, "-signer", crt, "-inkey", key,
                        "-md", "sha256", "-out", out],
            sizes.openssl_reps,
        )  # fmt: skip
        results["openssl_verify_10k_per_s"] = openssl_per_second(
            lambda _i: ["cms", "-verify", "-in", str(s.path("small.signed.eml")), "-CAfile",
                        root, "-attime", attime, "-out", out],
            sizes.openssl_reps,
        )  # fmt: skip
        results["openssl_encrypt_10k_per_s"] = openssl_per_second(
            lambda _i: ["cms", "-encrypt", "-in", small_in, "-aes-256-gcm", "-recip", crt,
                        "-keyopt", "rsa_padding_mode:oaep", "-keyopt", "rsa_oaep_md:sha256",
                        "-out", out],
            sizes.openssl_reps,
        )  # fmt: skip
        results["openssl_decrypt_10k_per_s"] = openssl_per_second(
            lambda _i: ["cms", "-decrypt", "-in", str(s.path("small.enc.eml")), "-inkey", key,
                        "-recip", crt, "-out", out],
            sizes.openssl_reps,
        )  # fmt: skip

        # 25 MB
        large = make_message(sizes.large)
        s.path("large.eml").write_bytes(large)
        enc_large: list[bytes] = []

        def encrypt_large() -> None:
            enc_large[:] = [encrypt_message(large, [s.recipient], cipher="aes-256-gcm")]

        results["encrypt_25m_s"] = seconds(encrypt_large, sizes.large_reps)
        s.path("large.enc.eml").write_bytes(enc_large[0])
        results["decrypt_25m_s"] = seconds(
            lambda: decrypt_message(enc_large[0], agent), sizes.large_reps
        )
        enc_large.clear()
        rss_enc = measure_rss("encrypt", s.work)
        rss_dec = measure_rss("decrypt", s.work)
        results["peak_rss_25m_encrypt_ratio"] = rss_enc
        results["peak_rss_25m_decrypt_ratio"] = rss_dec
        results["peak_rss_25m_ratio"] = max(rss_enc, rss_dec)
        t_enc, rss_o_enc = openssl_best(
            sizes.large_reps,
            "cms", "-encrypt", "-binary", "-in", str(s.path("large.eml")), "-aes-256-gcm",
            "-recip", crt, "-keyopt", "rsa_padding_mode:oaep", "-keyopt", "rsa_oaep_md:sha256",
            "-out", str(s.path("large.ossl.eml")),
        )  # fmt: skip
        t_dec, rss_o_dec = openssl_best(
            sizes.large_reps,
            "cms", "-decrypt", "-binary", "-in", str(s.path("large.enc.eml")), "-inkey", key,
            "-recip", crt, "-out", out,
        )  # fmt: skip
        results["openssl_encrypt_25m_s"] = t_enc
        results["openssl_decrypt_25m_s"] = t_dec
        # openssl's absolute peak RSS (the whole process) over the message size
        results["openssl_peak_rss_25m_ratio"] = max(rss_o_enc, rss_o_dec) / len(large)
        large = b""  # free it before the streamed run

        # 100 MB streamed BER from openssl
        s.path("stream.eml").write_bytes(make_message(sizes.stream))
        openssl(
            "cms", "-encrypt", "-stream", "-aes256", "-in", str(s.path("stream.eml")),
            "-out", str(s.path("stream.enc.eml")), crt,
        )  # fmt: skip
        s.path("stream.eml").unlink()
        streamed = s.path("stream.enc.eml").read_bytes()
        results["stream_100m_decrypt_s"] = seconds(
            lambda: decrypt_message(streamed, agent), sizes.large_reps
        )
        streamed = b""
        t_stream, _ = openssl_best(
            sizes.large_reps,
            "cms", "-decrypt", "-in", str(s.path("stream.enc.eml")), "-inkey", key,
            "-recip", crt, "-out", out,
        )  # fmt: skip
        results["openssl_stream_100m_decrypt_s"] = t_stream

    for op in ("sign", "verify", "encrypt", "decrypt"):
        results[f"{op}_10k_speedup"] = (
            results[f"{op}_10k_per_s"] / results[f"openssl_{op}_10k_per_s"]
        )
    for op in ("encrypt_25m", "decrypt_25m", "stream_100m_decrypt"):
        results[f"{op}_speedup"] = results[f"openssl_{op}_s"] / results[f"{op}_s"]
    return results


def report(results: dict[str, float], sizes: Sizes) -> str:
    rows = [
        ("sign 10 KB (msg/s)", "sign_10k_per_s", "openssl_sign_10k_per_s", "sign_10k_speedup"),
        ("verify 10 KB (msg/s)", "verify_10k_per_s", "openssl_verify_10k_per_s",
         "verify_10k_speedup"),
        ("encrypt 10 KB GCM+OAEP (msg/s)", "encrypt_10k_per_s", "openssl_encrypt_10k_per_s",
         "encrypt_10k_speedup"),
        ("decrypt 10 KB GCM+OAEP (msg/s)", "decrypt_10k_per_s", "openssl_decrypt_10k_per_s",
         "decrypt_10k_speedup"),
        (f"encrypt {sizes.large // MB} MB (s)", "encrypt_25m_s", "openssl_encrypt_25m_s",
         "encrypt_25m_speedup"),
        (f"decrypt {sizes.large // MB} MB (s)", "decrypt_25m_s", "openssl_decrypt_25m_s",
         "decrypt_25m_speedup"),
        (f"decrypt {sizes.stream // MB} MB -stream BER (s)", "stream_100m_decrypt_s",
         "openssl_stream_100m_decrypt_s", "stream_100m_decrypt_speedup"),
        ("peak RSS / message size", "peak_rss_25m_ratio", "openssl_peak_rss_25m_ratio", ""),
    ]  # fmt: skip
    lines = [f"{'operation':<36} {'ours':>10} {'openssl':>10} {'speedup':>8}"]
    for label, ours, theirs, ratio in rows:
        r = f"{results[ratio]:8.2f}" if ratio else f"{'':>8}"
        lines.append(f"{label:<36} {results[ours]:10.3f} {results[theirs]:10.3f} {r}")
    lines.append(f"decrypt 10 KB CBC+PKCS#1 (msg/s): {results['decrypt_10k_cbc_per_s']:.1f}")
    lines.append(
        "peak RSS growth (ours, fresh process): encrypt "
        f"{results['peak_rss_25m_encrypt_ratio']:.2f} x, decrypt "
        f"{results['peak_rss_25m_decrypt_ratio']:.2f} x the message"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="small sizes, few repetitions")
    parser.add_argument("--json", action="store_true", help="print one JSON object last")
    parser.add_argument("--rss-child", choices=["encrypt", "decrypt"], help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.rss_child:
        rss_child(args.rss_child, args.work)
        return 0
    if shutil.which("openssl") is None:
        print("bench/crypto.py: the openssl CLI is needed for the comparison", file=sys.stderr)
        return 2
    sizes = QUICK if args.quick else FULL
    results = run(sizes)
    print(report(results, sizes))
    if args.json:
        print(json.dumps({k: round(v, 6) for k, v in results.items()}, sort_keys=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
