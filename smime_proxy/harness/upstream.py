"""Start and stop the real upstream: Debian's Dovecot and Postfix on 127.0.0.1 high ports.

Layout of the work directory (reusable: a second start in the same directory keeps the TLS
files, the mail and, when they are still free, the ports, so nothing is rewritten)::

    dovecot.conf  users  ports.json
    tls/      ca.pem (trust this), server-cert.pem, server-key.pem
    mail/     <user>/Maildir (owned by uid 5000)
    log/      dovecot.log, dovecot.out, postfix.log, postfix.out
    dovecot/  run/ (base_dir), state/
    postfix/  etc/ (main.cf, master.cf), queue/, data/
    run/      dovecot.pgid, postfix.pgid

May import: errors, harness, stdlib.
"""

from __future__ import annotations

import contextlib
import grp
import imaplib
import json
import os
import pwd
import shlex
import smtplib
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from smime_proxy.errors import SmimeProxyError
from smime_proxy.harness import procs
from smime_proxy.harness.render import render, write_if_changed
from smime_proxy.harness.tls import ensure_tls

DOMAIN = "example.test"
MAIL_UID = 5000
DOVECOT_BIN = "/usr/sbin/dovecot"
POSTFIX_MASTER_BIN = "/usr/lib/postfix/sbin/master"
PORT_NAMES = ("imap", "imaps", "lmtp", "sasl", "submission")
_START_ATTEMPTS = 3
DOVECOT_OPEN_FILES = 65536
"""The daemons' soft RLIMIT_NOFILE is raised to this (up to the hard limit)."""


class UpstreamError(SmimeProxyError):
    """The upstream could not be started (the message ends with the daemons' log tail)."""


def default_config_dir() -> Path:
    """``config/upstream`` of the source checkout this module lives in."""
    for parent in Path(__file__).resolve().parents:
        candidate = parent / "config" / "upstream"
        if (candidate / "dovecot.conf").is_file():
            return candidate
    raise UpstreamError(
        "config/upstream/ not found above " + str(Path(__file__).resolve().parent)
        + "; pass config_dir= explicitly"
    )


def read_users_file(path: Path) -> dict[str, str]:
    """Parse a Dovecot passwd-file with ``user:{PLAIN}password`` lines (``#`` comments)."""
    users: dict[str, str] = {}
    for lineno, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        name, sep, rest = line.partition(":")
        if not sep or not rest.startswith("{PLAIN}"):
            raise UpstreamError(f"{path}:{lineno}: expected user:{{PLAIN}}password")
        users[name] = rest.removeprefix("{PLAIN}").split(":", 1)[0]
    return users


@dataclass(eq=False)
class Upstream:
    """A running Dovecot + Postfix. Passwords stay out of ``repr``."""

    workdir: Path
    host: str
    imap_port: int
    """IMAP, plain with STARTTLS offered (LOGIN allowed without TLS too)."""
    imaps_port: int
    """IMAP over implicit TLS."""
    lmtp_port: int
    sasl_port: int
    """Dovecot's auth service over TCP (what Postfix uses for SMTP AUTH)."""
    submission_port: int
    """Postfix submission: AUTH (via Dovecot), STARTTLS offered; delivers to example.test only."""
    ca_file: Path
    """PEM of the CA that issued the servers' certificate: verify TLS against this."""
    cert_file: Path
    key_file: Path
    users: dict[str, str] = field(repr=False)
    """user name (without domain) -> password."""
    domain: str = DOMAIN
    delivery_port: int | None = None
    """Where Postfix delivers on ``host``: None for Dovecot's LMTP; else a port of the
    Store Encrypted filter (smime-proxy's listeners.lmtp)."""
    _procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict, repr=False)

    @property
    def smtp_port(self) -> int:
        """Alias of ``submission_port``."""
        return self.submission_port

    @property
    def maildirs(self) -> dict[str, Path]:
        """user -> that user's Maildir (exists once the user logged in or got mail)."""
        return {u: self.workdir / "mail" / u / "Maildir" for u in self.users}

    @property
    def log_files(self) -> list[Path]:
        return sorted((self.workdir / "log").glob("*"))

    def address(self, user: str) -> str:
        """``bob`` -> ``bob@example.test``."""
        return f"{user}@{self.domain}"

    def ssl_context(self) -> ssl.SSLContext:
        """A client context that verifies the servers' certificate against ``ca_file``."""
        return ssl.create_default_context(cafile=str(self.ca_file))

    def deliver(self, rcpt: str, message: bytes, *, sender: str = "harness@example.test") -> None:
        """Deliver ``message`` straight to Dovecot over LMTP (``rcpt``: user or address)."""
        if "@" not in rcpt:
            rcpt = self.address(rcpt)
        with smtplib.LMTP(self.host, self.lmtp_port, timeout=10) as lmtp:
            refused = lmtp.sendmail(sender, [rcpt], message)
        if refused:
            raise UpstreamError(f"LMTP refused {rcpt}: {refused[rcpt]!r}")

    @property
    def running(self) -> bool:
        return bool(self._procs) and all(p.poll() is None for p in self._procs.values())

    def log_tail(self, lines: int = 30) -> str:
        """The last lines of every log file, passwords masked."""
        return _log_tail(self.workdir, self.users, lines)

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM both process groups; wait until only zombies are left (SIGKILL after
        ``timeout``). Idempotent."""
        procs.stop_groups([(p.pid, p) for p in self._procs.values()], timeout=timeout)
        for name in self._procs:
            with contextlib.suppress(OSError):
                (self.workdir / "run" / f"{name}.pgid").unlink()
        self._procs.clear()

    def __enter__(self) -> Upstream:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def start_upstream(
    workdir: Path,
    *,
    users: Mapping[str, str] | None = None,
    host: str = "127.0.0.1",
    config_dir: Path | None = None,
    timeout: float = 30.0,
    delivery_port: int | None = None,
) -> Upstream:
    """Start Dovecot and Postfix for ``workdir`` (created if needed) and return once an IMAP
    LOGIN and an SMTP AUTH both succeed. ``users`` (name -> password) defaults to
    ``config/upstream/users`` (alice, bob, carol). Raises ``UpstreamError`` (with the log tail)
    if that does not happen within ``timeout`` seconds. Needs root (Dovecot switches to uid
    5000 for mail; Postfix to user ``postfix``) and Debian's packages installed."""
    config_dir = config_dir or default_config_dir()
    if users is None:
        users = read_users_file(config_dir / "users")
    users = dict(users)
    if not users:
        raise UpstreamError("no users")
    _preflight()
    workdir = workdir.resolve()
    _prepare_dirs(workdir)
    # Leftovers of a run that was SIGKILLed hold the ports and Postfix's lock: stop them.
    procs.kill_stale_group(workdir / "run" / "dovecot.pgid", str(workdir / "dovecot.conf"))
    procs.kill_stale_group(workdir / "run" / "postfix.pgid", str(workdir / "postfix" / "etc"))
    tls = ensure_tls(workdir / "tls")
    _write_users(workdir / "users", users)

    deadline = time.monotonic() + timeout
    last_error: UpstreamError | None = None
    for attempt in range(_START_ATTEMPTS):
        ports = _choose_ports(workdir / "ports.json", fresh=attempt > 0)
        up = Upstream(
            workdir=workdir, host=host, imap_port=ports["imap"], imaps_port=ports["imaps"],
            lmtp_port=ports["lmtp"], sasl_port=ports["sasl"],
            submission_port=ports["submission"], ca_file=tls.ca_cert,
            cert_file=tls.server_cert, key_file=tls.server_key, users=users,
            delivery_port=delivery_port,
        )
        _render_configs(up, config_dir)
        try:
            _launch(up)
            _wait_ready(up, deadline)
        except UpstreamError as e:
            up.stop()
            last_error = e
            if "Address already in use" in str(e) and time.monotonic() < deadline:
                continue  # a port we picked was taken meanwhile: pick new ones
            raise
        except BaseException:
            up.stop()
            raise
        return up
    assert last_error is not None
    raise last_error


# --- steps ---------------------------------------------------------------------------------


def _preflight() -> None:
    if os.geteuid() != 0:
        raise UpstreamError("the upstream harness must run as root (Dovecot/Postfix switch users)")
    for binary in (DOVECOT_BIN, POSTFIX_MASTER_BIN):
        if not os.access(binary, os.X_OK):
            raise UpstreamError(
                f"{binary} not found: install Debian's dovecot-imapd dovecot-lmtpd postfix "
                "(scripts/test.sh does)"
            )


def _prepare_dirs(workdir: Path) -> None:
    for parent in workdir.parents:
        if parent.exists() and not parent.stat().st_mode & 0o001:
            raise UpstreamError(
                f"{parent} is not searchable by other users (mode "
                f"{parent.stat().st_mode & 0o777:o}): Dovecot and Postfix drop root and "
                f"could not reach {workdir}; use a directory like /tmp/... or var/"
            )
    workdir.mkdir(parents=True, exist_ok=True)
    # Searchable (not listable) by the users Dovecot and Postfix switch to.
    os.chmod(workdir, 0o711)  # noqa: S103 (search only, nothing listable or writable)
    for sub in ("log", "tls", "run", "dovecot", "postfix", "postfix/etc", "postfix/queue"):
        (workdir / sub).mkdir(exist_ok=True)
    postfix_pw = pwd.getpwnam("postfix")
    data = workdir / "postfix" / "data"
    data.mkdir(exist_ok=True)
    os.chown(data, postfix_pw.pw_uid, postfix_pw.pw_gid)
    mail = workdir / "mail"
    mail.mkdir(exist_ok=True)
    os.chown(mail, MAIL_UID, MAIL_UID)
    os.chmod(mail, 0o700)


def _write_users(path: Path, users: Mapping[str, str]) -> None:
    for name, password in users.items():
        if not name or any(c in name for c in ":@ \n") or any(c in password for c in ":\n"):
            raise UpstreamError(f"unusable user name or password for user {name!r}")
    content = "".join(f"{name}:{{PLAIN}}{password}\n" for name, password in users.items())
    write_if_changed(path, content, 0o640)
    os.chown(path, 0, grp.getgrnam("dovecot").gr_gid)


def _choose_ports(state: Path, *, fresh: bool) -> dict[str, int]:
    """The ports of the previous start in this directory if they are all still free (so the
    configs stay byte-identical), else new ones chosen by the kernel (bind to port 0)."""
    if not fresh:
        try:
            previous = json.loads(state.read_text())
            ports = {name: int(previous[name]) for name in PORT_NAMES}
            if len(set(ports.values())) == len(PORT_NAMES) and all(
                _port_free(p) for p in ports.values()
            ):
                return ports
        except (OSError, ValueError, KeyError, TypeError):
            pass
    with contextlib.ExitStack() as stack:
        socks = []
        for _ in PORT_NAMES:
            s = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        ports = {name: s.getsockname()[1] for name, s in zip(PORT_NAMES, socks, strict=True)}
    write_if_changed(state, json.dumps(ports, indent=1) + "\n")
    return ports


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        # As the daemons do: a port with connections in TIME_WAIT is free for them.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _render_configs(up: Upstream, config_dir: Path) -> None:
    values = {
        "DIR": str(up.workdir),
        "LISTEN": up.host,
        "DOVECOT_HOST": up.host,
        "IMAP_PORT": str(up.imap_port),
        "IMAPS_PORT": str(up.imaps_port),
        "LMTP_PORT": str(up.lmtp_port),
        "SASL_PORT": str(up.sasl_port),
        "SUBMISSION_PORT": str(up.submission_port),
        "DELIVERY_HOST": up.host,
        "DELIVERY_PORT": str(up.delivery_port or up.lmtp_port),
    }
    targets = {
        "dovecot.conf": up.workdir / "dovecot.conf",
        "main.cf": up.workdir / "postfix" / "etc" / "main.cf",
        "master.cf": up.workdir / "postfix" / "etc" / "master.cf",
    }
    for name, target in targets.items():
        text = (config_dir / name).read_text()
        write_if_changed(target, render(text, values, name=str(config_dir / name)))


def _launch(up: Upstream) -> None:
    run = up.workdir / "run"
    etc = up.workdir / "postfix" / "etc"
    dovecot_conf = up.workdir / "dovecot.conf"
    _postfix_queue_dirs(up.workdir / "postfix" / "queue")
    log = up.workdir / "log"
    argv = {
        # -s: keep stdout (never a pipe, gotcha 2-3); the master leads its own group.
        "postfix": [POSTFIX_MASTER_BIN, "-c", str(etc), "-s"],
        "dovecot": [DOVECOT_BIN, "-F", "-c", str(dovecot_conf)],
    }
    for name, args in argv.items():
        # Dovecot wants about one descriptor per client of its busiest services
        # (default_client_limit in dovecot.conf); a stock soft limit of 1024 is too low.
        proc = procs.spawn(args, log / f"{name}.out", open_files=DOVECOT_OPEN_FILES)
        up._procs[name] = proc
        (run / f"{name}.pgid").write_text(f"{proc.pid}\n")


# Queue subdirectories as /etc/postfix/postfix-files creates them: (name, group, mode);
# owner is always the mail owner (postfix) except pid/ (root).
_QUEUE_DIRS = (
    *((name, "root", 0o700) for name in (
        "active", "bounce", "corrupt", "defer", "deferred", "flush", "hold", "incoming",
        "private", "saved", "trace",
    )),
    ("maildrop", "postdrop", 0o730),
    ("public", "postdrop", 0o710),
)


def _postfix_queue_dirs(queue: Path) -> None:
    """What `postfix check` (post-install create-missing) would create, without its ~2 s of
    shell script: the master refuses to run without these."""
    postfix_uid = pwd.getpwnam("postfix").pw_uid
    for name, group, mode in _QUEUE_DIRS:
        path = queue / name
        if not path.is_dir():
            path.mkdir()
            os.chown(path, postfix_uid, grp.getgrnam(group).gr_gid)
            os.chmod(path, mode)
    (queue / "pid").mkdir(exist_ok=True)


def postfix_check(etc: Path) -> str:
    """Run `postfix -c ETC check` and return its output ('' if it passed). Used for the error
    message when Postfix does not come up; it prints nothing without a tty (gotcha 1)."""
    cmd = f"postfix -c {shlex.quote(str(etc))} check"
    result = subprocess.run(
        ["script", "-qec", cmd, "/dev/null"],
        stdin=subprocess.DEVNULL, capture_output=True, timeout=60, check=False,
    )
    out = (result.stdout + result.stderr).decode(errors="replace").replace("\r", "").strip()
    if result.returncode == 0 and not out:
        return ""
    return f"`{cmd}` (exit {result.returncode}):\n{out}\n"


def _wait_ready(up: Upstream, deadline: float) -> None:
    user, password = next(iter(up.users.items()))
    checks = {"imap": _check_imap, "lmtp": _check_lmtp, "smtp": _check_smtp}
    pending = dict(checks)
    last = ""
    while pending:
        for name, proc in up._procs.items():
            if proc.poll() is not None:
                diagnosis = ""
                if name == "postfix":
                    diagnosis = postfix_check(up.workdir / "postfix" / "etc")
                raise UpstreamError(
                    f"{name} exited with status {proc.returncode} during start-up\n"
                    + diagnosis + up.log_tail()
                )
        for check_name, check in list(pending.items()):
            try:
                check(up, user, password)
            except (OSError, UpstreamError, imaplib.IMAP4.error, smtplib.SMTPException) as e:
                last = f"{check_name}: {type(e).__name__}: {e}"
                break
            del pending[check_name]
        else:
            return
        if time.monotonic() >= deadline:
            raise UpstreamError(
                f"upstream not ready in time (last check: {_mask(last, up.users)})\n"
                + up.log_tail()
            )
        time.sleep(0.02)


def _check_imap(up: Upstream, user: str, password: str) -> None:
    imap = imaplib.IMAP4(up.host, up.imap_port, timeout=2)
    try:
        imap.login(user, password)
    finally:
        with contextlib.suppress(OSError, imaplib.IMAP4.error):
            imap.logout()


def _check_lmtp(up: Upstream, user: str, password: str) -> None:
    with socket.create_connection((up.host, up.lmtp_port), timeout=2) as s:
        banner = s.recv(512)
    if not banner.startswith(b"220"):
        raise UpstreamError(f"unexpected LMTP banner {banner[:80]!r}")


def _check_smtp(up: Upstream, user: str, password: str) -> None:
    with smtplib.SMTP(up.host, up.submission_port, timeout=2) as smtp:
        smtp.login(user, password)


def _mask(text: str, users: Mapping[str, str]) -> str:
    for password in users.values():
        if password:
            text = text.replace(password, "***")
    return text


def _log_tail(workdir: Path, users: Mapping[str, str], lines: int) -> str:
    parts: list[str] = []
    for path in sorted((workdir / "log").glob("*")):
        tail = list(_tail_lines(path, lines))
        if tail:
            parts.append(f"--- {path} (last {len(tail)} lines)\n" + "\n".join(tail))
    return _mask("\n".join(parts), users) if parts else f"(no logs in {workdir / 'log'})"


def _tail_lines(path: Path, lines: int) -> Iterator[str]:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 64 * 1024))
            data = f.read()
    except OSError:
        return
    yield from data.decode(errors="replace").splitlines()[-lines:]
