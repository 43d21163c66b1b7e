"""The SMTP front on the wire, against a scripted fake upstream (faults on cue): EHLO, AUTH
and TLS rules, per-command relaying, DATA outcomes, faults at every step (never a 250
without delivery, never a duplicate), smuggling, pipelining, STARTTLS injection.

Async tests on pytest-asyncio's loop: the front, the fake upstream and the client
(aiosmtplib, or raw asyncio streams) share it."""

from __future__ import annotations

import asyncio
import base64
import ssl
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager, suppress
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import aiosmtplib
import pytest

from smime_proxy.config import ListenerConfig, UpstreamEndpoint
from smime_proxy.errors import ConfigError
from smime_proxy.harness.tls import ensure_tls
from smime_proxy.smtp.server import SmtpFront, SmtpSettings
from support.fake_smtp import FakeUpstream
from support.smtp_proxy import (
    UNLOCK_URL,
    KeyWorld,
    async_client,
    command,
    key_world,
    listener,
    make_front,
    people,
    plain_upstream,
    policy,
)

ALICE = "alice@example.test"
BOB = "bob@example.test"
PLAIN_ALICE = base64.b64encode(b"\0alice\0alice-pw").decode()


def _message(subject: str = "Hello", extra: str = "", to: str = BOB) -> bytes:
    return (f"From: {ALICE}\r\nTo: {to}\r\n{extra}Subject: {subject}\r\n"
            "Message-ID: <s1@example.test>\r\n\r\nbody line\r\n.dot line\r\n").encode()


@dataclass
class Env:
    fake: FakeUpstream
    front: SmtpFront
    world: KeyWorld

    def client(self, **kwargs: object) -> AbstractAsyncContextManager[aiosmtplib.SMTP]:
        return async_client(self.front.port, **kwargs)  # type: ignore[arg-type]

    def login(self) -> AbstractAsyncContextManager[aiosmtplib.SMTP]:
        return async_client(self.front.port, login=("alice", "alice-pw"))


@asynccontextmanager
async def _env(*, settings: SmtpSettings | None = None, listen: ListenerConfig | None = None,
               endpoint: UpstreamEndpoint | None = None, key: bool = True,
               **kwargs: object) -> AsyncIterator[Env]:
    world = key_world()
    if key:
        world.give_key("alice", people().ids["alice"], unlock=True)
    fake = FakeUpstream(**kwargs)  # type: ignore[arg-type]
    await fake.start()
    front = make_front(world, endpoint or plain_upstream(fake.port), listen=listen,
                       settings=settings or SmtpSettings(timeout=1.0))
    await front.start()
    try:
        yield Env(fake, front, world)
    finally:
        await front.stop(1.0)
        await fake.stop()


@pytest.fixture
async def env() -> AsyncIterator[Env]:
    async with _env() as e:
        yield e


async def test_ehlo_advertises_upstream_size_and_extensions(env: Env) -> None:
    async with env.client() as c:
        features = c.esmtp_extensions
    assert features["size"] == str(env.fake.size)
    for name in ("8bitmime", "smtputf8", "pipelining", "enhancedstatuscodes", "auth"):
        assert name in features, name


async def test_no_smtputf8_when_upstream_lacks_it() -> None:
    async with _env(smtputf8=False) as e, e.client() as c:
        assert "smtputf8" not in c.esmtp_extensions
        assert "8bitmime" in c.esmtp_extensions


async def test_auth_is_the_upstream_login(env: Env) -> None:
    async with env.client() as c:
        with pytest.raises(aiosmtplib.SMTPAuthenticationError) as info:
            await c.auth_plain("alice", "wrong")
        assert info.value.code == 535
        assert env.fake.commands.count("AUTH") == 1  # one client AUTH, one upstream AUTH
        assert (await command(c, f"MAIL FROM:<{ALICE}>"))[0] == 530
        await c.login("alice", "alice-pw")
    assert env.fake.commands.count("AUTH") == 2
    assert env.fake.connections == 1  # the same upstream connection then carries the mail


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


@pytest.mark.parametrize("dialogue", [
    [f"AUTH PLAIN {PLAIN_ALICE}"],
    ["AUTH PLAIN", PLAIN_ALICE],
    [f"AUTH LOGIN {_b64('alice')}", _b64("alice-pw")],
    ["AUTH LOGIN", _b64("alice"), _b64("alice-pw")],
])
async def test_auth_mechanisms(env: Env, dialogue: list[str]) -> None:
    async with env.client() as c:
        for line in dialogue[:-1]:
            assert (await command(c, line))[0] == 334
        assert (await command(c, dialogue[-1]))[0] == 235


async def test_mail_needs_auth(env: Env) -> None:
    async with env.client() as c:
        assert (await command(c, f"MAIL FROM:<{ALICE}>"))[0] == 530
    assert "MAIL" not in env.fake.commands


@pytest.mark.parametrize("step", ["MAIL", "RCPT"])
@pytest.mark.parametrize("reply", ["451 4.3.0 try later", "550 5.1.1 no such user"])
async def test_mail_and_rcpt_rejections_relayed(env: Env, step: str, reply: str) -> None:
    env.fake.script[step] = reply
    async with env.login() as c:
        with pytest.raises((aiosmtplib.SMTPSenderRefused,
                            aiosmtplib.SMTPRecipientsRefused)) as info:
            await c.sendmail(ALICE, [BOB], _message())
        text = str(info.value)
        code, status = reply.split()[:2]
        assert code in text and status in text
    assert env.fake.delivered == []


async def test_passthrough_bytes_and_250_from_upstream(env: Env) -> None:
    message = _message(extra="X-SMIME-Sign: no\r\n")
    async with env.login() as c:
        assert (await c.sendmail(ALICE, [BOB], message))[0] == {}
    [delivery] = env.fake.delivered
    assert delivery.data == _message()
    assert delivery.recipients == [BOB]


async def _outcome(c: aiosmtplib.SMTP, message: bytes) -> int | None:
    try:
        await c.sendmail(ALICE, [BOB], message)
    except aiosmtplib.SMTPRecipientsRefused as exc:
        return exc.recipients[0].code
    except aiosmtplib.SMTPResponseException as exc:
        return exc.code
    except aiosmtplib.SMTPServerDisconnected:
        return None
    return 250


@pytest.mark.parametrize("step", ["MAIL", "RCPT", "DATA", "DATA_END"])
@pytest.mark.parametrize("fault", ["kill", "stall", "451 4.3.0 later", "554 5.7.0 no"])
async def test_upstream_faults_never_250_without_delivery(env: Env, step: str,
                                                          fault: str) -> None:
    env.fake.script[f"{step}#1"] = fault
    message = _message(extra="X-SMIME-Sign: no\r\n")
    async with env.login() as c:
        outcome = await _outcome(c, message)
        if fault in ("kill", "stall"):  # the session ends with the upstream connection
            with pytest.raises(aiosmtplib.SMTPServerDisconnected):
                await c.noop()
        else:
            assert (await c.noop()).code == 250
    assert outcome != 250
    assert env.fake.delivered == []
    if fault in ("kill", "stall"):
        assert outcome == 451
    else:
        assert outcome == int(fault[:3])
    # the client retries: exactly one delivery
    async with env.login() as c:
        assert (await c.sendmail(ALICE, [BOB], message))[0] == {}
    assert len(env.fake.delivered) == 1


async def test_size_limit_from_upstream() -> None:
    async with _env(size=5000) as e:
        big = _message() + (b"y" * 70 + b"\r\n") * 100
        async with e.login() as c:
            # declared: refused at once
            assert (await command(c, f"MAIL FROM:<{ALICE}> SIZE=6000"))[0] == 552
            await c.rset()
            assert (await c.mail(ALICE)).code == 250
            assert (await c.rcpt(BOB)).code == 250
            with pytest.raises(aiosmtplib.SMTPDataError) as info:
                await c.data(big)  # undeclared: read to the end, then refused
            assert info.value.code == 552 and "5.3.4" in info.value.message
            assert (await c.sendmail(ALICE, [BOB], _message()))[0] == {}
        assert len(e.fake.delivered) == 1


async def test_too_big_after_encryption_is_552() -> None:
    async with _env(size=3000) as e:
        e.world.know("alice", people().ids["bob"])
        body = (b"z" * 70 + b"\r\n") * 30  # 2 KB: fits, but not once encrypted
        async with e.login() as c:
            with pytest.raises(aiosmtplib.SMTPDataError) as info:
                await c.sendmail(ALICE, [BOB], _message() + body)
            assert info.value.code == 552
            assert "after S/MIME" in info.value.message
        assert e.fake.delivered == []


async def test_locked_sign_required_is_451_with_unlock_url(env: Env) -> None:
    env.front.policy = policy("global: {sign: required}")
    env.world.secure_mail.lock("alice")
    async with env.login() as c:
        with pytest.raises(aiosmtplib.SMTPDataError) as info:
            await c.sendmail(ALICE, [BOB], _message())
        assert info.value.code == 451
        assert "4.7.0" in info.value.message
        assert UNLOCK_URL in info.value.message
    assert env.fake.delivered == []
    assert "RSET" in env.fake.commands


Stream = tuple[asyncio.StreamReader, asyncio.StreamWriter]


async def _raw(env: Env) -> Stream:
    reader, writer = await asyncio.open_connection("127.0.0.1", env.front.port)
    await _read_reply(reader)
    for line in (b"EHLO raw.test\r\n", f"AUTH PLAIN {PLAIN_ALICE}\r\n".encode()):
        writer.write(line)
        await _read_reply(reader)
    return reader, writer


async def _read_reply(reader: asyncio.StreamReader) -> bytes:
    """One complete (possibly multi-line) reply."""
    data = b""
    while True:
        line = await asyncio.wait_for(reader.readline(), 10)
        assert line, data
        data += line
        if line[3:4] == b" ":
            return data


async def _read_lines(reader: asyncio.StreamReader, count: int) -> list[bytes]:
    return [await asyncio.wait_for(reader.readline(), 10) for _ in range(count)]


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with suppress(ConnectionError, ssl.SSLError):
        await writer.wait_closed()


@pytest.mark.parametrize("smuggle", [b"\n.\n", b"\r\n.\n", b"\n.\r\n", b"\r.\r\n"])
async def test_smuggling_refused_and_never_split(env: Env, smuggle: bytes) -> None:
    reader, writer = await _raw(env)
    writer.write(b"MAIL FROM:<alice@example.test>\r\nRCPT TO:<bob@example.test>\r\nDATA\r\n")
    replies = await _read_lines(reader, 3)
    assert replies[2].startswith(b"354")
    writer.write(b"Subject: one\r\n\r\nfirst" + smuggle
                 + b"MAIL FROM:<alice@example.test>\r\nRCPT TO:<bob@example.test>\r\nDATA\r\n"
                 + b"Subject: smuggled\r\n\r\nsecond\r\n.\r\nNOOP\r\n")
    assert (await _read_reply(reader)).startswith(b"554 5.6.0")
    assert await _read_reply(reader) == b"250 OK\r\n"  # the pipelined NOOP, nothing else
    await _close(writer)
    assert env.fake.delivered == []


async def test_pipelined_transaction_and_quit(env: Env) -> None:
    reader, writer = await _raw(env)
    writer.write(b"MAIL FROM:<alice@example.test>\r\nRCPT TO:<bob@example.test>\r\nDATA\r\n")
    await _read_lines(reader, 3)
    writer.write(b"X-SMIME-Sign: no\r\nSubject: p\r\n\r\nhi\r\n.\r\nQUIT\r\n")
    assert (await _read_reply(reader)).startswith(b"250 2.0.0")
    assert await _read_reply(reader) == b"221 2.0.0 Bye\r\n"
    await _close(writer)
    assert [d.data for d in env.fake.delivered] == [b"Subject: p\r\n\r\nhi\r\n"]


@pytest.mark.parametrize("fault", [None, "kill", "stall", "451 4.3.0 later", "554 5.7.0 no"])
async def test_bdat_when_the_upstream_offers_chunking(fault: str | None) -> None:
    message = _message(extra="X-SMIME-Sign: no\r\n") + b".\r\n..two dots\r\n.\r\n"
    async with _env(chunking=True) as e:
        if fault is not None:
            e.fake.script["BDAT#1"] = fault
        async with e.login() as c:
            outcome = await _outcome(c, message)
        if fault is not None:
            assert outcome == (451 if fault in ("kill", "stall") else int(fault[:3]))
            assert e.fake.delivered == []
            async with e.login() as c:  # the retry
                assert await _outcome(c, message) == 250
        else:
            assert outcome == 250
        [delivery] = e.fake.delivered
        assert delivery.data == _message() + b".\r\n..two dots\r\n.\r\n"
        assert "BDAT" in e.fake.commands and "DATA" not in e.fake.commands


@pytest.mark.parametrize("chunking", [False, True])
async def test_bcc_copy_failure_retry_has_no_duplicate(chunking: bool) -> None:
    async with _env(chunking=chunking) as env:
        await _bcc_copy_failure_retry(env, "BDAT#2" if chunking else "DATA_END#2")


async def _bcc_copy_failure_retry(env: Env, step: str) -> None:
    p = people()
    for name in ("bob", "carol"):
        env.world.know("alice", p.ids[name])
    env.fake.script[step] = "451 4.3.0 disk full"
    message = _message(extra="Bcc: carol@example.test\r\n")
    async with env.login() as c:
        with pytest.raises(aiosmtplib.SMTPDataError) as info:
            await c.sendmail(ALICE, [BOB, "carol@example.test"], message)
        assert info.value.code == 451
    assert [d.recipients for d in env.fake.delivered] == [[BOB]]
    async with env.login() as c:
        assert (await c.sendmail(ALICE, [BOB, "carol@example.test"], message))[0] == {}
    assert [d.recipients for d in env.fake.delivered] == [[BOB], ["carol@example.test"]]
    async with env.login() as c:  # a deliberate later resend is sent again, in full
        await c.sendmail(ALICE, [BOB, "carol@example.test"], message)
    assert len(env.fake.delivered) == 4


def _tls_env(tmp_path: Path, mode: str,
             loopback: bool) -> AbstractAsyncContextManager[Env]:
    files = ensure_tls(tmp_path / "tls")
    return _env(key=False, settings=SmtpSettings(timeout=5.0),
                listen=listener(tls=(files.server_cert, files.server_key, mode),
                                plaintext_loopback=loopback))


def _ca(tmp_path: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(tmp_path / "tls" / "ca.pem"))


async def test_starttls_required_for_auth(tmp_path: Path) -> None:
    async with _tls_env(tmp_path, "starttls", loopback=False) as e:
        async with e.client() as c:
            assert "auth" not in c.esmtp_extensions
            assert "starttls" in c.esmtp_extensions
            assert (await command(c, f"AUTH PLAIN {PLAIN_ALICE}"))[0] == 538
            await c.starttls(tls_context=_ca(tmp_path))
            await c.ehlo()
            assert "auth" in c.esmtp_extensions
            await c.login("alice", "alice-pw")
            message = _message(extra="X-SMIME-Sign: no\r\n")
            assert (await c.sendmail(ALICE, [BOB], message))[0] == {}
        assert len(e.fake.delivered) == 1


async def test_plaintext_loopback_switch(tmp_path: Path) -> None:
    async with _tls_env(tmp_path, "starttls", loopback=True) as e, e.client() as c:
        assert "auth" in c.esmtp_extensions
        await c.login("alice", "alice-pw")


async def test_a_failed_auth_after_starttls_leaves_the_client_unauthenticated(
        tmp_path: Path) -> None:
    async with _tls_env(tmp_path, "starttls", loopback=True) as e, e.client() as c:
        await c.login("alice", "alice-pw")  # allowed in plaintext from loopback
        await c.starttls(tls_context=_ca(tmp_path))  # the session (and its AUTH) restarts
        await c.ehlo()
        with pytest.raises(aiosmtplib.SMTPAuthenticationError):
            await c.auth_plain("alice", "wrong")
        assert (await command(c, f"MAIL FROM:<{ALICE}>"))[0] == 530
    assert e.fake.delivered == []


async def test_implicit_tls(tmp_path: Path) -> None:
    async with (_tls_env(tmp_path, "implicit", loopback=False) as e,
                e.client(use_tls=True, tls_context=_ca(tmp_path)) as c):
        assert "starttls" not in c.esmtp_extensions
        await c.login("alice", "alice-pw")
        assert (await c.sendmail(ALICE, [BOB], _message(extra="X-SMIME-Sign: no\r\n")))[0] == {}


async def test_starttls_injection_discarded(tmp_path: Path) -> None:
    async with _tls_env(tmp_path, "starttls", loopback=False) as e:
        reader, writer = await asyncio.open_connection("127.0.0.1", e.front.port)
        await _read_reply(reader)
        writer.write(b"EHLO raw.test\r\n")
        await _read_reply(reader)
        writer.write(f"STARTTLS\r\nAUTH PLAIN {PLAIN_ALICE}\r\n".encode())
        assert (await _read_reply(reader)).startswith(b"220")
        await writer.start_tls(_ca(tmp_path), server_hostname="localhost")
        writer.write(b"NOOP\r\n")
        assert await _read_reply(reader) == b"250 OK\r\n"  # nothing answered the injected AUTH
        await _close(writer)
        assert "AUTH" not in e.fake.commands


async def test_recipient_cap() -> None:
    async with (_env(key=False, settings=SmtpSettings(timeout=5.0, max_recipients=2)) as e,
                e.login() as c):
        assert (await c.mail(ALICE)).code == 250
        assert (await c.rcpt("a@example.test")).code == 250
        assert (await c.rcpt("b@example.test")).code == 250
        code, text = await command(c, "RCPT TO:<c@example.test>")
        assert (code, text[:5]) == (452, "4.5.3")
        assert e.fake.commands.count("RCPT") == 2


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
async def test_upstream_tls_never_falls_back_to_plaintext(mode: str) -> None:
    fake = FakeUpstream()  # speaks plaintext only, offers no STARTTLS
    await fake.start()
    endpoint = UpstreamEndpoint(host="127.0.0.1", port=fake.port, tls=mode,  # type: ignore[arg-type]
                                verify=False, ca_file=None)
    try:
        async with _env(key=False, endpoint=endpoint, settings=SmtpSettings(timeout=2.0)) as e:
            reader, writer = await asyncio.open_connection("127.0.0.1", e.front.port)
            assert (await _read_reply(reader)).startswith(b"220")
            writer.write(b"EHLO client.test\r\n")
            reply = await _read_reply(reader)
            assert reply.startswith(b"421 4.4.2"), reply
            assert await asyncio.wait_for(reader.read(), 10) == b""  # the session ended
            await _close(writer)
            assert "AUTH" not in fake.commands
    finally:
        await fake.stop()


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


async def test_no_password_or_body_in_any_log_line(env: Env,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    import logging

    caplog.set_level(logging.DEBUG)
    secret_body = b"the body must never be logged 4b1d"
    async with env.client() as c:
        for line, code in (("AUTH LOGIN", 334), (_b64("alice"), 334), (_b64("alice-pw"), 235)):
            assert (await command(c, line))[0] == code
        await c.sendmail(ALICE, [BOB],
                         _message(extra="X-SMIME-Sign: no\r\n") + secret_body + b"\r\n")
    async with env.client() as c:
        assert (await command(c, "AUTH PLAIN"))[0] == 334
        assert (await command(c, _b64("\0alice\0wrong-password-9f2")))[0] == 535
    async with env.client() as c:  # a broken client answering a challenge with a raw password
        assert (await command(c, "AUTH LOGIN"))[0] == 334
        assert (await command(c, "raw-password-77"))[0] == 501
    text = "\n".join(f"{r.getMessage()} {r.__dict__}" for r in caplog.records)
    assert any(r.name == "mail.log" for r in caplog.records)  # aiosmtpd did log
    for secret in ("alice-pw", "wrong-password-9f2", base64.b64encode(b"alice-pw").decode(),
                   base64.b64encode(b"\0alice\0wrong-password-9f2").decode(),
                   secret_body.decode(), "raw-password-77"):
        assert secret not in text, secret


async def test_auth_guessing_is_throttled_across_connections(env: Env) -> None:
    """Per user and client address over all connections (security issue, item 5): after the
    free failures a new connection gets 454 without the upstream being asked, even with the
    right password, until the delay has passed."""
    for guess in ("w1", "w2", "w3"):
        async with env.client() as c:
            with pytest.raises(aiosmtplib.SMTPAuthenticationError) as info:
                await c.auth_plain("alice", guess)
            assert info.value.code == 535
    asked = env.fake.commands.count("AUTH")
    async with env.client() as c:
        with pytest.raises(aiosmtplib.SMTPAuthenticationError) as info:
            await c.auth_plain("Alice@example.test", "alice-pw")  # the same account
        assert info.value.code == 454 and "try again in 1 s" in info.value.message
    assert env.fake.commands.count("AUTH") == asked  # the upstream was not asked
    env.world.now += timedelta(seconds=1)
    async with env.client() as c:
        await c.login("alice", "alice-pw")
