"""``python -m smime_proxy.harness``: run the upstream in the foreground (scripts/run.sh).

Starts Dovecot and Postfix for ``--workdir``, writes ``--env-file`` (shell ``KEY=value``
lines: host, ports, CA file, user names; never a password) once they answer, then waits for
SIGINT/SIGTERM and stops both. Exits 1 if a daemon dies meanwhile, 2 if the start fails.

May import: harness, stdlib.
"""

from __future__ import annotations

import argparse
import os
import shlex
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from smime_proxy.harness.upstream import Upstream, UpstreamError, start_upstream


def env_lines(up: Upstream) -> str:
    values = {
        "UPSTREAM_HOST": up.host,
        "UPSTREAM_IMAP_PORT": up.imap_port,
        "UPSTREAM_IMAPS_PORT": up.imaps_port,
        "UPSTREAM_SUBMISSION_PORT": up.submission_port,
        "UPSTREAM_LMTP_PORT": up.lmtp_port,
        "UPSTREAM_SASL_PORT": up.sasl_port,
        "UPSTREAM_CA_FILE": up.ca_file,
        "UPSTREAM_DOMAIN": up.domain,
        "UPSTREAM_USERS": " ".join(up.users),
        "UPSTREAM_WORKDIR": up.workdir,
    }
    return "".join(f"{k}={shlex.quote(str(v))}\n" for k, v in values.items())


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m smime_proxy.harness",
                                     description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--workdir", type=Path, default=Path("var/demo/upstream"))
    parser.add_argument("--env-file", type=Path, help="write the settings here when ready")
    parser.add_argument("--timeout", type=float, default=30.0)
    parser.add_argument("--delivery-port", type=int,
                        help="Postfix delivers over LMTP to 127.0.0.1:PORT (the proxy's Store "
                             "Encrypted filter) instead of to Dovecot's LMTP")
    args = parser.parse_args(argv)

    # Block the stop signals first, so one arriving during start-up is not lost.
    stop_signals = {signal.SIGINT, signal.SIGTERM}
    for sig in stop_signals:  # a shell's `cmd &` starts us with SIGINT ignored
        signal.signal(sig, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_BLOCK, stop_signals)
    started = time.monotonic()
    try:
        up = start_upstream(args.workdir, timeout=args.timeout,
                            delivery_port=args.delivery_port)
    except UpstreamError as e:
        print(f"upstream: {e}", file=sys.stderr)
        return 2
    print(f"upstream: Dovecot and Postfix ready in {time.monotonic() - started:.2f} s "
          f"({up.workdir})", file=sys.stderr, flush=True)
    try:
        if args.env_file is not None:
            tmp = args.env_file.with_name(args.env_file.name + ".tmp")
            tmp.write_text(env_lines(up))
            os.replace(tmp, args.env_file)
        while True:
            if signal.sigtimedwait(stop_signals, 1.0) is not None:
                break
            if not up.running:
                print("upstream: a daemon exited\n" + up.log_tail(), file=sys.stderr)
                return 1
    finally:
        stopping = time.monotonic()
        up.stop()
        if args.env_file is not None:
            args.env_file.unlink(missing_ok=True)
        print(f"upstream: stopped in {time.monotonic() - stopping:.2f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
