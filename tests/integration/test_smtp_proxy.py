"""The SMTP proxy against the real Postfix (submission, AUTH via Dovecot) and Dovecot: what
smtplib, swaks and s-nail send through the proxy arrives in the recipients' INBOX (read
from Dovecot directly), and `openssl cms` decrypts and verifies what arrived.

Here the real Postfix's smtpd is killed while the client sends its DATA. The other faults
on cue (kill/stall/4xx/5xx at every step) are in tests/unit/smtp/test_smtp_session.py,
against a scripted fake upstream: Postfix cannot be made to stall or answer 4xx on cue.
"""

from __future__ import annotations

import asyncio
import base64
import os
import shutil
import smtplib
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from smime_proxy.config import UpstreamEndpoint
from smime_proxy.harness import Upstream
from smime_proxy.harness.tls import ensure_tls
from smime_proxy.smtp.server import SmtpFront, SmtpSettings
from support.mailbox import fetch, wait_for
from support.procmem import processes
from support.smime_check import cannot_decrypt, decrypt, recipient_serials, verify
from support.smtp_proxy import (
    KEY_PASSWORD,
    KeyWorld,
    LoopThread,
    key_world,
    listener,
    make_front,
    people,
    policy,
)

ALICE = "alice@example.test"
BOB = "bob@example.test"
CAROL = "carol@example.test"


@dataclass
class Proxy:
    front: SmtpFront
    world: KeyWorld
    upstream: Upstream
    tls_dir: Path

    @property
    def port(self) -> int:
        return self.front.port

    def send(self, message: bytes, to: list[str], *, user: str = "alice",
             sender: str = ALICE) -> dict[str, tuple[int, bytes]]:
        with smtplib.SMTP("127.0.0.1", self.port, timeout=60) as c:
            c.login(user, self.upstream.users[user])
            return c.sendmail(sender, to, message)


@pytest.fixture(scope="module")
def proxy(upstream: Upstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxy]:
    tls_dir = tmp_path_factory.mktemp("smtp-tls")
    files = ensure_tls(tls_dir)
    world = key_world()
    p = people()
    world.give_key("alice", p.ids["alice"], unlock=True)
    for name in ("bob", "carol"):
        world.know("alice", p.ids[name])
    endpoint = UpstreamEndpoint(host=upstream.host, port=upstream.submission_port,
                                tls="starttls", verify=True, ca_file=upstream.ca_file)
    with LoopThread() as loop:
        front = make_front(world, endpoint,
                           listen=listener(tls=(files.server_cert, files.server_key,
                                                "starttls"), plaintext_loopback=True),
                           settings=SmtpSettings(timeout=30.0))
        loop.run(front.start())
        try:
            yield Proxy(front, world, upstream, tls_dir)
        finally:
            loop.run(front.stop(2.0))


@pytest.fixture
def default_policy(proxy: Proxy) -> Iterator[None]:
    proxy.front.policy = policy()
    proxy.world.secure_mail.unlock("alice", KEY_PASSWORD, proxy.world.now)
    yield
    proxy.front.policy = policy()
    proxy.world.secure_mail.unlock("alice", KEY_PASSWORD, proxy.world.now)


def _token() -> str:
    return "smtp-" + uuid.uuid4().hex[:12]


def _message(token: str, *, to: str = BOB, extra: str = "",
             body: bytes = b"Hello Bob,\r\n.a line with a leading dot\r\n",
             content_type: str = "text/plain; charset=utf-8") -> bytes:
    return (f"From: Alice <{ALICE}>\r\nTo: {to}\r\n{extra}Subject: {token}\r\n"
            f"Date: Mon, 01 Jun 2026 12:00:00 +0000\r\nMessage-ID: <{token}@example.test>\r\n"
            f"MIME-Version: 1.0\r\nContent-Type: {content_type}\r\n\r\n").encode() + body


def _one(upstream: Upstream, user: str, token: str) -> bytes:
    found = wait_for(upstream, user, token)
    assert len(found) == 1, f"{user} got {len(found)} copies of {token}"
    return found[0]


def _is_encrypted(message: bytes) -> bool:
    head = message.split(b"\r\n\r\n", 1)[0].lower()
    return b"application/pkcs7-mime" in head


def _is_signed(message: bytes) -> bool:
    head = message.split(b"\r\n\r\n", 1)[0].lower()
    return b"multipart/signed" in head


@pytest.mark.usefixtures("default_policy")
def test_smtplib_sign_and_encrypt_arrives_and_openssl_accepts(proxy: Proxy,
                                                              tmp_path: Path) -> None:
    token = _token()
    assert proxy.send(_message(token), [BOB]) == {}
    arrived = _one(proxy.upstream, "bob", token)
    assert _is_encrypted(arrived)
    p = people()
    inner = decrypt(arrived, p.ids["bob"], tmp_path)
    content = verify(inner, p.ca, tmp_path)
    assert b"Hello Bob,\r\n.a line with a leading dot\r\n" in content
    assert f"Subject: {token}".encode() in content
    registry = proxy.front.metrics.registry  # the operator's view (issue 13)
    assert (registry.get_sample_value("smime_smtp_messages_total",
                                      {"outcome": "signed_encrypted"}) or 0) >= 1
    assert (registry.get_sample_value("smime_smtp_prepare_seconds_count") or 0) >= 1


@pytest.mark.usefixtures("default_policy")
def test_passthrough_changes_nothing_but_x_smime(proxy: Proxy) -> None:
    token = _token()
    original = _message(token, extra="X-SMIME-Sign: no\r\nX-SMIME-Encrypt: no\r\n"
                                     "X-Other: kept\r\n")
    assert proxy.send(original, [BOB]) == {}
    arrived = _one(proxy.upstream, "bob", token)
    expected = _message(token, extra="X-Other: kept\r\n")
    assert arrived.endswith(expected)  # Postfix/Dovecot only prepend trace fields
    assert b"x-smime" not in arrived.lower()


@pytest.mark.usefixtures("default_policy")
@pytest.mark.parametrize("rules", ["{}", "{encrypt: required}"])
def test_a_message_the_client_signed_is_not_signed_again(proxy: Proxy, tmp_path: Path,
                                                         rules: str) -> None:
    """Issue 13: a client's own S/MIME signature arrives as it was sent; encryption, when
    the policy requires it, wraps it without a second signature."""
    from smime_proxy.crypto.keyagent import InProcessKeyAgent
    from smime_proxy.smime import sign_message

    proxy.front.policy = policy(f"global: {rules}")
    token = _token()
    ident = people().ids["alice"]
    signed = sign_message(_message(token), InProcessKeyAgent(ident.key, ident.cert,
                                                             tuple(ident.chain)))
    assert proxy.send(signed, [BOB]) == {}
    arrived = _one(proxy.upstream, "bob", token)
    p = people()
    if rules == "{}":
        assert arrived.endswith(signed)  # Postfix/Dovecot only prepend trace fields
    else:
        inner = decrypt(arrived, p.ids["bob"], tmp_path)
        assert inner.count(b"multipart/signed") == 1 and inner.endswith(
            signed.split(b"MIME-Version: 1.0\r\n", 1)[1])
        arrived = inner
    assert b"Hello Bob" in verify(arrived, p.ca, tmp_path)


@pytest.mark.usefixtures("default_policy")
def test_a_mail_login_unlocks_the_key_of_a_user_who_chose_it(proxy: Proxy,
                                                               tmp_path: Path) -> None:
    """Issue 13: alice turned on unlocking by mail login; with her key locked, her SMTP
    AUTH unlocks it before the 235, so the message is signed (sign: required)."""
    mail = proxy.world.secure_mail
    mail.enable_mail_unlock("alice", KEY_PASSWORD, proxy.upstream.users["alice"],
                            proxy.world.now)
    mail.lock("alice")
    proxy.front.policy = policy("global: {sign: required, encrypt: never}")
    try:
        token = _token()
        assert proxy.send(_message(token), [BOB]) == {}
        arrived = _one(proxy.upstream, "bob", token)
        assert _is_signed(arrived)
        assert b"Hello Bob" in verify(arrived, people().ca, tmp_path)
    finally:
        mail.disable_mail_unlock("alice")


@pytest.mark.usefixtures("default_policy")
def test_sender_gets_no_extra_copy(proxy: Proxy) -> None:
    token = _token()
    assert proxy.send(_message(token), [BOB]) == {}
    _one(proxy.upstream, "bob", token)
    assert fetch(proxy.upstream, "alice", token) == []
    assert fetch(proxy.upstream, "alice", token, mailbox="Sent") == []


@pytest.mark.usefixtures("default_policy")
@pytest.mark.parametrize("encrypt", [False, True])
def test_eight_bit_and_binary_attachments_verify_after_delivery(proxy: Proxy, tmp_path: Path,
                                                                encrypt: bool) -> None:
    token = _token()
    blob = bytes(range(256)) * 40
    attachment = base64.encodebytes(blob).replace(b"\n", b"\r\n")
    body = (b"--b\r\nContent-Type: text/plain; charset=utf-8\r\n"
            b"Content-Transfer-Encoding: 8bit\r\n\r\nGr\xc3\xbc\xc3\x9fe \xe2\x82\xac 8-bit\r\n"
            b"--b\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: 8bit"
            b"\r\n\r\n\x80\x81\xfe\xff raw 8-bit bytes\r\n"
            b"--b\r\nContent-Type: application/octet-stream; name=blob.bin\r\n"
            b"Content-Transfer-Encoding: base64\r\n\r\n" + attachment + b"--b--\r\n")
    message = _message(token, body=body, content_type='multipart/mixed; boundary="b"',
                       extra="" if encrypt else "X-SMIME-Encrypt: no\r\n")
    with smtplib.SMTP("127.0.0.1", proxy.port, timeout=60) as c:
        c.login("alice", "alice-pw")
        assert c.sendmail(ALICE, [BOB], message, mail_options=["BODY=8BITMIME"]) == {}
    arrived = _one(proxy.upstream, "bob", token)
    p = people()
    signed = decrypt(arrived, p.ids["bob"], tmp_path) if encrypt else arrived
    assert _is_encrypted(arrived) == encrypt
    content = verify(signed, p.ca, tmp_path)
    assert base64.b64encode(blob)[:200] in content.replace(b"\r\n", b"")
    assert b"Gr=C3=BC=C3=9Fe" in content


# --- the matrix: key locked/unlocked x policy required/if-possible/never x certificate -------

_MODES = {
    "required": "global: {sign: required, encrypt: required}",
    "if-possible": "global: {sign: if-unlocked, encrypt: if-possible}",
    "never": "global: {sign: never, encrypt: never}",
}


@pytest.mark.usefixtures("default_policy")
@pytest.mark.parametrize("cert", ["present", "missing"])
@pytest.mark.parametrize("mode", ["required", "if-possible", "never"])
@pytest.mark.parametrize("locked", [False, True])
def test_matrix(proxy: Proxy, tmp_path: Path, locked: bool, mode: str, cert: str) -> None:
    proxy.front.policy = policy(_MODES[mode])
    if locked:
        proxy.world.secure_mail.lock("alice")
    user, address = ("bob", BOB) if cert == "present" else ("carol", CAROL)
    if cert == "missing":
        proxy.world.contacts.remove("alice", CAROL)
        proxy.front.certificates.clear()  # choices are cached for up to 10 s
    try:
        token = _token()
        message = _message(token, to=address)
        expected_code = {
            ("required", "missing"): 550,
            ("required", "present"): 451 if locked else 250,
        }.get((mode, cert), 250)
        if expected_code != 250:
            with pytest.raises(smtplib.SMTPDataError) as info:
                proxy.send(message, [address])
            assert info.value.smtp_code == expected_code
            if expected_code == 550:
                assert CAROL.encode() in info.value.smtp_error
                assert b"5.7.1" in info.value.smtp_error
            else:
                assert b"4.7.0" in info.value.smtp_error
                assert b"https://127.0.0.1:8443/" in info.value.smtp_error
            assert wait_for(proxy.upstream, user, token, timeout=2) == []
            return
        assert proxy.send(message, [address]) == {}
        arrived = _one(proxy.upstream, user, token)
        p = people()
        want_encrypt = mode != "never" and cert == "present"
        want_sign = mode != "never" and not locked
        assert _is_encrypted(arrived) == want_encrypt
        inner = decrypt(arrived, p.ids[user], tmp_path) if want_encrypt else arrived
        assert _is_signed(inner) == want_sign
        if want_sign:
            assert b"Hello Bob" in verify(inner, p.ca, tmp_path)
        else:
            assert inner.endswith(b"Hello Bob,\r\n.a line with a leading dot\r\n")
    finally:
        if cert == "missing":
            proxy.world.know("alice", people().ids["carol"])
            proxy.front.certificates.clear()


@pytest.mark.usefixtures("default_policy")
def test_bcc_each_recipient_own_copy(proxy: Proxy, tmp_path: Path) -> None:
    token = _token()
    message = _message(token, extra=f"Bcc: {CAROL}\r\n")
    assert proxy.send(message, [BOB, CAROL]) == {}
    to_bob = _one(proxy.upstream, "bob", token)
    to_carol = _one(proxy.upstream, "carol", token)
    p = people()
    serial = {n: i.cert.serial_number for n, i in p.ids.items()}
    assert recipient_serials(to_bob) == {serial["bob"], serial["alice"]}
    assert recipient_serials(to_carol) == {serial["carol"], serial["alice"]}
    for copy in (to_bob, to_carol):
        head = copy.split(b"\r\n\r\n", 1)[0].lower()
        assert b"bcc:" not in head
    assert b"carol" not in to_bob.split(b"\r\n\r\n", 1)[0].lower()
    shown = verify(decrypt(to_bob, p.ids["bob"], tmp_path), p.ca, tmp_path).lower()
    assert b"carol" not in shown and b"bcc:" not in shown
    assert cannot_decrypt(to_carol, p.ids["bob"], tmp_path)
    assert b"Hello Bob" in verify(decrypt(to_carol, p.ids["carol"], tmp_path), p.ca, tmp_path)


@pytest.mark.usefixtures("default_policy")
def test_upstream_rejections_and_capabilities_reach_the_client(proxy: Proxy) -> None:
    with smtplib.SMTP("127.0.0.1", proxy.port, timeout=60) as c:
        c.ehlo("client.test")
        assert c.esmtp_features["size"] == "209715200"  # Postfix's message_size_limit
        assert "smtputf8" not in c.esmtp_features  # smtputf8_enable = no upstream
        c.login("alice", "alice-pw")
        assert c.mail(ALICE)[0] == 250
        code, text = c.rcpt("bob@exa_mple.test")
        assert code == 550
        assert b"delivers to example.test only" in text  # Postfix's own words
        assert c.rcpt(BOB)[0] == 250
    with smtplib.SMTP("127.0.0.1", proxy.port, timeout=60) as c, \
            pytest.raises(smtplib.SMTPAuthenticationError):
        c.login("alice", "not-the-password")


# --- other clients -----------------------------------------------------------------------


@pytest.mark.usefixtures("default_policy")
@pytest.mark.skipif(shutil.which("swaks") is None, reason="swaks not installed")
@pytest.mark.parametrize("tls", [False, True])
def test_swaks(proxy: Proxy, tmp_path: Path, tls: bool) -> None:
    token = _token()
    args = ["swaks", "--server", "127.0.0.1", "--port", str(proxy.port),
            "--auth", "PLAIN", "--auth-user", "alice", "--auth-password", "alice-pw",
            "--from", ALICE, "--to", BOB, "--header", f"Subject: {token}",
            "--body", "Hello Bob from swaks", "--timeout", "60"]
    if tls:
        args.append("--tls")
    res = subprocess.run(args, capture_output=True, timeout=120, check=False)
    assert res.returncode == 0, res.stdout.decode(errors="replace")[-2000:]
    if tls:
        assert b"STARTTLS" in res.stdout
    arrived = _one(proxy.upstream, "bob", token)
    p = people()
    content = verify(decrypt(arrived, p.ids["bob"], tmp_path), p.ca, tmp_path)
    assert b"Hello Bob from swaks" in content


@pytest.mark.usefixtures("default_policy")
@pytest.mark.skipif(shutil.which("s-nail") is None, reason="s-nail not installed")
@pytest.mark.parametrize("protection", ["injected", "none", "wrapped"])
def test_s_nail_sends_decrypts_and_verifies(proxy: Proxy, tmp_path: Path,
                                            protection: str) -> None:
    """s-nail sends through the proxy, then decrypts what arrived as bob and verifies it.

    s-nail 14.9's `decrypt` re-serialises a message/rfc822 part without the blank line
    after its header, which breaks the signature of an RFC 8551 3.1 wrapped message: with
    `header_protection: wrapped` s-nail verifies the openssl-decrypted copy instead."""
    proxy.front.policy = policy(f"global: {{header_protection: {protection}}}")
    token = _token()
    env = {**os.environ, "HOME": str(tmp_path), "MAILRC": "/dev/null", "LC_ALL": "C.UTF-8"}
    res = subprocess.run(
        ["s-nail", "-:/", "-Sv15-compat", "-Sexpandaddr=fail,-all,+addr",
         f"-Smta=smtp://alice:alice-pw@127.0.0.1:{proxy.port}", "-Ssmtp-auth=plain",
         f"-Sfrom={ALICE}", "-s", token, BOB],
        input=b"Hello Bob from s-nail\n", capture_output=True, timeout=120, check=False,
        env=env,
    )
    assert res.returncode == 0, res.stderr.decode(errors="replace")
    arrived = _one(proxy.upstream, "bob", token)
    p = people()
    signed = decrypt(arrived, p.ids["bob"], tmp_path)
    assert b"Hello Bob from s-nail" in verify(signed, p.ca, tmp_path)
    # s-nail itself decrypts what arrived (as bob) and checks the signature
    ca = tmp_path / "ca-snail.pem"
    ca.write_bytes(p.ca.cert_pem())
    pair = tmp_path / "bob.pair"
    pair.write_bytes(p.ids["bob"].key_pem() + p.ids["bob"].cert_pem())
    mbox, out = tmp_path / "mbox", tmp_path / "decrypted"
    mbox.write_bytes(b"From alice@example.test Mon Jun  1 12:00:00 2026\n"
                     + arrived.replace(b"\r\n", b"\n") + b"\n")
    snail = ["s-nail", "-:/", "-Sv15-compat", "-N", f"-Ssmime-ca-file={ca}",
             "-Ssmime-ca-no-defaults", f"-Ssmime-sign-cert-bob@example.test={pair}",
             f"-Sfrom={BOB}", "-R", "-f"]
    res = subprocess.run([*snail, str(mbox)], input=f"decrypt 1 {out}\nquit\n".encode(),
                         capture_output=True, timeout=60, check=False, env=env)
    assert res.returncode == 0 and out.exists(), res.stderr.decode(errors="replace")
    assert b"multipart/signed" in out.read_bytes()
    if protection == "wrapped":
        header = b"\n".join(line for line in arrived.split(b"\r\n\r\n", 1)[0].split(b"\r\n")
                            if line.lower().startswith((b"from:", b"to:", b"subject:")))
        out.write_bytes(b"From alice@example.test Mon Jun  1 12:00:00 2026\n" + header + b"\n"
                        + signed.replace(b"\r\n", b"\n") + b"\n")
    res = subprocess.run([*snail, str(out)], input=b"verify 1\nquit\n",
                         capture_output=True, timeout=60, check=False, env=env)
    output = (res.stdout + res.stderr).decode(errors="replace")
    assert res.returncode == 0, output
    assert "Message 1 was verified successfully" in output, output


async def test_upstream_certificate_is_verified(upstream: Upstream,
                                                tmp_path_factory: pytest.TempPathFactory) -> None:
    other = ensure_tls(tmp_path_factory.mktemp("other-ca"))  # a CA the upstream does not use
    endpoint = UpstreamEndpoint(host=upstream.host, port=upstream.submission_port,
                                tls="starttls", verify=True, ca_file=other.ca_cert)
    front = make_front(key_world(), endpoint)
    await front.start()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", front.port)
        assert (await asyncio.wait_for(reader.readline(), 30)).startswith(b"220")
        writer.write(b"EHLO client.test\r\n")
        reply = await asyncio.wait_for(reader.readline(), 30)
        assert reply.startswith(b"421 4.4.2"), reply
        assert await asyncio.wait_for(reader.read(), 30) == b""  # the session ended
        writer.close()
    finally:
        await front.stop(1.0)


def _submission_smtpd_pids(upstream: Upstream) -> list[int]:
    """The real Postfix's smtpd processes of the submission service (its process group)."""
    pgid = int((upstream.workdir / "run" / "postfix.pgid").read_text())
    return [p.pid for p in processes() if p.pgrp == pgid
            and b"smtpd" in p.cmdline.split(b"\0")[0] and b"submission" in p.cmdline]


@pytest.mark.usefixtures("default_policy")
@pytest.mark.parametrize("encrypt", [False, True])
def test_postfix_killed_during_data(proxy: Proxy, encrypt: bool) -> None:
    """The smtpd serving the proxy's upstream connection dies while the client is sending
    its DATA: the client gets 451, nothing is delivered, the retry is delivered once."""
    token = _token()
    message = _message(token, extra="" if encrypt else "X-SMIME-Sign: no\r\n"
                       "X-SMIME-Encrypt: no\r\n")
    with smtplib.SMTP("127.0.0.1", proxy.port, timeout=60) as c:
        c.login("alice", "alice-pw")
        assert c.mail(ALICE)[0] == 250
        assert c.rcpt(BOB)[0] == 250
        c.putcmd("DATA")
        assert c.getreply()[0] == 354
        pids = _submission_smtpd_pids(proxy.upstream)
        assert pids, "no submission smtpd found"
        for pid in pids:
            os.kill(pid, 9)
        c.send(message.replace(b"\r\n.", b"\r\n..") + b".\r\n")
        code, text = c.getreply()
        assert code == 451, text
    assert wait_for(proxy.upstream, "bob", token, timeout=3) == []
    assert proxy.send(message, [BOB]) == {}
    assert len(wait_for(proxy.upstream, "bob", token)) == 1
