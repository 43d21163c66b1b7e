"""Demo set-up for `scripts/run.sh`: a proxy config in front of the harness upstream, a server
CA, and S/MIME keys for the demo users.

`python -m smime_proxy.demo --workdir DIR --env-file UPSTREAM_ENV` reads the upstream's
settings (written by `python -m smime_proxy.harness --env-file`), and writes into DIR:
`smime-proxy.yaml` (free loopback ports, TLS on every listener with a self-signed
certificate, plaintext allowed from loopback for easy client set-up), the data directory
with a server CA, one key per demo user issued by it (Secure Mail Password `<user>-smime`),
each user's address book holding the others' certificates, and `proxy.env` with the ports.
The proxy's Store Encrypted filter (LMTP) sits between the upstream's Postfix and Dovecot:
`--lmtp-port` prints its port first, for `python -m smime_proxy.harness --delivery-port`.
Running it again keeps what exists. Demo passwords are for this loopback demo only.

May import: app, harness, keystore, cryptography, stdlib (a composition tool like app.py).
"""

from __future__ import annotations

import argparse
import shlex
import socket
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from cryptography.hazmat.primitives.serialization import Encoding

from smime_proxy.app import stores_of
from smime_proxy.harness.tls import ensure_tls
from smime_proxy.keystore.ca import ServerCA
from smime_proxy.keystore.contacts import Contacts
from smime_proxy.keystore.service import SecureMail

DEMO_PASSWORD_SUFFIX = "-smime"  # noqa: S105 - documented demo passwords, loopback only


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def read_env(path: Path) -> dict[str, str]:
    values: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        key, sep, value = line.partition("=")
        if sep:
            parsed = shlex.split(value)
            values[key] = parsed[0] if parsed else ""
    return values


def lmtp_port(workdir: Path) -> int:
    """The port of the proxy's Store Encrypted filter (chosen once, kept in the workdir):
    run.sh gives it to the upstream's Postfix before the proxy's config is written."""
    path = workdir / "lmtp-port"
    if path.exists():
        return int(path.read_text().strip())
    workdir.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    path.write_text(f"{port}\n")
    return port


def write_config(workdir: Path, upstream: dict[str, str]) -> dict[str, str]:
    """Write smime-proxy.yaml (once; again when an older demo wrote it without the LMTP
    filter) and return the proxy's ports."""
    config_path = workdir / "smime-proxy.yaml"
    env_path = workdir / "proxy.env"
    if config_path.exists() and env_path.exists() and (
            "lmtp:" in config_path.read_text(encoding="utf-8")):
        return read_env(env_path)
    tls = ensure_tls(workdir / "tls")
    kept = read_env(env_path) if env_path.exists() else {}
    ports = {
        name: kept.get(name) or str(_free_port())
        for name in ("PROXY_IMAP_PORT", "PROXY_SMTP_PORT", "PROXY_CONTROL_PORT")
    }
    ports["PROXY_LMTP_PORT"] = str(lmtp_port(workdir))
    listener_tls = f"{{mode: starttls, cert: {tls.server_cert}, key: {tls.server_key}}}"
    config_path.write_text(
        "# Written by python -m smime_proxy.demo for scripts/run.sh (loopback demo only).\n"
        "listeners:\n"
        f"  imap: {{host: 127.0.0.1, port: {ports['PROXY_IMAP_PORT']}, tls: {listener_tls},"
        " plaintext_loopback: true}\n"
        f"  smtp: {{host: 127.0.0.1, port: {ports['PROXY_SMTP_PORT']}, tls: {listener_tls},"
        " plaintext_loopback: true}\n"
        f"  control: {{host: 127.0.0.1, port: {ports['PROXY_CONTROL_PORT']},"
        f" tls: {{mode: implicit, cert: {tls.server_cert}, key: {tls.server_key}}},"
        " plaintext_loopback: true}\n"
        "  # Store Encrypted (README \"Mail at rest\"): Postfix delivers here, the filter\n"
        "  # delivers to Dovecot's LMTP\n"
        f"  lmtp: {{host: 127.0.0.1, port: {ports['PROXY_LMTP_PORT']}, plaintext_loopback: true}}\n"
        "upstream:\n"
        f"  imap: {{host: {upstream['UPSTREAM_HOST']}, port: {upstream['UPSTREAM_IMAPS_PORT']},"
        f" tls: implicit, verify: true, ca_file: {upstream['UPSTREAM_CA_FILE']}}}\n"
        f"  smtp: {{host: {upstream['UPSTREAM_HOST']},"
        f" port: {upstream['UPSTREAM_SUBMISSION_PORT']},"
        f" tls: starttls, verify: true, ca_file: {upstream['UPSTREAM_CA_FILE']}}}\n"
        f"  lmtp: {{host: {upstream['UPSTREAM_HOST']}, port: {upstream['UPSTREAM_LMTP_PORT']},"
        " tls: none}\n"
        f"data_dir: {workdir / 'data'}\n"
        "# the server CA in data_dir issued the demo users' certificates: trusted\n"
        "trust_server_ca: true\n"
        "unlock: {idle_timeout: 180, max_unlock: 3600}\n"
        "locked_fetch: unavailable\n"
        "# the upstream Dovecot's auth_username_format is %Ln: alice, Alice and\n"
        "# alice@example.test are one account, so one key-store user\n"
        "users:\n"
        "  username_format: '%Ln'\n"
        f"  local_domains: [{upstream['UPSTREAM_DOMAIN']}]\n",
        encoding="utf-8",
    )
    ports["PROXY_TLS_CA_FILE"] = str(tls.ca_cert)
    env_path.write_text(
        "".join(f"{k}={shlex.quote(v)}\n" for k, v in ports.items()), encoding="utf-8"
    )
    return ports


def ensure_keys(data_dir: Path, users: Sequence[str], domain: str) -> None:
    """Server CA, a key per user, and every user's certificate in every address book."""
    now = datetime.now(UTC)
    ca = ServerCA.load(data_dir) if ServerCA.exists(data_dir) else ServerCA.init(data_dir, now)
    (data_dir / "server-ca.pem").write_bytes(ca.certificate.public_bytes(Encoding.PEM))
    with stores_of(data_dir, ca=ca) as stores:
        _fill(stores.secure_mail, stores.contacts, users, domain, now)


def _fill(secure_mail: SecureMail, contacts: Contacts, users: Sequence[str], domain: str,
          now: datetime) -> None:
    for user in users:
        if not secure_mail.has_key(user):
            secure_mail.generate(user, f"{user}@{domain}", user + DEMO_PASSWORD_SUFFIX, now)
    for user in users:
        for other in users:
            if other != user:
                contacts.take_certificate(user, secure_mail.certificate(other))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m smime_proxy.demo")
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--env-file", type=Path, help="the upstream's env file")
    parser.add_argument("--lmtp-port", action="store_true",
                        help="print the Store Encrypted filter's port (for the upstream's "
                             "Postfix) and exit")
    args = parser.parse_args(argv)
    if args.lmtp_port:
        print(lmtp_port(args.workdir))
        return 0
    if args.env_file is None:
        parser.error("--env-file is required")
    upstream = read_env(args.env_file)
    args.workdir.mkdir(parents=True, exist_ok=True)
    write_config(args.workdir, upstream)
    ensure_keys(
        args.workdir / "data", upstream["UPSTREAM_USERS"].split(), upstream["UPSTREAM_DOMAIN"]
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
