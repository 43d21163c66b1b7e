"""The SMTP front on the wire, against a scripted fake upstream (faults on cue): EHLO, AUTH
and TLS rules, per-command relaying, DATA outcomes, faults at every step (never a 250
without delivery, never a duplicate), smuggling, pipelining, STARTTLS injection."""

from __future__ import annotations

import smtplib
import socket
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from smime_proxy.errors import ConfigError
from smime_proxy.harness.tls import ensure_tls
from smime_proxy.smtp.server import SmtpFront, SmtpSettings
from support.fake_smtp import FakeUpstream
from support.smtp_proxy import (
    UNLOCK_URL,
    KeyWorld,
    LoopThread,
    key_world,
    listener,
    make_front,
    people,
    plain_upstream,
    policy,
)

ALICE = "alice@example.test"
BOB = "bob@example.test"


def _message(subject: str = "Hello", extra: str = "", to: str = BOB) -> bytes:
    return (f"From: {ALICE}\r\nTo: {to}\r\n{extra}Subject: {subject}\r\n"
            "Message-ID: <s1@example.test>\r\n\r\nbody line\r\n.dot line\r\n").encode()


@dataclass
class Env:
    loop: LoopThread
    fake: FakeUpstream
    front: SmtpFront
    world: KeyWorld

    def client(self) -> smtplib.SMTP:
        c = smtplib.SMTP("127.0.0.1", self.front.port, timeout=20)
        c.ehlo("client.test")
        return c

    def login(self) -> smtplib.SMTP:
        c = self.client()
        c.login("alice", "alice-pw")
        return c


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    yield from _env(tmp_path)


def _env(tmp_path: Path, **kwargs: object) -> Iterator[Env]:
    world = key_world()
    world.give_key("alice", people().ids["alice"], unlock=True)
    with LoopThread() as loop:
        fake = FakeUpstream(**kwargs)  # type: ignore[arg-type]
        loop.run(fake.start())
        front = make_front(world, plain_upstream(fake.port),
                           settings=SmtpSettings(timeout=1.0))
        loop.run(front.start())
        try:
            yield Env(loop, fake, front, world)
        finally:
            loop.run(front.stop(1.0))
            loop.run(fake.stop())


def test_ehlo_advertises_upstream_size_and_extensions(env: Env) -> None:
    with env.client() as c:
        features = c.esmtp_features
    assert features["size"] == str(env.fake.size)
    for name in ("8bitmime", "smtputf8", "pipelining", "enhancedstatuscodes", "auth"):
        assert name in features, name


def test_no_smtputf8_when_upstream_lacks_it(tmp_path: Path) -> None:
    for e in _env(tmp_path, smtputf8=False):
        with e.client() as c:
            assert "smtputf8" not in c.esmtp_features
            assert "8bitmime" in c.esmtp_features


def test_auth_is_the_upstream_login(env: Env) -> None:
    with env.client() as c:
        c.user, c.password = "alice", "wrong"
        with pytest.raises(smtplib.SMTPAuthenticationError) as info:
            c.auth("PLAIN", c.auth_plain)
        assert info.value.smtp_code == 535
        assert env.fake.commands.count("AUTH") == 1  # one client AUTH, one upstream AUTH
        code, _ = c.mail(ALICE)
        assert code == 530
        c.login("alice", "alice-pw")
    assert env.fake.commands.count("AUTH") == 2
    assert env.fake.connections == 1  # the same upstream connection then carries the mail


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN"])
def test_auth_mechanisms(env: Env, mechanism: str) -> None:
    with env.client() as c:
        c.user, c.password = "alice", "alice-pw"
        code, _ = c.auth(mechanism, getattr(c, f"auth_{mechanism.lower()}"),
                         initial_response_ok=mechanism == "PLAIN")
        assert code == 235


def test_mail_needs_auth(env: Env) -> None:
    with env.client() as c:
        code, _ = c.mail(ALICE)
        assert code == 530
    assert "MAIL" not in env.fake.commands


@pytest.mark.parametrize("step", ["MAIL", "RCPT"])
@pytest.mark.parametrize("reply", ["451 4.3.0 try later", "550 5.1.1 no such user"])
def test_mail_and_rcpt_rejections_relayed(env: Env, step: str, reply: str) -> None:
    env.fake.script[step] = reply
    with env.login() as c:
        with pytest.raises((smtplib.SMTPSenderRefused, smtplib.SMTPRecipientsRefused)) as info:
            c.sendmail(ALICE, [BOB], _message())
        text = str(info.value)
        code, status = reply.split()[:2]
        assert code in text and status in text
    assert env.fake.delivered == []


def test_passthrough_bytes_and_250_from_upstream(env: Env) -> None:
    message = _message(extra="X-SMIME-Sign: no\r\n")
    with env.login() as c:
        assert c.sendmail(ALICE, [BOB], message) == {}
    [delivery] = env.fake.delivered
    assert delivery.data == _message()
    assert delivery.recipients == [BOB]


@pytest.mark.parametrize("step", ["MAIL", "RCPT", "DATA", "DATA_END"])
@pytest.mark.parametrize("fault", ["kill", "stall", "451 4.3.0 later", "554 5.7.0 no"])
def test_upstream_faults_never_250_without_delivery(env: Env, step: str, fault: str) -> None:
    env.fake.script[f"{step}#1"] = fault
    message = _message(extra="X-SMIME-Sign: no\r\n")
    outcome: int | None = None
    with env.login() as c:
        try:
            c.sendmail(ALICE, [BOB], message)
            outcome = 250
        except smtplib.SMTPResponseException as exc:
            outcome = exc.smtp_code
        except smtplib.SMTPRecipientsRefused as exc:
            outcome = next(iter(exc.recipients.values()))[0]
        except smtplib.SMTPServerDisconnected:
            outcome = None
        if fault in ("kill", "stall"):  # the session ends with the upstream connection
            with pytest.raises(smtplib.SMTPServerDisconnected):
                c.noop()
        else:
            assert c.noop()[0] == 250
    assert outcome != 250
    assert env.fake.delivered == []
    if fault in ("kill", "stall"):
        assert outcome == 451
    else:
        assert outcome == int(fault[:3])
    # the client retries: exactly one delivery
    with env.login() as c:
        assert c.sendmail(ALICE, [BOB], message) == {}
    assert len(env.fake.delivered) == 1


def test_size_limit_from_upstream(tmp_path: Path) -> None:
    for e in _env(tmp_path, size=5000):
        big = _message() + (b"y" * 70 + b"\r\n") * 100
        with e.login() as c:
            code, _ = c.mail(ALICE, ["SIZE=6000"])  # declared: refused at once
            assert code == 552
            c.rset()
            assert c.mail(ALICE)[0] == 250
            assert c.rcpt(BOB)[0] == 250
            code, text = c.data(big)  # undeclared: read to the end, then refused
            assert code == 552 and b"5.3.4" in text
            assert c.sendmail(ALICE, [BOB], _message()) == {}
        assert len(e.fake.delivered) == 1


def test_too_big_after_encryption_is_552(tmp_path: Path) -> None:
    for e in _env(tmp_path, size=3000):
        e.world.know("alice", people().ids["bob"])
        body = (b"z" * 70 + b"\r\n") * 30  # 2 KB: fits, but not once encrypted
        with e.login() as c:
            with pytest.raises(smtplib.SMTPDataError) as info:
                c.sendmail(ALICE, [BOB], _message() + body)
            assert info.value.smtp_code == 552
            assert b"after S/MIME" in info.value.smtp_error
        assert e.fake.delivered == []


def test_locked_sign_required_is_451_with_unlock_url(env: Env) -> None:
    env.front.policy = policy("global: {sign: required}")
    env.world.secure_mail.lock("alice")
    with env.login() as c:
        with pytest.raises(smtplib.SMTPDataError) as info:
            c.sendmail(ALICE, [BOB], _message())
        assert info.value.smtp_code == 451
        assert b"4.7.0" in info.value.smtp_error
        assert UNLOCK_URL.encode() in info.value.smtp_error
    assert env.fake.delivered == []
    assert "RSET" in env.fake.commands


def _raw(env: Env) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", env.front.port), timeout=10)
    _read_reply(sock)
    for line in (b"EHLO raw.test\r\n", b"AUTH PLAIN AGFsaWNlAGFsaWNlLXB3\r\n"):
        sock.sendall(line)
        _read_reply(sock)
    return sock


def _read_reply(sock: socket.socket) -> bytes:
    data = b""
    while True:
        data += sock.recv(65536)
        lines = data.split(b"\r\n")
        if len(lines) >= 2 and len(lines[-2]) >= 4 and lines[-2][3:4] == b" ":
            return data


@pytest.mark.parametrize("smuggle", [b"\n.\n", b"\r\n.\n", b"\n.\r\n", b"\r.\r\n"])
def test_smuggling_refused_and_never_split(env: Env, smuggle: bytes) -> None:
    sock = _raw(env)
    sock.sendall(b"MAIL FROM:<alice@example.test>\r\nRCPT TO:<bob@example.test>\r\nDATA\r\n")
    replies = b""
    while replies.count(b"\r\n") < 3:
        replies += sock.recv(4096)
    assert replies.split(b"\r\n")[2].startswith(b"354")
    sock.sendall(b"Subject: one\r\n\r\nfirst" + smuggle
                 + b"MAIL FROM:<alice@example.test>\r\nRCPT TO:<bob@example.test>\r\nDATA\r\n"
                 + b"Subject: smuggled\r\n\r\nsecond\r\n.\r\nNOOP\r\n")
    reply = _read_reply(sock)
    assert reply.startswith(b"554 5.6.0")
    if b"250" not in reply:
        reply += _read_reply(sock)
    assert reply.endswith(b"250 OK\r\n")  # the pipelined NOOP, nothing else
    sock.close()
    assert env.fake.delivered == []


def test_pipelined_transaction_and_quit(env: Env) -> None:
    sock = _raw(env)
    sock.sendall(b"MAIL FROM:<alice@example.test>\r\nRCPT TO:<bob@example.test>\r\nDATA\r\n")
    replies = b""
    while replies.count(b"\r\n") < 3:
        replies += sock.recv(4096)
    sock.sendall(b"X-SMIME-Sign: no\r\nSubject: p\r\n\r\nhi\r\n.\r\nQUIT\r\n")
    rest = b""
    while not rest.endswith(b"221 2.0.0 Bye\r\n"):
        chunk = sock.recv(4096)
        assert chunk, rest
        rest += chunk
    assert rest.startswith(b"250 2.0.0")
    sock.close()
    assert [d.data for d in env.fake.delivered] == [b"Subject: p\r\n\r\nhi\r\n"]


def test_bcc_copy_failure_retry_has_no_duplicate(env: Env) -> None:
    p = people()
    for name in ("bob", "carol"):
        env.world.know("alice", p.ids[name])
    env.fake.script["DATA_END#2"] = "451 4.3.0 disk full"
    message = _message(extra="Bcc: carol@example.test\r\n")
    with env.login() as c:
        with pytest.raises(smtplib.SMTPDataError) as info:
            c.sendmail(ALICE, [BOB, "carol@example.test"], message)
        assert info.value.smtp_code == 451
    assert [d.recipients for d in env.fake.delivered] == [[BOB]]
    with env.login() as c:
        assert c.sendmail(ALICE, [BOB, "carol@example.test"], message) == {}
    assert [d.recipients for d in env.fake.delivered] == [[BOB], ["carol@example.test"]]
    with env.login() as c:  # a deliberate later resend is sent again, in full
        c.sendmail(ALICE, [BOB, "carol@example.test"], message)
    assert len(env.fake.delivered) == 4


def _tls_env(tmp_path: Path, mode: str, loopback: bool) -> Iterator[Env]:
    files = ensure_tls(tmp_path / "tls")
    world = key_world()
    with LoopThread() as loop:
        fake = FakeUpstream()
        loop.run(fake.start())
        front = make_front(world, plain_upstream(fake.port),
                           listen=listener(tls=(files.server_cert, files.server_key, mode),
                                           plaintext_loopback=loopback))
        loop.run(front.start())
        try:
            yield Env(loop, fake, front, world)
        finally:
            loop.run(front.stop(1.0))
            loop.run(fake.stop())


def test_starttls_required_for_auth(tmp_path: Path) -> None:
    ca = str(tmp_path / "tls" / "ca.pem")
    for e in _tls_env(tmp_path, "starttls", loopback=False):
        with e.client() as c:
            assert "auth" not in c.esmtp_features
            assert "starttls" in c.esmtp_features
            code, _ = c.docmd("AUTH PLAIN AGFsaWNlAGFsaWNlLXB3")
            assert code == 538
            c.starttls(context=ssl.create_default_context(cafile=ca))
            c.ehlo("client.test")
            assert "auth" in c.esmtp_features
            c.login("alice", "alice-pw")
            assert c.sendmail(ALICE, [BOB], _message(extra="X-SMIME-Sign: no\r\n")) == {}
        assert len(e.fake.delivered) == 1


def test_plaintext_loopback_switch(tmp_path: Path) -> None:
    for e in _tls_env(tmp_path, "starttls", loopback=True):
        with e.client() as c:
            assert "auth" in c.esmtp_features
            c.login("alice", "alice-pw")


def test_implicit_tls(tmp_path: Path) -> None:
    ca = str(tmp_path / "tls" / "ca.pem")
    for e in _tls_env(tmp_path, "implicit", loopback=False):
        with smtplib.SMTP_SSL("127.0.0.1", e.front.port, timeout=10,
                              context=ssl.create_default_context(cafile=ca)) as c:
            c.ehlo("client.test")
            assert "starttls" not in c.esmtp_features
            c.login("alice", "alice-pw")
            assert c.sendmail(ALICE, [BOB], _message(extra="X-SMIME-Sign: no\r\n")) == {}


def test_starttls_injection_discarded(tmp_path: Path) -> None:
    ca = str(tmp_path / "tls" / "ca.pem")
    for e in _tls_env(tmp_path, "starttls", loopback=False):
        sock = socket.create_connection(("127.0.0.1", e.front.port), timeout=10)
        _read_reply(sock)
        sock.sendall(b"EHLO raw.test\r\n")
        _read_reply(sock)
        sock.sendall(b"STARTTLS\r\nAUTH PLAIN AGFsaWNlAGFsaWNlLXB3\r\n")
        assert _read_reply(sock).startswith(b"220")
        context = ssl.create_default_context(cafile=ca)
        tls = context.wrap_socket(sock, server_hostname="localhost")
        tls.sendall(b"NOOP\r\n")
        reply = _read_reply(tls)
        assert reply == b"250 OK\r\n"  # nothing answered the injected AUTH
        tls.close()
        assert "AUTH" not in e.fake.commands


def test_recipient_cap(tmp_path: Path) -> None:
    world = key_world()
    with LoopThread() as loop:
        fake = FakeUpstream()
        loop.run(fake.start())
        front = make_front(world, plain_upstream(fake.port),
                           settings=SmtpSettings(timeout=5.0, max_recipients=2))
        loop.run(front.start())
        try:
            with smtplib.SMTP("127.0.0.1", front.port, timeout=10) as c:
                c.login("alice", "alice-pw")
                assert c.mail(ALICE)[0] == 250
                assert c.rcpt("a@example.test")[0] == 250
                assert c.rcpt("b@example.test")[0] == 250
                code, text = c.rcpt("c@example.test")
                assert (code, text[:5]) == (452, b"4.5.3")
            assert fake.commands.count("RCPT") == 2
        finally:
            loop.run(front.stop(1.0))
            loop.run(fake.stop())


def test_policy_reload_keeps_old_policy_on_error(tmp_path: Path) -> None:
    file = tmp_path / "policy.yaml"
    file.write_text("global: {sign: never}\n")
    world = key_world()
    front = SmtpFront(secure_mail=world.secure_mail, contacts=world.contacts,
                      listener=listener(), upstream=plain_upstream(1), unlock_url=UNLOCK_URL,
                      policy_file=file, now=lambda: world.now)
    assert _global_sign(front) == "never"
    file.write_text("global: {sign: required}\n")
    front.reload_policy()
    assert _global_sign(front) == "required"
    file.write_text("global: {sign: sometimes}\n")
    with pytest.raises(ConfigError, match=r"^global\.sign:"):
        front.reload_policy()
    assert _global_sign(front) == "required"


def _global_sign(front: SmtpFront) -> str:
    return str(front.policy.rules[0].settings.sign)


def test_from_services_wires_config_and_reload(tmp_path: Path) -> None:
    from smime_proxy.config import parse_config

    (tmp_path / "policy.yaml").write_text("global: {encrypt: never}\n")
    config = parse_config({
        "listeners": {
            "imap": {"port": 1143, "plaintext_loopback": True},
            "smtp": {"port": 1587, "plaintext_loopback": True},
            "control": {"host": "127.0.0.1", "port": 8443,
                        "tls": {"mode": "implicit", "cert": "c.pem", "key": "k.pem"}},
        },
        "upstream": {"imap": {"host": "127.0.0.1", "port": 143, "tls": "none"},
                     "smtp": {"host": "127.0.0.1", "port": 587, "tls": "none"}},
        "data_dir": str(tmp_path / "data"),
        "policy_file": "policy.yaml",
    }, base_dir=tmp_path, check_files=False)
    from smime_proxy.app import build_services

    services = build_services(config, kdf_iterations=1000)
    front = SmtpFront.from_services(services)
    assert front.unlock_url == "https://127.0.0.1:8443/"
    assert front.listener.port == 1587
    assert front.secure_mail is services.secure_mail
    assert _global_encrypt(front) == "never"
    assert services.reload_hooks == [front.reload_policy]
    (tmp_path / "policy.yaml").write_text("global: {encrypt: required}\n")
    services.reload()  # what SIGHUP does
    assert _global_encrypt(front) == "required"
    (tmp_path / "policy.yaml").write_text("global: {encrypt: sometimes}\n")
    services.reload()  # a bad file is logged and the policy in force stays
    assert _global_encrypt(front) == "required"


def _global_encrypt(front: SmtpFront) -> str:
    return str(front.policy.rules[0].settings.encrypt)


@pytest.mark.parametrize("mode", ["starttls", "implicit"])
def test_upstream_tls_never_falls_back_to_plaintext(tmp_path: Path, mode: str) -> None:
    from smime_proxy.config import UpstreamEndpoint

    world = key_world()
    with LoopThread() as loop:
        fake = FakeUpstream()  # speaks plaintext only, offers no STARTTLS
        loop.run(fake.start())
        endpoint = UpstreamEndpoint(host="127.0.0.1", port=fake.port, tls=mode,  # type: ignore[arg-type]
                                    verify=False, ca_file=None)
        front = make_front(world, endpoint, settings=SmtpSettings(timeout=2.0))
        loop.run(front.start())
        try:
            with smtplib.SMTP("127.0.0.1", front.port, timeout=10) as c:
                code, text = c.ehlo("client.test")
                assert code == 421, text
                with pytest.raises(smtplib.SMTPServerDisconnected):
                    c.noop()  # the session ended with the 421
            assert "AUTH" not in fake.commands
        finally:
            loop.run(front.stop(1.0))
            loop.run(fake.stop())


@pytest.mark.parametrize("arg", [
    "<bob@example.test>", "<bob@example.test> SIZE=100", " <a.b+c@x-y.test>",
    "<a..b@x.test>", "<.a@x.test>", "<a.@x.test>", "<>", '<"q t"@x.test>',
    "<bob@[127.0.0.1]>", "<@r:b@x.test>", "bob@x.test", "<bob@x.test>junk",
    "<bob@-x.test>", "<b@x..test>", "<b@x.test>  (c) SIZE=1", "<b@x.test>\tBODY=8BITMIME ",
    "<" + "l" * 70 + "@x.test>",
])
def test_fast_address_parser_agrees_with_aiosmtpd(arg: str) -> None:
    from aiosmtpd.smtp import SMTP

    from smime_proxy.smtp import server

    class _Limits:
        local_part_limit = 64

    expected = SMTP._getaddr(_Limits(), arg)  # type: ignore[arg-type]
    got = server.SmtpConnection._getaddr(_Limits(), arg)  # type: ignore[arg-type]
    assert got == expected


def test_certificate_cache_hits_misses_and_expiry() -> None:
    from smime_proxy.errors import NoRecipientCertificate
    from smime_proxy.smtp.keys import CertificateCache, ServiceKeys

    world = key_world()
    cache = CertificateCache(ttl=3600)
    keys = ServiceKeys(world.secure_mail, world.contacts, world.now, cache)
    with pytest.raises(NoRecipientCertificate) as info:
        keys.recipient_certificate("alice", "Bob@example.test")
    assert info.value.addresses == [BOB]
    world.know("alice", people().ids["bob"])
    with pytest.raises(NoRecipientCertificate):  # the miss is remembered...
        keys.recipient_certificate("alice", BOB)
    cache.clear()  # ...until it expires
    assert keys.recipient_certificate("alice", BOB) == people().ids["bob"].cert
    with pytest.raises(NoRecipientCertificate) as info:  # never echoes a bad address
        keys.recipient_certificate("alice", "x\r\nInjected: 1@example.test")
    assert info.value.addresses == ["(invalid address)"]
    expired = ServiceKeys(world.secure_mail, world.contacts, world.now, CertificateCache(ttl=0))
    world.contacts.remove("alice", BOB)
    with pytest.raises(NoRecipientCertificate):
        expired.recipient_certificate("alice", BOB)


def test_certificate_directory_after_the_address_book(tmp_path: Path) -> None:
    import datetime as dt

    from smime_proxy.errors import NoRecipientCertificate
    from smime_proxy.smtp.directory import CertificateDirectory
    from smime_proxy.smtp.keys import ServiceKeys
    from support import pki

    p = people()
    directory = tmp_path / "certs"
    directory.mkdir()
    expired = pki.make_user("erin@example.test", p.ca,
                            not_after=pki.NOW - dt.timedelta(days=1))
    (directory / "carol.pem").write_bytes(p.ids["carol"].cert_pem())
    (directory / "erin.crt").write_bytes(expired.cert_pem())
    (directory / "ca.pem").write_bytes(p.ca.cert_pem())
    (directory / "garbage.pem").write_bytes(b"not a certificate")
    (directory / "notes.txt").write_bytes(b"ignored")
    certs = CertificateDirectory.load(directory)
    assert set(certs.by_address) == {CAROL_ADDR, "erin@example.test"}
    world = key_world()
    keys = ServiceKeys(world.secure_mail, world.contacts, world.now, None, certs)
    assert keys.recipient_certificate("alice", "Carol@example.test") == p.ids["carol"].cert
    with pytest.raises(NoRecipientCertificate):  # expired: not usable
        keys.recipient_certificate("alice", "erin@example.test")
    other = pki.make_user(CAROL_ADDR, p.ca)
    world.contacts.add("alice", other.cert_pem())  # the address book comes first
    assert keys.recipient_certificate("alice", CAROL_ADDR) == other.cert


CAROL_ADDR = "carol@example.test"


def test_no_password_or_body_in_any_log_line(env: Env, caplog: pytest.LogCaptureFixture) -> None:
    import base64
    import logging

    caplog.set_level(logging.DEBUG)
    secret_body = b"the body must never be logged 4b1d"
    with env.client() as c:
        c.user, c.password = "alice", "alice-pw"
        code, _ = c.auth("LOGIN", c.auth_login, initial_response_ok=False)
        assert code == 235
        c.sendmail(ALICE, [BOB], _message(extra="X-SMIME-Sign: no\r\n") + secret_body + b"\r\n")
    with env.client() as c:
        c.user, c.password = "alice", "wrong-password-9f2"
        with pytest.raises(smtplib.SMTPAuthenticationError):
            c.auth("PLAIN", c.auth_plain, initial_response_ok=False)
    with env.client() as c:  # a broken client answering a challenge with a raw password
        assert c.docmd("AUTH LOGIN")[0] == 334
        assert c.docmd("raw-password-77")[0] == 501
    text = "\n".join(f"{r.getMessage()} {r.__dict__}" for r in caplog.records)
    assert any(r.name == "mail.log" for r in caplog.records)  # aiosmtpd did log
    for secret in ("alice-pw", "wrong-password-9f2", base64.b64encode(b"alice-pw").decode(),
                   base64.b64encode(b"\0alice\0wrong-password-9f2").decode(),
                   secret_body.decode(), "raw-password-77"):
        assert secret not in text, secret
