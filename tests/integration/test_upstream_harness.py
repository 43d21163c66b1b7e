"""The upstream harness against real clients: imaplib, smtplib (submission and LMTP)."""

from __future__ import annotations

import contextlib
import imaplib
import os
import shutil
import signal
import smtplib
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest

from smime_proxy.harness import Upstream, UpstreamError, read_users_file, start_upstream
from smime_proxy.harness.procs import group_members
from smime_proxy.harness.render import TemplateError, render, write_if_changed


def _message(subject: str, sender: str, rcpt: str) -> bytes:
    return (
        f"From: {sender}\r\nTo: {rcpt}\r\nSubject: {subject}\r\n"
        f"Message-ID: <{uuid.uuid4()}@example.test>\r\n\r\nbody of {subject}\r\n"
    ).encode()


def _wait_for_subject(up: Upstream, user: str, subject: str, timeout: float = 10.0) -> bytes:
    """Poll ``user``'s INBOX over IMAP until a message with ``subject`` is there; return it."""
    deadline = time.monotonic() + timeout
    with imaplib.IMAP4(up.host, up.imap_port, timeout=10) as imap:
        imap.login(user, up.users[user])
        while True:
            imap.select("INBOX")
            typ, data = imap.search(None, "SUBJECT", f'"{subject}"')
            assert typ == "OK"
            uids = data[0].split()
            if uids:
                typ, fetched = imap.fetch(uids[-1].decode(), "(BODY.PEEK[])")
                assert typ == "OK"
                item = fetched[0]
                assert isinstance(item, tuple)
                return item[1]
            if time.monotonic() > deadline:
                pytest.fail(f"{subject!r} did not arrive in {user}'s INBOX")
            time.sleep(0.05)


def test_users_and_ports(upstream: Upstream) -> None:
    assert upstream.users == {"alice": "alice-pw", "bob": "bob-pw", "carol": "carol-pw"}
    assert upstream.host == "127.0.0.1"
    ports = {upstream.imap_port, upstream.imaps_port, upstream.lmtp_port,
             upstream.sasl_port, upstream.submission_port}
    assert len(ports) == 5
    assert all(port > 1024 for port in ports)
    assert upstream.smtp_port == upstream.submission_port
    assert "alice-pw" not in repr(upstream)


def test_imap_login_plain_and_with_domain(upstream: Upstream) -> None:
    for login in ("bob", "bob@example.test", "BOB@example.test"):
        with imaplib.IMAP4(upstream.host, upstream.imap_port, timeout=10) as imap:
            assert imap.login(login, "bob-pw")[0] == "OK"
            typ, boxes = imap.list()
            assert typ == "OK"
            names = b"\n".join(b for b in boxes if isinstance(b, bytes))
            for special in (b"\\Drafts", b"\\Sent", b"\\Trash", b"\\Junk"):
                assert special in names


def test_imap_starttls_verifies_against_generated_ca(upstream: Upstream) -> None:
    with imaplib.IMAP4(upstream.host, upstream.imap_port, timeout=10) as imap:
        assert "STARTTLS" in imap.capabilities
        imap.starttls(ssl_context=upstream.ssl_context())
        assert isinstance(imap.sock, ssl.SSLSocket)
        cert = imap.sock.getpeercert()
        assert cert is not None
        assert ("DNS", "localhost") in cert["subjectAltName"]
        typ, _ = imap.login("alice", upstream.users["alice"])
        assert typ == "OK"


def test_imaps_verifies_and_unknown_ca_is_refused(upstream: Upstream) -> None:
    ctx = ssl.create_default_context(cafile=str(upstream.ca_file))
    with imaplib.IMAP4_SSL(upstream.host, upstream.imaps_port, ssl_context=ctx, timeout=10) as imap:
        typ, _ = imap.login("carol", "carol-pw")
        assert typ == "OK"
    # The system trust store does not know our throw-away CA.
    with pytest.raises(ssl.SSLCertVerificationError):
        imaplib.IMAP4_SSL(upstream.host, upstream.imaps_port,
                          ssl_context=ssl.create_default_context(), timeout=10)


def test_wrong_password_refused(upstream: Upstream) -> None:
    with (
        imaplib.IMAP4(upstream.host, upstream.imap_port, timeout=10) as imap,
        pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"),
    ):
        imap.login("bob", "not-bob-pw")
    with (
        imaplib.IMAP4(upstream.host, upstream.imap_port, timeout=10) as imap,
        pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"),
    ):
        imap.login("mallory", "bob-pw")
    with smtplib.SMTP(upstream.host, upstream.submission_port, timeout=10) as smtp:
        smtp.starttls(context=upstream.ssl_context())
        smtp.ehlo()
        smtp.user, smtp.password = "bob", "alice-pw"
        with pytest.raises(smtplib.SMTPAuthenticationError) as info:
            smtp.auth("PLAIN", smtp.auth_plain)
        assert info.value.smtp_code == 535


def test_submission_with_auth_over_starttls_reaches_inbox(upstream: Upstream) -> None:
    subject = f"submission {uuid.uuid4()}"
    with smtplib.SMTP(upstream.host, upstream.submission_port, timeout=10) as smtp:
        smtp.ehlo()
        assert smtp.has_extn("starttls")
        smtp.starttls(context=upstream.ssl_context())
        smtp.ehlo()
        assert smtp.has_extn("auth")
        smtp.login("alice@example.test", "alice-pw")
        refused = smtp.sendmail(
            "alice@example.test", ["bob@example.test"],
            _message(subject, "alice@example.test", "bob@example.test"),
        )
        assert refused == {}
    body = _wait_for_subject(upstream, "bob", subject)
    assert f"body of {subject}".encode() in body
    assert b"Received:" in body  # went through Postfix, not straight to Dovecot


def test_submission_refuses_without_auth_and_never_relays(upstream: Upstream) -> None:
    with (
        smtplib.SMTP(upstream.host, upstream.submission_port, timeout=10) as smtp,
        pytest.raises(smtplib.SMTPRecipientsRefused),
    ):
        smtp.sendmail("x@example.test", ["bob@example.test"], b"Subject: x\r\n\r\nx\r\n")
    with smtplib.SMTP(upstream.host, upstream.submission_port, timeout=10) as smtp:
        smtp.login("alice", "alice-pw")
        # Any domain but example.test goes to the `error` transport: refused at RCPT time.
        with pytest.raises(smtplib.SMTPRecipientsRefused) as info:
            smtp.sendmail("alice@example.test", ["someone@elsewhere.invalid"],
                          _message("outward", "alice@example.test", "someone@elsewhere.invalid"))
        code, reason = info.value.recipients["someone@elsewhere.invalid"]
        assert code == 550
        assert b"example.test only" in reason


def test_lmtp_delivery(upstream: Upstream) -> None:
    subject = f"lmtp {uuid.uuid4()}"
    with smtplib.LMTP(upstream.host, upstream.lmtp_port, timeout=10) as lmtp:
        refused = lmtp.sendmail("someone@elsewhere.invalid", ["carol@example.test"],
                                _message(subject, "someone@elsewhere.invalid", "carol"))
        assert refused == {}
    assert f"body of {subject}".encode() in _wait_for_subject(upstream, "carol", subject)
    # the helper does the same
    subject2 = f"deliver {uuid.uuid4()}"
    upstream.deliver("carol", _message(subject2, "a@example.test", "carol@example.test"))
    _wait_for_subject(upstream, "carol", subject2)
    assert (upstream.maildirs["carol"] / "cur").is_dir()


def test_append_then_fetch(upstream: Upstream) -> None:
    """What the oracle tests do: APPEND a message and read it back byte for byte."""
    msg = _message(f"append {uuid.uuid4()}", "alice@example.test", "alice@example.test")
    with imaplib.IMAP4(upstream.host, upstream.imap_port, timeout=10) as imap:
        imap.login("alice", "alice-pw")
        typ, data = imap.append("Drafts", None, None, msg)
        assert typ == "OK"
        imap.select("Drafts")
        typ, data = imap.search(None, "ALL")
        last = data[0].split()[-1].decode()
        typ, fetched = imap.fetch(last, "(BODY.PEEK[])")
        item = fetched[0]
        assert isinstance(item, tuple)
        assert item[1] == msg


def test_render_refuses_unknown_placeholder_and_writes_only_changes(tmp_path: Path) -> None:
    assert render("a @@X@@ b", {"X": "1"}) == "a 1 b"
    with pytest.raises(TemplateError, match="Y"):
        render("@@X@@ @@Y@@", {"X": "1"})
    target = tmp_path / "f"
    assert write_if_changed(target, "one")
    mtime = target.stat().st_mtime_ns
    assert not write_if_changed(target, "one")
    assert target.stat().st_mtime_ns == mtime
    assert write_if_changed(target, "two")


def test_second_instance_start_restart_and_stop() -> None:
    """A second, private upstream: restart in the same directory reuses ports and files,
    stop() leaves no live process in either group."""
    workdir = Path(tempfile.mkdtemp(prefix="smime-upstream-restart-"))
    os.chmod(workdir, 0o711)  # noqa: S103
    try:
        up = start_upstream(workdir, users={"dave": "dave-pw"})
        pgids = [p.pid for p in up._procs.values()]
        ports = (up.imap_port, up.submission_port)
        conf = workdir / "postfix" / "etc" / "main.cf"
        mtime = conf.stat().st_mtime_ns
        up.stop()
        assert not up.running
        assert all(group_members(pgid) == [] for pgid in pgids)
        up.stop()  # idempotent

        again = start_upstream(workdir, users={"dave": "dave-pw"})
        try:
            assert (again.imap_port, again.submission_port) == ports
            assert conf.stat().st_mtime_ns == mtime  # nothing rewritten (gotcha 5)
            with imaplib.IMAP4(again.host, again.imap_port, timeout=10) as imap:
                imap.login("dave@example.test", "dave-pw")
        finally:
            again.stop()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def test_unreachable_workdir_is_a_clear_error(tmp_path: Path) -> None:
    # pytest's tmp_path lives under a 0700 directory: the daemons could not reach it.
    with pytest.raises(UpstreamError, match="not searchable"):
        start_upstream(tmp_path / "up")


def test_startup_failure_reports_log_tail() -> None:
    """Dovecot refuses its config: start fails at once (no waiting for the timeout) and the
    error carries the daemons' log tail, without passwords."""
    workdir = Path(tempfile.mkdtemp(prefix="smime-upstream-broken-"))
    os.chmod(workdir, 0o711)  # noqa: S103
    config = workdir / "config"
    config.mkdir()
    src = Path(__file__).resolve().parents[2] / "config" / "upstream"
    for name in ("main.cf", "master.cf", "users"):
        (config / name).write_bytes((src / name).read_bytes())
    dovecot_conf = (src / "dovecot.conf").read_text()
    (config / "dovecot.conf").write_text(
        dovecot_conf.replace("protocols = imap lmtp", "protocols = imap lmtp bogus")
    )
    try:
        started = time.monotonic()
        with pytest.raises(UpstreamError) as info:
            start_upstream(workdir, config_dir=config, timeout=10)
        assert time.monotonic() - started < 8
        message = str(info.value)
        assert "dovecot" in message
        assert "bogus" in message
        # the users' passwords (alice-pw...); not "-pw" alone, which the random name of
        # the work directory can hold ("smime-upstream-broken-pw241eh4" failed once)
        for password in read_users_file(config / "users").values():
            assert password not in message
    finally:
        shutil.rmtree(workdir, ignore_errors=True)




def _wait_for_file(path: Path, proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, "harness exited early"
        assert time.monotonic() < deadline, f"{path} not written"
        time.sleep(0.02)


def test_cli_runs_in_foreground_and_cleans_up_after_sigkill() -> None:
    """`python -m smime_proxy.harness` (scripts/run.sh): env file when ready, clean stop on
    SIGTERM; a SIGKILLed run's daemons are stopped by the next start in the directory."""
    workdir = Path(tempfile.mkdtemp(prefix="smime-upstream-cli-"))
    os.chmod(workdir, 0o711)  # noqa: S103
    env_file = workdir / "upstream.env"
    argv = [sys.executable, "-m", "smime_proxy.harness", "--workdir", str(workdir / "up"),
            "--env-file", str(env_file)]
    try:
        first = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL)
        _wait_for_file(env_file, first)
        settings = dict(line.split("=", 1) for line in env_file.read_text().splitlines())
        assert "pw" not in env_file.read_text()  # no password in the env file
        assert settings["UPSTREAM_USERS"] == "'alice bob carol'"
        leaders = [int((workdir / "up" / "run" / f"{n}.pgid").read_text())
                   for n in ("dovecot", "postfix")]
        first.kill()  # SIGKILL: the daemons survive it
        first.wait()
        assert all(group_members(pgid) for pgid in leaders)
        env_file.unlink()

        second = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.PIPE)
        _wait_for_file(env_file, second)
        assert not any(group_members(pgid) for pgid in leaders)  # the leftovers are gone
        port = int(dict(line.split("=", 1)
                        for line in env_file.read_text().splitlines())["UPSTREAM_IMAP_PORT"])
        with imaplib.IMAP4("127.0.0.1", port, timeout=10) as imap:
            imap.login("carol", "carol-pw")
        leaders = [int((workdir / "up" / "run" / f"{n}.pgid").read_text())
                   for n in ("dovecot", "postfix")]
        second.send_signal(signal.SIGTERM)
        _, err = second.communicate(timeout=30)
        assert second.returncode == 0, err
        assert b"stopped in" in err
        assert b"-pw" not in err
        assert not env_file.exists()
        assert not any(group_members(pgid) for pgid in leaders)
    finally:
        for pgid_file in (workdir / "up" / "run").glob("*.pgid"):
            with contextlib.suppress(OSError, ValueError):
                os.killpg(int(pgid_file.read_text()), signal.SIGKILL)
        shutil.rmtree(workdir, ignore_errors=True)


def test_login_never_working_times_out_with_clear_error() -> None:
    """Daemons up but LOGIN refused (passdb file missing): bounded wait, then an error
    naming the failing check, with the log tail and no password."""
    workdir = Path(tempfile.mkdtemp(prefix="smime-upstream-timeout-"))
    os.chmod(workdir, 0o711)  # noqa: S103
    config = workdir / "config"
    config.mkdir()
    src = Path(__file__).resolve().parents[2] / "config" / "upstream"
    for name in ("main.cf", "master.cf", "users"):
        (config / name).write_bytes((src / name).read_bytes())
    (config / "dovecot.conf").write_text(
        (src / "dovecot.conf").read_text().replace("@@DIR@@/users", "@@DIR@@/no-such-users")
    )
    try:
        started = time.monotonic()
        with pytest.raises(UpstreamError) as info:
            start_upstream(workdir, config_dir=config, timeout=2)
        assert 2 <= time.monotonic() - started < 6
        message = str(info.value)
        assert message.startswith("upstream not ready in time (last check: imap: ")
        assert "dovecot.log" in message
        assert "no-such-users" in message  # Dovecot's own complaint, from the log tail
        # the users' passwords (alice-pw...); not "-pw" alone, which the random name of
        # the work directory can hold ("smime-upstream-broken-pw241eh4" failed once)
        for password in read_users_file(config / "users").values():
            assert password not in message
        assert not list((workdir / "run").glob("*.pgid"))  # stopped
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def test_port_taken_between_choice_and_bind_is_retried(monkeypatch: pytest.MonkeyPatch) -> None:
    """Another process grabs a chosen port before Dovecot binds it: new ports, no failure."""
    import smime_proxy.harness.upstream as upstream_module

    real_choose = upstream_module._choose_ports
    calls: list[bool] = []
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]

        def choose(state: Path, *, fresh: bool) -> dict[str, int]:
            calls.append(fresh)
            ports = real_choose(state, fresh=fresh)
            return {**ports, "imaps": taken} if len(calls) == 1 else ports

        monkeypatch.setattr(upstream_module, "_choose_ports", choose)
        workdir = Path(tempfile.mkdtemp(prefix="smime-upstream-retry-"))
        os.chmod(workdir, 0o711)  # noqa: S103
        try:
            with start_upstream(workdir) as up:
                assert calls == [False, True]
                assert up.imaps_port != taken
                with imaplib.IMAP4_SSL(up.host, up.imaps_port, ssl_context=up.ssl_context(),
                                       timeout=10) as imap:
                    imap.login("alice", "alice-pw")
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
