"""The IMAP proxy against the real Dovecot, with imaplib as the client: login, plain messages
answered exactly as Dovecot answers them, encrypted+signed messages shown decrypted with every
item consistent, forged X-SMIME-Status replaced, locked key, nested S/MIME shown as is, \\Seen,
STARTTLS on both sides."""

from __future__ import annotations

import dataclasses
import imaplib
import re
import ssl
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from smime_proxy.harness import Upstream
from smime_proxy.imap.connection import ClientConnection
from smime_proxy.imap.server import ImapFront
from smime_proxy.imap.session import ImapSession
from smime_proxy.imap.views import MessageView
from smime_proxy.imap.wire.values import render_structure
from support import pki
from support.imap_proxy import (
    LoopThread,
    encrypted_signed,
    imap_listener,
    imap_services,
    running_front,
    upstream_imap,
)
from support.smtp_proxy import KEY_PASSWORD, KeyWorld, key_world, people

ALICE = "alice@example.test"


def plain_message(token: str, body: bytes = b"hello plain world\r\n", extra: bytes = b"") -> bytes:
    return (b"From: Bob <bob@example.test>\r\nTo: alice@example.test\r\n" + extra
            + b"Subject: " + token.encode() + b"\r\nMessage-ID: <" + token.encode()
            + b"@example.test>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain\r\n\r\n" + body)


@dataclass
class Env:
    upstream: Upstream
    loop: LoopThread
    world: KeyWorld
    front: ImapFront

    def proxy(self, user: str = "alice") -> imaplib.IMAP4:
        imap = imaplib.IMAP4("127.0.0.1", self.front.port, timeout=30)
        imap.login(user, self.upstream.users[user])
        return imap

    def direct(self, user: str = "alice") -> imaplib.IMAP4:
        imap = imaplib.IMAP4(self.upstream.host, self.upstream.imap_port, timeout=30)
        imap.login(user, self.upstream.users[user])
        return imap

    def deliver(self, user: str, message: bytes) -> None:
        self.upstream.deliver(user, message)


@pytest.fixture(scope="module")
def world() -> KeyWorld:
    w = key_world()
    ids = people().ids
    w.give_key("alice", ids["alice"], unlock=True)
    w.give_key("bob", ids["bob"], unlock=False)  # locked
    return w


@pytest.fixture(scope="module")
def env(upstream: Upstream, loop: LoopThread, world: KeyWorld,
        tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    services = imap_services(tmp_path_factory.mktemp("imap"), world, upstream_imap(upstream))
    with running_front(loop, services) as front:
        yield Env(upstream, loop, world, front)


def uid_of(imap: imaplib.IMAP4, token: str) -> str:
    typ, data = imap.select("INBOX")
    assert typ == "OK"
    typ, data = imap.uid("SEARCH", "HEADER", "Message-ID", f'"<{token}@example.test>"')
    assert typ == "OK"
    uids = (data[0] or b"").split()
    assert len(uids) == 1, f"expected one message with {token}"
    return uids[0].decode()


def fetch(imap: imaplib.IMAP4, uid: str, items: str) -> tuple[str, list[object]]:
    typ, data = imap.uid("FETCH", uid, items)
    return typ, list(data)


def without_recent(answer: tuple[str, list[object]]) -> tuple[str, list[object]]:
    """\\Recent belongs to the session that saw the message first (here: the direct one)."""
    return answer[0], [d.replace(b"(\\Recent)", b"()") if isinstance(d, bytes) else d
                       for d in answer[1]]


def literal(data: list[object]) -> bytes:
    """The literal of a one-message, one-literal FETCH answer."""
    parts = [d for d in data if isinstance(d, tuple)]
    assert len(parts) == 1
    value = parts[0][1]
    assert isinstance(value, bytes)
    return value


def pair(item: object) -> tuple[bytes, bytes]:
    """imaplib's (head, literal) of one FETCH answer."""
    assert isinstance(item, tuple)
    head, value = item
    assert isinstance(head, bytes) and isinstance(value, bytes)
    return head, value


def token() -> str:
    return "t" + uuid.uuid4().hex[:12]


# --- login --------------------------------------------------------------------------------


def test_login_good_and_bad_password(env: Env) -> None:
    imap = env.proxy()
    try:
        assert imap.select("INBOX")[0] == "OK"
    finally:
        imap.logout()
    bad = imaplib.IMAP4("127.0.0.1", env.front.port, timeout=30)
    try:
        with pytest.raises(imaplib.IMAP4.error, match=r"AUTHENTICATIONFAILED|failed"):
            bad.login("alice", "not-the-password")
        # the connection stays usable: a second attempt with the right password works
        assert bad.login("alice", env.upstream.users["alice"])[0] == "OK"
    finally:
        bad.logout()


def test_capabilities_are_filtered(env: Env) -> None:
    imap = imaplib.IMAP4("127.0.0.1", env.front.port, timeout=30)
    try:
        caps = {c.upper() for c in imap.capabilities}
        assert "IMAP4REV1" in caps and "AUTH=PLAIN" in caps
        assert not any(c.startswith("COMPRESS") for c in caps)
        assert "LOGINDISABLED" not in caps  # plaintext on loopback is allowed here
    finally:
        imap.logout()


# --- plain messages: exactly what Dovecot answers --------------------------------------------

ITEMS = ["BODY.PEEK[]", "BODYSTRUCTURE", "RFC822.SIZE", "BODY.PEEK[1]", "BODY.PEEK[]<0.100>",
         "ENVELOPE", "BODY.PEEK[HEADER.FIELDS (Subject From)]", "BODY", "RFC822.HEADER",
         "BINARY.PEEK[1]", "BINARY.SIZE[1]", "(FLAGS INTERNALDATE RFC822.SIZE)"]


@pytest.mark.parametrize("multipart", [False, True])
def test_plain_message_answers_equal_dovecot(env: Env, multipart: bool) -> None:
    tok = token()
    if multipart:
        message = plain_message(tok, extra=b"").replace(
            b"Content-Type: text/plain\r\n\r\n",
            b'Content-Type: multipart/mixed; boundary="b1"\r\n\r\n') + (
            b"--b1\r\nContent-Type: text/plain; charset=utf-8\r\n"
            b"Content-Transfer-Encoding: quoted-printable\r\n\r\ncaf=C3=A9\r\n"
            b"--b1\r\nContent-Type: application/octet-stream\r\n"
            b"Content-Transfer-Encoding: base64\r\n\r\nAAECAwQ=\r\n--b1--\r\n")
    else:
        message = plain_message(tok, body=b"line one\r\n" * 40)
    env.deliver("alice", message)
    proxy, direct = env.proxy(), env.direct()
    try:
        uid = uid_of(direct, tok)
        assert uid_of(proxy, tok) == uid
        for item in ITEMS:
            want = fetch(direct, uid, item)
            got = fetch(proxy, uid, item)
            assert without_recent(got) == without_recent(want), item
    finally:
        proxy.logout()
        direct.logout()


def test_forged_status_in_plain_message_is_replaced(env: Env) -> None:
    tok = token()
    forged = (b"X-SMIME-Status: encrypted=yes; cipher=aes-256-gcm; signature=valid;\r\n"
              b" signer=boss@example.test\r\nx-smime-status: signature=valid\r\n")
    env.deliver("alice", plain_message(tok, extra=forged))
    proxy = env.proxy()
    try:
        uid = uid_of(proxy, tok)
        typ, data = fetch(proxy, uid, "BODY.PEEK[]")
        assert typ == "OK"
        shown = literal(data)
        assert shown.startswith(b"X-SMIME-Status: encrypted=no; signature=none\r\n")
        assert shown.lower().count(b"x-smime-status") == 1
        assert b"boss@example.test" not in shown and b"signature=valid" not in shown
        typ, data = fetch(proxy, uid, "BODY.PEEK[HEADER.FIELDS (X-SMIME-Status)]")
        assert literal(data) == b"X-SMIME-Status: encrypted=no; signature=none\r\n\r\n"
    finally:
        proxy.logout()


# --- encrypted and signed --------------------------------------------------------------------


def test_encrypted_signed_message_is_shown_decrypted_and_consistent(env: Env) -> None:
    tok = token()
    ids = people().ids
    secret = b"the secret plaintext " + tok.encode() + b"\r\n"
    inner = plain_message(tok, body=secret * 10).replace(b"From: Bob <bob@example.test>",
                                                         b"From: Alice <alice@example.test>")
    env.deliver("alice", encrypted_signed(inner, ids["alice"], ids["alice"]))
    proxy = env.proxy()
    try:
        uid = uid_of(proxy, tok)
        typ, data = fetch(proxy, uid, "BODY.PEEK[]")
        assert typ == "OK"
        shown = literal(data)
        assert shown.startswith(b"X-SMIME-Status: encrypted=yes; cipher=aes-256-gcm; "
                                b"signature=valid; signer=alice@example.test; "
                                b"headers=unprotected\r\n")
        assert secret in shown
        view = MessageView(shown)
        typ, data = fetch(proxy, uid, "RFC822.SIZE")
        line = data[0]
        assert isinstance(line, bytes)
        assert re.search(rb"RFC822\.SIZE (\d+)\)", line) is not None
        assert line.endswith(b"RFC822.SIZE %d)" % len(shown))
        assert literal(fetch(proxy, uid, "BODY.PEEK[]<0.100>")[1]) == shown[:100]
        assert literal(fetch(proxy, uid, "BODY.PEEK[]<100.57>")[1]) == shown[100:157]
        assert literal(fetch(proxy, uid, "BODY.PEEK[1]")[1]) == view.section("1")
        assert secret in view.section("1")
        typ, data = fetch(proxy, uid, "BODYSTRUCTURE")
        line = data[0]
        assert isinstance(line, bytes)
        assert line.endswith(b"(UID %s BODYSTRUCTURE %s)" % (
            uid.encode(), render_structure(view.bodystructure())))
        typ, data = fetch(proxy, uid, "ENVELOPE")
        assert render_structure(view.envelope()) in data[0]  # type: ignore[operator]
        # a client's sync by sequence number, after the message was opened (the cache)
        found = proxy.search(None, "UID", uid)[1][0]
        assert isinstance(found, bytes)
        typ, synced = proxy.fetch(found.split()[-1].decode(),
                                  "(FLAGS BODYSTRUCTURE ENVELOPE RFC822.SIZE)")
        assert typ == "OK" and isinstance(synced[0], bytes)
        assert (b"BODYSTRUCTURE %s ENVELOPE %s RFC822.SIZE %d)" % (
            render_structure(view.bodystructure()), render_structure(view.envelope()),
            len(shown))) in synced[0]
    finally:
        proxy.logout()
    # the upstream still holds only ciphertext
    direct = env.direct()
    try:
        raw = literal(fetch(direct, uid_of(direct, tok), "BODY.PEEK[]")[1])
        assert secret not in raw and b"application/pkcs7-mime" in raw
    finally:
        direct.logout()


def test_locked_key_gives_tagged_no_unavailable(env: Env) -> None:
    tok = token()
    ids = people().ids
    env.deliver("bob", encrypted_signed(plain_message(tok, body=b"locked secret\r\n"),
                                        ids["alice"], ids["bob"]))
    proxy = env.proxy("bob")
    try:
        uid = uid_of(proxy, tok)
        typ, data = fetch(proxy, uid, "BODY[]")
        assert typ == "NO"
        assert b"[UNAVAILABLE]" in data[0]  # type: ignore[operator]
        assert all(not isinstance(d, tuple) for d in data)  # no message data at all
        typ, data = fetch(proxy, uid, "FLAGS")  # not a content item: relayed
        assert typ == "OK" and b"\\Seen" not in data[0]  # type: ignore[operator]
    finally:
        proxy.logout()


def test_locked_key_lists_the_folder_as_stored(env: Env) -> None:
    """Issue 13: a client syncing the folder while the key is locked sees every message with
    the upstream's flags, size, envelope and header fields (as Dovecot gives them, minus
    X-SMIME-Status); only opening one is refused."""
    tok = token()
    ids = people().ids
    stored = encrypted_signed(plain_message(tok, body=b"locked secret\r\n"),
                              ids["alice"], ids["bob"])
    env.deliver("bob", b"X-SMIME-Status: encrypted=no; signature=valid\r\n" + stored)
    proxy, direct = env.proxy("bob"), env.direct("bob")
    try:
        uid = uid_of(proxy, tok)
        assert uid_of(direct, tok) == uid
        items = ("(UID RFC822.SIZE FLAGS ENVELOPE INTERNALDATE"
                 " BODY.PEEK[HEADER.FIELDS (SUBJECT MESSAGE-ID X-SMIME-STATUS)])")
        typ, data = fetch(proxy, uid, items)
        want_typ, want = fetch(direct, uid, items)
        assert typ == want_typ == "OK"
        (got_head, got_fields), (want_head, want_fields) = pair(data[0]), pair(want[0])
        flags = rb"FLAGS \([^)]*\)|\{\d+\}$"  # \Recent is the first session's; literal sizes
        assert re.sub(flags, b"", got_head) == re.sub(flags, b"", want_head)
        assert b"X-SMIME-Status" in want_fields
        assert got_fields == re.sub(rb"X-SMIME-Status: [^\r]*\r\n", b"", want_fields)
        assert tok.encode() in got_fields
        for opening in ("BODY.PEEK[]", "BODYSTRUCTURE", "BODY.PEEK[TEXT]"):
            typ, data = fetch(proxy, uid, opening)
            assert typ == "NO" and b"[UNAVAILABLE]" in data[0]  # type: ignore[operator]
            assert all(not isinstance(d, tuple) for d in data)
    finally:
        proxy.logout()
        direct.logout()


def test_locked_key_passthrough_shows_raw_smime(upstream: Upstream, loop: LoopThread,
                                                 world: KeyWorld, tmp_path: Path) -> None:
    tok = token()
    ids = people().ids
    upstream.deliver("bob", encrypted_signed(plain_message(tok), ids["alice"], ids["bob"]))
    services = imap_services(tmp_path, world, upstream_imap(upstream),
                             locked_fetch="passthrough")
    with running_front(loop, services) as front:
        proxy = imaplib.IMAP4("127.0.0.1", front.port, timeout=30)
        proxy.login("bob", upstream.users["bob"])
        direct = imaplib.IMAP4(upstream.host, upstream.imap_port, timeout=30)
        direct.login("bob", upstream.users["bob"])
        try:
            uid = uid_of(proxy, tok)
            assert uid_of(direct, tok) == uid
            got = fetch(proxy, uid, "BODY.PEEK[]")
            assert got == fetch(direct, uid, "BODY.PEEK[]")
            assert b"application/pkcs7-mime" in literal(got[1])
        finally:
            proxy.logout()
            direct.logout()


def test_nested_encrypted_part_is_shown_as_is(env: Env) -> None:
    tok = token()
    ids = people().ids
    known = b"NESTED-KNOWN-PLAINTEXT-" + tok.encode()
    smime = encrypted_signed(plain_message(tok + "x", body=known + b"\r\n"), ids["alice"],
                             ids["alice"])
    head, _, body = smime.partition(b"\r\n\r\n")
    ctype = b"\r\n".join(line for line in head.split(b"\r\n")
                         if line.lower().startswith((b"content-", b" ", b"\t")))
    wrapper = plain_message(tok).replace(
        b"Content-Type: text/plain\r\n\r\n",
        b'Content-Type: multipart/mixed; boundary="outer"\r\n\r\n') + (
        b"--outer\r\nContent-Type: text/plain\r\n\r\nSee the attachment.\r\n--outer\r\n"
        + ctype + b"\r\n\r\n" + body + b"\r\n--outer--\r\n")
    env.deliver("alice", wrapper)
    proxy, direct = env.proxy(), env.direct()
    try:
        uid = uid_of(proxy, tok)
        assert uid_of(direct, tok) == uid
        for item in ("BODY.PEEK[]", "BODY.PEEK[2]", "BODYSTRUCTURE", "BINARY.PEEK[2]",
                     "RFC822.SIZE"):
            got = fetch(proxy, uid, item)
            assert got == fetch(direct, uid, item), item
            assert known not in repr(got).encode()
    finally:
        proxy.logout()
        direct.logout()


def test_fetch_body_sets_seen_on_the_upstream(env: Env) -> None:
    tok = token()
    env.deliver("alice", plain_message(tok))
    proxy = env.proxy()
    direct = env.direct()
    try:
        uid = uid_of(proxy, tok)
        assert uid_of(direct, tok) == uid
        typ, data = fetch(direct, uid, "FLAGS")
        assert b"\\Seen" not in data[0]  # type: ignore[operator]
        typ, data = fetch(proxy, uid, "BODY[]")
        assert typ == "OK"
        heads = [d[0] if isinstance(d, tuple) else d for d in data]  # Dovecot: FLAGS first
        assert any(isinstance(d, bytes) and re.search(rb"FLAGS \([^)]*\\Seen", d)
                   for d in heads)
        direct.noop()
        typ, data = fetch(direct, uid, "FLAGS")
        assert b"\\Seen" in data[0]  # type: ignore[operator]
    finally:
        proxy.logout()
        direct.logout()


def test_peek_does_not_set_seen(env: Env) -> None:
    tok = token()
    env.deliver("alice", plain_message(tok))
    proxy = env.proxy()
    try:
        uid = uid_of(proxy, tok)
        assert fetch(proxy, uid, "(BODY.PEEK[] BODYSTRUCTURE)")[0] == "OK"
        _typ, data = fetch(proxy, uid, "FLAGS")
        assert b"\\Seen" not in data[0]  # type: ignore[operator]
    finally:
        proxy.logout()


# --- TLS on both sides -----------------------------------------------------------------------


@pytest.mark.parametrize("upstream_tls", ["implicit", "starttls"])
def test_starttls_listener_and_tls_upstream(upstream: Upstream, loop: LoopThread,
                                            world: KeyWorld, tmp_path: Path,
                                            upstream_tls: str) -> None:
    listener = imap_listener((upstream.cert_file, upstream.key_file, "starttls"))
    services = imap_services(tmp_path, world, upstream_imap(upstream, upstream_tls),
                             listener=listener)
    with running_front(loop, services) as front:
        imap = imaplib.IMAP4("127.0.0.1", front.port, timeout=30)
        try:
            assert "LOGINDISABLED" in imap.capabilities and "STARTTLS" in imap.capabilities
            imap.starttls(ssl.create_default_context(cafile=str(upstream.ca_file)))
            assert "STARTTLS" not in imap.capabilities
            assert imap.login("alice", upstream.users["alice"])[0] == "OK"
            assert imap.select("INBOX")[0] == "OK"
        finally:
            imap.logout()


def test_plaintext_injected_before_client_handshake_is_not_executed(
        upstream: Upstream, loop: LoopThread, world: KeyWorld, tmp_path: Path) -> None:
    import socket

    listener = imap_listener((upstream.cert_file, upstream.key_file, "starttls"))
    services = imap_services(tmp_path, world, upstream_imap(upstream), listener=listener)
    with running_front(loop, services) as front:
        raw = socket.create_connection(("127.0.0.1", front.port), timeout=30)
        try:
            assert raw.recv(4096).startswith(b"* OK")
            raw.sendall(b"a1 STARTTLS\r\na2 CAPABILITY\r\n")
            reply = b""
            while not reply.endswith(b"\r\n"):
                reply += raw.recv(4096)
            assert reply == b"a1 OK Begin TLS negotiation now\r\n"
            context = ssl.create_default_context(cafile=str(upstream.ca_file))
            with context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
                tls.sendall(b"a3 NOOP\r\n")
                answer = b""
                while b"a3 " not in answer:
                    answer += tls.recv(4096)
            assert b"a2" not in answer and answer.startswith(b"a3 OK")
        finally:
            raw.close()


def test_unverifiable_upstream_certificate_is_refused(upstream: Upstream, loop: LoopThread,
                                                      world: KeyWorld, tmp_path: Path) -> None:
    endpoint = dataclasses.replace(upstream_imap(upstream, "implicit"), ca_file=None)
    services = imap_services(tmp_path, world, endpoint)  # verify against the system store
    with running_front(loop, services) as front, pytest.raises(imaplib.IMAP4.error,
                                                               match="UNAVAILABLE"):
        imaplib.IMAP4("127.0.0.1", front.port, timeout=30)
    unverified = dataclasses.replace(endpoint, verify=False)  # the admin's explicit choice
    with running_front(loop, imap_services(tmp_path, world, unverified)) as front:
        imap = imaplib.IMAP4("127.0.0.1", front.port, timeout=30)
        try:
            assert imap.login("alice", upstream.users["alice"])[0] == "OK"
        finally:
            imap.logout()


def test_verified_signer_certificate_is_taken(env: Env) -> None:
    tok = token()
    ids = people().ids
    carol = ids["carol"]
    message = plain_message(tok).replace(b"From: Bob <bob@example.test>",
                                         b"From: carol@example.test")
    env.deliver("alice", encrypted_signed(message, carol, ids["alice"]))
    before = {e.summary.fingerprint for e in env.world.contacts.entries("alice")}
    proxy = env.proxy()
    try:
        shown = literal(fetch(proxy, uid_of(proxy, tok), "BODY.PEEK[]")[1])
        assert b"signature=valid; signer=carol@example.test" in shown.split(b"\r\n", 1)[0]
    finally:
        proxy.logout()
    after = env.world.contacts.entries("alice")
    assert any(e.summary.fingerprint not in before and "carol@example.test" in e.summary.addresses
               for e in after)


def test_tampered_ciphertext_is_shown_as_stored(env: Env) -> None:
    tok = token()
    ids = people().ids
    known = b"TAMPERED-KNOWN-" + tok.encode()
    smime = encrypted_signed(plain_message(tok, body=known + b"\r\n"), ids["alice"],
                             ids["alice"])
    head, sep, body = smime.partition(b"\r\n\r\n")
    middle = len(body) // 2
    flipped = b"B" if body[middle:middle + 1] != b"B" else b"C"
    env.deliver("alice", head + sep + body[:middle] + flipped + body[middle + 1:])
    proxy, direct = env.proxy(), env.direct()
    try:
        uid = uid_of(proxy, tok)
        assert uid_of(direct, tok) == uid
        status = b"X-SMIME-Status: encrypted=yes; signature=none; error=cannot-decrypt\r\n"
        shown = literal(fetch(proxy, uid, "BODY.PEEK[]")[1])
        assert shown == status + literal(fetch(direct, uid, "BODY.PEEK[]")[1])
        assert known not in shown
        structure = fetch(proxy, uid, "BODYSTRUCTURE")  # the header is not in it
        assert structure == fetch(direct, uid, "BODYSTRUCTURE")
        assert known not in repr(structure).encode()
        size = fetch(proxy, uid, "RFC822.SIZE")[1][0]
        assert isinstance(size, bytes) and size.endswith(b"RFC822.SIZE %d)" % len(shown))
    finally:
        proxy.logout()
        direct.logout()


def test_many_messages_in_one_fetch_each_come_back_once(env: Env) -> None:
    """More messages than the shell lets wait for opening at once (back-pressure)."""
    tok = token()
    ids = people().ids
    mailbox = "Bulk-" + tok
    sent: list[bytes] = []
    direct = env.direct()
    try:
        assert direct.create(mailbox)[0] == "OK"
        for index in range(20):
            body = b"message %d of %s\r\n" % (index, tok.encode())
            message = plain_message(f"{tok}-{index}", body=body)
            if index % 3:
                message = encrypted_signed(message.replace(b"From: Bob <bob@example.test>",
                                                           b"From: alice@example.test"),
                                           ids["alice"], ids["alice"])
            sent.append(body)
            assert direct.append(mailbox, None, None, message)[0] == "OK"
    finally:
        direct.logout()
    proxy = env.proxy()
    try:
        assert proxy.select(mailbox)[0] == "OK"
        typ, data = proxy.fetch("1:*", "(RFC822.SIZE BODY.PEEK[])")
        assert typ == "OK"
        answers = [d for d in data if isinstance(d, tuple)]
        assert len(answers) == 20
        # plain messages are relayed as they come, opened ones when opened: FETCH responses
        # carry their number and may come in any order (RFC 9051 7.5.2); each comes once
        answers.sort(key=lambda d: int(d[0].split(b" ", 1)[0]))
        for index, (head, shown) in enumerate(answers):
            assert isinstance(head, bytes) and isinstance(shown, bytes)
            assert head.startswith(b"%d (RFC822.SIZE %d BODY[] {" % (index + 1, len(shown)))
            assert sent[index] in shown
            encrypted = bool(index % 3)
            assert shown.startswith(b"X-SMIME-Status: encrypted=yes") == encrypted
    finally:
        proxy.logout()


def test_examine_then_fetch_body_is_like_dovecot_and_sets_no_seen(env: Env) -> None:
    tok = token()
    env.deliver("alice", plain_message(tok))
    proxy, direct = env.proxy(), env.direct()
    try:
        uid = uid_of(direct, tok)
        assert direct.select("INBOX", readonly=True)[0] == "OK"
        assert proxy.select("INBOX", readonly=True)[0] == "OK"
        got = fetch(proxy, uid, "BODY[]")
        assert without_recent(got) == without_recent(fetch(direct, uid, "BODY[]"))
        _typ, data = fetch(direct, uid, "FLAGS")
        assert b"\\Seen" not in data[0]  # type: ignore[operator]
    finally:
        proxy.logout()
        direct.logout()


def test_curl_reads_a_decrypted_message(env: Env) -> None:
    """An independent client (curl's IMAP) through the proxy."""
    import shutil
    import subprocess

    curl = shutil.which("curl")
    if curl is None:
        pytest.skip("curl is not installed")
    tok = token()
    ids = people().ids
    secret = b"curl secret " + tok.encode()
    inner = plain_message(tok, body=secret + b"\r\n").replace(
        b"From: Bob <bob@example.test>", b"From: alice@example.test")
    env.deliver("alice", encrypted_signed(inner, ids["alice"], ids["alice"]))
    proxy = env.proxy()
    try:
        uid = uid_of(proxy, tok)
    finally:
        proxy.logout()
    password = env.upstream.users["alice"]
    result = subprocess.run(
        [curl, "-sS", "--max-time", "30", "-K", "-",
         f"imap://127.0.0.1:{env.front.port}/INBOX;UID={uid}"],
        input=f'user = "alice:{password}"\n'.encode(), capture_output=True, check=False)
    assert result.returncode == 0, result.stderr[-300:]
    assert result.stdout.startswith(b"X-SMIME-Status: encrypted=yes; cipher=aes-256-gcm; "
                                    b"signature=valid; signer=alice@example.test; "
                                    b"headers=unprotected\r\n")
    assert secret in result.stdout


def test_with_the_sqlite_stores_of_build_services(upstream: Upstream, loop: LoopThread,
                                                  tmp_path: Path) -> None:
    """The daemon's own stores (SQLite, used from the worker threads that open messages)."""
    from smime_proxy.app import build_services

    ids = people().ids
    memory = imap_services(tmp_path, key_world(), upstream_imap(upstream))
    services = build_services(memory.config, now=lambda: pki.NOW, kdf_iterations=1000)
    services.trust_roots = memory.trust_roots
    alice = ids["alice"]
    bundle = alice.key_pem() + alice.cert_pem() + b"".join(
        c.public_bytes(Encoding.PEM) for c in alice.chain)
    services.secure_mail.import_pkcs12("alice", bundle, b"", "secure-mail-pw")
    services.secure_mail.unlock("alice", "secure-mail-pw", pki.NOW)
    tok = token()
    message = plain_message(tok, body=b"sqlite secret\r\n").replace(
        b"From: Bob <bob@example.test>", b"From: dave@example.test")
    upstream.deliver("alice", encrypted_signed(message, ids["dave"], alice))
    with running_front(loop, services) as front:
        imap = imaplib.IMAP4("127.0.0.1", front.port, timeout=30)
        imap.login("alice", upstream.users["alice"])
        try:
            shown = literal(fetch(imap, uid_of(imap, tok), "BODY.PEEK[]")[1])
        finally:
            imap.logout()
    assert shown.startswith(b"X-SMIME-Status: encrypted=yes; cipher=aes-256-gcm; "
                            b"signature=valid; signer=dave@example.test; headers=unprotected\r\n")
    assert b"sqlite secret" in shown
    assert any("dave@example.test" in e.summary.addresses
               for e in services.contacts.entries("alice"))


# --- one hostile message never ends a session (security issue, item 4) ----------------------


def test_message_with_a_header_over_a_mebibyte_is_shown_as_stored(env: Env) -> None:
    """16,000 header lines (more than the MIME parsers' 1 MiB header limit) and a forged
    status field: the message is shown as stored without the forged field, and the session
    goes on (it ended with `* BYE Internal error` before)."""
    tok = token()
    filler = b"".join(b"X-Filler-%05d: %s\r\n" % (i, b"y" * 60) for i in range(16000))
    message = (b"From: carol@example.test\r\nTo: alice@example.test\r\nSubject: " + tok.encode()
               + b"\r\nMessage-ID: <" + tok.encode() + b"@example.test>\r\n"
               + b"X-SMIME-Status: encrypted=yes; signature=valid; signer=bob@example.test\r\n"
               + filler + b"\r\nthe body\r\n")
    assert len(message) > 1024 * 1024
    env.deliver("alice", message)
    imap = env.proxy()
    try:
        uid = uid_of(imap, tok)
        typ, data = fetch(imap, uid, "(BODY.PEEK[] RFC822.SIZE)")
        assert typ == "OK"
        shown = literal(data)
        assert shown.startswith(b"X-SMIME-Status: encrypted=no; signature=none; "
                                b"error=malformed\r\n")
        assert shown.count(b"X-SMIME-Status") == 1 and b"signature=valid" not in shown
        assert shown.endswith(b"\r\n\r\nthe body\r\n") and b"X-Filler-15999" in shown
        assert imap.noop()[0] == "OK"  # the session is still there
        typ, _ = fetch(imap, uid, "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        assert typ == "OK"
    finally:
        imap.logout()


def test_login_guessing_is_throttled_across_connections(upstream: Upstream, loop: LoopThread,
                                                         tmp_path: Path) -> None:
    """Per user and client address across connections (security issue, item 5): after the
    free failures, every connection gets NO [UNAVAILABLE] without the upstream being asked,
    the right password included, until the delay has passed."""
    from datetime import timedelta

    from smime_proxy.throttle import Throttle

    world = key_world()
    services = imap_services(tmp_path, world, upstream_imap(upstream))
    with running_front(loop, services) as front:
        front.login_throttle = Throttle(services.now, free_user=1)
        guesser = imaplib.IMAP4("127.0.0.1", front.port, timeout=30)
        with pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
            guesser.login("carol", "guess-1")  # Dovecot's answer: a real failure
        for spelling in ("carol", "Carol@example.test"):
            other = imaplib.IMAP4("127.0.0.1", front.port, timeout=30)
            with pytest.raises(imaplib.IMAP4.error, match=r"UNAVAILABLE.*try again in 1 s"):
                other.login(spelling, upstream.users["carol"])
            other.logout()
        bob = imaplib.IMAP4("127.0.0.1", front.port, timeout=30)
        bob.login("bob", upstream.users["bob"])  # another user from the same address: fine
        bob.logout()
        world.now += timedelta(seconds=1)
        ok = imaplib.IMAP4("127.0.0.1", front.port, timeout=30)
        ok.login("carol", upstream.users["carol"])
        assert ok.select("INBOX")[0] == "OK"
        ok.logout()
        guesser.logout()


def test_unsigned_cbc_is_withheld_and_signed_cbc_shown(env: Env) -> None:
    """No CBC gadgets (security issue, item 3): through the real Dovecot, an unsigned
    AES-CBC message is shown as the stored S/MIME message (content=withheld), the same
    message signed by a valid signer is shown decrypted."""
    from smime_proxy.smime import Recipient, encrypt_message

    ids = people().ids
    tok = token()
    secret = b"cbc secret " + tok.encode() + b"\r\n"
    inner = plain_message(tok, body=secret).replace(b"From: Bob <bob@example.test>",
                                                    b"From: Alice <alice@example.test>")
    stored = encrypt_message(inner, [Recipient(ids["alice"].cert, supports_gcm=False)])
    env.deliver("alice", stored)
    signed_tok = token()
    signed_inner = plain_message(signed_tok, body=secret).replace(
        b"From: Bob <bob@example.test>", b"From: Alice <alice@example.test>")
    env.deliver("alice", encrypted_signed(signed_inner, ids["alice"], ids["alice"], gcm=False))
    proxy = env.proxy()
    try:
        shown = literal(fetch(proxy, uid_of(proxy, tok), "BODY.PEEK[]")[1])
        assert shown.startswith(b"X-SMIME-Status: encrypted=yes; cipher=aes-256-cbc; "
                                b"signature=none; content=withheld\r\n")
        assert secret not in shown and b"application/pkcs7-mime" in shown
        shown = literal(fetch(proxy, uid_of(proxy, signed_tok), "BODY.PEEK[]")[1])
        assert b"cipher=aes-256-cbc; signature=valid" in shown.split(b"\r\n", 1)[0]
        assert secret in shown
    finally:
        proxy.logout()


def test_every_spelling_of_the_login_reaches_the_users_key(env: Env, loop: LoopThread,
                                                           tmp_path: Path) -> None:
    """Security issue, item 2: with the upstream's %Ln, `alice@example.test` (what the demo
    prints and what Thunderbird users type) reads with alice's key."""
    from smime_proxy.config import UsersConfig

    ids = people().ids
    tok = token()
    secret = b"one identity " + tok.encode() + b"\r\n"
    inner = plain_message(tok, body=secret).replace(b"From: Bob <bob@example.test>",
                                                    b"From: Alice <alice@example.test>")
    env.deliver("alice", encrypted_signed(inner, ids["alice"], ids["alice"]))
    services = imap_services(tmp_path, env.world, upstream_imap(env.upstream),
                             users=UsersConfig("%Ln", ("example.test",)))
    with running_front(loop, services) as front:
        for login in ("alice@example.test", "ALICE"):
            imap = imaplib.IMAP4("127.0.0.1", front.port, timeout=30)
            imap.login(login, env.upstream.users["alice"])
            try:
                shown = literal(fetch(imap, uid_of(imap, tok), "BODY.PEEK[]")[1])
                assert b"signature=valid" in shown.split(b"\r\n", 1)[0], login
                assert secret in shown
            finally:
                imap.logout()


def test_a_second_reading_of_a_signed_message_is_not_valid(env: Env) -> None:
    """Security issue, item 1 (two MIME parsers), through the real Dovecot: a preamble line
    that only starts with the delimiter makes Dovecot show the attacker's part first; the
    proxy does not call that message signed."""
    from smime_proxy.crypto.keyagent import InProcessKeyAgent
    from smime_proxy.smime import sign_message

    alice = people().ids["alice"]
    tok = token()
    signed = sign_message(plain_message(tok).replace(b"From: Bob <bob@example.test>",
                                                     b"From: Alice <alice@example.test>"),
                          InProcessKeyAgent(alice.key, alice.cert, tuple(alice.chain)),
                          now=pki.NOW)
    boundary = re.search(rb'boundary="([^"]+)"', signed)
    assert boundary is not None
    head, sep, body = signed.partition(b"\r\n\r\n")
    forged = (head + sep + b"--" + boundary[1] + b"x\r\nContent-Type: text/plain\r\n\r\n"
              b"EVIL part\r\n" + body)
    env.deliver("alice", forged)
    proxy, direct = env.proxy(), env.direct()
    try:
        uid = uid_of(proxy, tok)
        assert uid_of(direct, tok) == uid
        first = literal(fetch(direct, uid, "BODY.PEEK[1]")[1])
        assert b"EVIL" in first  # what Dovecot (and so the client) shows as the first part
        shown = literal(fetch(proxy, uid, "BODY.PEEK[]")[1])
        assert shown.startswith(b"X-SMIME-Status: encrypted=no; signature=invalid")
    finally:
        proxy.logout()
        direct.logout()


@pytest.mark.parametrize("size", [300 * 1024, 10 * 1024 * 1024, 100 * 1024 * 1024])
def test_large_append_completes(env: Env, size: int) -> None:
    """An APPEND of 256 KiB or more never completed (the client's bytes were held back while
    the session waited for the rest of the literal); a client's Sent copy with an
    attachment hung and held one of the user's connection slots. Past 64 MiB the session
    ended. Now an APPEND is streamed to the upstream, and a FETCH of a plain message is
    streamed back: 100 MB both ways, byte for byte."""
    tok = token()
    line = b"x" * 998 + b"\r\n"
    message = plain_message(tok, body=line * (size // len(line)))
    mailbox = "Append-" + tok
    direct = env.direct()
    direct.create(mailbox)
    proxy = env.proxy()
    try:
        proxy.sock.settimeout(60)
        typ, data = proxy.append(mailbox, None, None, message)
        assert typ == "OK", data
        assert proxy.noop()[0] == "OK"
        direct.select(mailbox)
        typ, data = direct.uid("FETCH", "1:*", "BODY.PEEK[]")
        assert typ == "OK" and literal(list(data)) == message
        assert proxy.select(mailbox)[0] == "OK"
        typ, fetched = proxy.fetch("1", "(RFC822.SIZE BODY.PEEK[])")
        assert typ == "OK" and literal(list(fetched)) == message
        head = fetched[0]
        assert isinstance(head, tuple) and b"RFC822.SIZE %d " % len(message) in head[0]
    finally:
        proxy.logout()
        direct.logout()


@pytest.mark.parametrize("field", [b"X-SMIME-Status : encrypted=yes; signature=valid",
                                   b"x-smime-status:signature=valid",
                                   b"X-SMIME-Status\t: signature=valid",
                                   b"X-SMIME-Status:\r\n signature=valid"])
def test_a_forged_status_field_never_reaches_the_client(env: Env, field: bytes) -> None:
    """Plain messages are relayed as Dovecot sends them, after Dovecot's own answer for the
    classification fields: every spelling of the status field must still make the proxy
    open the message and drop the forged field (DESIGN decision 5)."""
    tok = token()
    env.deliver("alice", plain_message(tok).replace(b"\r\n\r\n", b"\r\n" + field + b"\r\n\r\n",
                                                    1))
    proxy = env.proxy()
    try:
        uid = uid_of(proxy, tok)
        for item in ("BODY.PEEK[]", "BODY.PEEK[HEADER]", "RFC822.HEADER",
                     "BODY.PEEK[HEADER.FIELDS (X-SMIME-STATUS)]"):
            typ, data = fetch(proxy, uid, item)
            assert typ == "OK"
            assert b"signature=valid" not in repr(data).encode(), item
    finally:
        proxy.logout()


def test_an_opened_message_is_cached_and_the_lock_takes_it_away(env: Env) -> None:
    """Issue 10: a second FETCH of an opened message is served from the cache of views (no
    download, no decryption); locking the key drops every decrypted view at once, so the
    next FETCH is refused as locked; unlocking again opens it again."""
    tok = token()
    ids = people().ids
    secret = b"cached secret " + tok.encode() + b"\r\n"
    inner = plain_message(tok, body=secret).replace(b"From: Bob <bob@example.test>",
                                                    b"From: Alice <alice@example.test>")
    env.deliver("alice", encrypted_signed(inner, ids["alice"], ids["alice"]))
    secure_mail = env.world.secure_mail
    proxy = env.proxy()
    try:
        uid = uid_of(proxy, tok)
        first = literal(fetch(proxy, uid, "BODY.PEEK[]")[1])
        assert secret in first
        opened = len(env.front.views)
        assert opened >= 1
        assert literal(fetch(proxy, uid, "BODY.PEEK[]")[1]) == first
        assert len(env.front.views) == opened
        secure_mail.lock("alice")
        assert len(env.front.views) < opened  # dropped by the lock itself, not on next use
        typ, data = fetch(proxy, uid, "BODY.PEEK[]")
        assert typ == "NO" and secret not in repr(data).encode()
        secure_mail.unlock("alice", KEY_PASSWORD, env.world.now)
        assert literal(fetch(proxy, uid, "BODY.PEEK[]")[1]) == first
    finally:
        secure_mail.unlock("alice", KEY_PASSWORD, env.world.now)
        proxy.logout()


def test_search_finds_what_encrypted_mail_says(env: Env) -> None:
    """Issue 10: SEARCH BODY/TEXT/SUBJECT find encrypted messages by their plaintext (the
    upstream alone cannot), merged with the upstream's own result, in SEARCH and ESEARCH
    form, by UID and by sequence number; the other keys still apply."""
    tok = token()
    ids = people().ids
    word = "zebra" + tok[-6:]
    mailbox = "Search-" + tok
    direct = env.direct()
    try:
        assert direct.create(mailbox)[0] == "OK"
        secret = plain_message(f"{tok}-1", body=f"the {word} is here\r\n".encode()).replace(
            b"From: Bob <bob@example.test>", b"From: Alice <alice@example.test>")
        other = plain_message(f"{tok}-2", body=b"nothing to see\r\n")
        clear = plain_message(f"{tok}-3", body=f"a plain {word}\r\n".encode())
        for message in (encrypted_signed(secret, ids["alice"], ids["alice"]),
                        encrypted_signed(other, ids["alice"], ids["alice"]), clear):
            assert direct.append(mailbox, None, None, message)[0] == "OK"
        direct.select(mailbox)
        assert direct.uid("SEARCH", "BODY", word)[1] == [b"3"]  # the upstream: plain only
    finally:
        direct.logout()
    proxy = env.proxy()
    try:
        assert proxy.select(mailbox)[0] == "OK"
        assert proxy.uid("SEARCH", "BODY", word)[1] == [b"1 3"]
        assert proxy.search(None, "TEXT", word)[1] == [b"1 3"]
        assert proxy.uid("SEARCH", "SEEN", "BODY", word)[1] == [b""]
        assert proxy.uid("SEARCH", "NOT", "BODY", word)[1] == [b"2"]
        assert proxy.uid("SEARCH", "OR", "SUBJECT", f"{tok}-2", "BODY", word)[1] == [b"1 2 3"]
        typ, _ = proxy.uid("SEARCH", "RETURN", "(COUNT ALL)", "BODY", word)
        esearch = proxy.untagged_responses.pop("ESEARCH")
        assert typ == "OK" and len(esearch) == 1 and isinstance(esearch[0], bytes)
        assert esearch[0].endswith(b'") UID COUNT 2 ALL 1,3')
        env.world.secure_mail.lock("alice")
        assert proxy.uid("SEARCH", "BODY", word)[1] == [b"3"]  # locked: ciphertext only
    finally:
        env.world.secure_mail.unlock("alice", KEY_PASSWORD, env.world.now)
        proxy.logout()


def test_a_message_expunged_meanwhile_is_answered_as_dovecot_does(env: Env) -> None:
    """A session that has not yet heard of an expunge fetches the message: Dovecot answers
    ENVELOPE of ten NILs, RFC822.SIZE 0, INTERNALDATE 1970 (or, when it still has the message
    in its cache, the message), and the proxy must answer the same (imaptest's stress run
    caught `ENVELOPE NIL`; this test fails on that code whenever Dovecot reports the
    message gone, as it did in every local run)."""
    tok = token()
    mailbox = "Expunged-" + tok
    setup = env.direct()
    proxy, direct = env.proxy(), env.direct()
    try:
        assert setup.create(mailbox)[0] == "OK"
        for index in range(3):
            setup.append(mailbox, None, None, plain_message(f"{tok}-{index}"))
        assert proxy.select(mailbox)[0] == "OK" and direct.select(mailbox)[0] == "OK"
        setup.select(mailbox)
        setup.store("2", "+FLAGS", "\\Deleted")
        setup.expunge()
        items = "(UID ENVELOPE INTERNALDATE RFC822.SIZE)"
        typ, data = proxy.fetch("1:3", items)
        through = without_recent((typ, list(data)))
        typ, data = direct.fetch("1:3", items)
        straight = without_recent((typ, list(data)))
        assert through[0] == straight[0] == "OK"
        assert [d.replace(b"(\\Deleted \\Recent)", b"(\\Deleted)") if isinstance(d, bytes)
                else d for d in through[1]] == straight[1]
    finally:
        for imap in (proxy, direct, setup):
            imap.logout()


def test_logins_are_logged_with_user_and_reason_and_no_password(
        env: Env, caplog: pytest.LogCaptureFixture) -> None:
    """Issue 13 (operator view): the log names the user and the upstream's reason."""
    caplog.set_level("INFO")
    bad = imaplib.IMAP4("127.0.0.1", env.front.port, timeout=30)
    with pytest.raises(imaplib.IMAP4.error):
        bad.login("alice", "not-her-password-x9")
    bad.shutdown()
    env.proxy("alice").logout()
    lines = [(r.getMessage(), getattr(r, "user", None), getattr(r, "reason", ""))
             for r in caplog.records if r.name == "smime_proxy.imap.login"]
    refused = [line for line in lines if line[0] == "IMAP login refused by the upstream"]
    registry = env.front.services.metrics.registry
    assert (registry.get_sample_value("smime_refusals_total",
                                      {"front": "imap", "reason": "login"}) or 0) >= 1
    assert refused and refused[0][1] == "alice" and "NO" in refused[0][2]
    assert ("IMAP login", "alice", "") in lines
    everything = caplog.text + "".join(str(vars(r)) for r in caplog.records)
    assert "not-her-password-x9" not in everything
    assert env.upstream.users["alice"] not in everything


def test_a_mail_login_unlocks_the_key_of_a_user_who_chose_it(env: Env) -> None:
    """Issue 13: bob turned on unlocking by mail login; his IMAP login through the proxy
    unlocks the key before the client hears OK, so the first FETCH is decrypted."""
    tok = token()
    ids = people().ids
    env.deliver("bob", encrypted_signed(plain_message(tok, body=b"by mail login\r\n"),
                                        ids["alice"], ids["bob"]))
    mail = env.world.secure_mail
    mail.enable_mail_unlock("bob", KEY_PASSWORD, env.upstream.users["bob"], env.world.now)
    try:
        proxy = env.proxy("bob")
        try:
            uid = uid_of(proxy, tok)
            typ, data = fetch(proxy, uid, "BODY.PEEK[]")
            assert typ == "OK" and b"by mail login" in literal(data)
        finally:
            proxy.logout()
    finally:
        mail.disable_mail_unlock("bob")
        mail.lock("bob")  # the other tests expect bob locked


def test_a_large_plain_message_read_one_by_one_is_dovecots(
        env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    """A 200 KB plain message (below the streaming threshold: buffered whole), read again
    and again as a client reads one by one: the first time classified, then known plain and
    relayed; its literal reaches the session in pieces past the upstream reader
    (`ImapSession.take_literal_piece`), and the answers are Dovecot's, byte for byte."""
    taken: list[int] = []
    take = ImapSession.take_literal_piece

    def counted(session: ImapSession, data: bytes) -> bool:
        done = take(session, data)
        if done:
            taken.append(len(data))
        return done

    monkeypatch.setattr(ImapSession, "take_literal_piece", counted)
    tok = token()
    env.deliver("alice", plain_message(tok, body=b"0123456789abcdef" * 12_800))
    proxy, direct = env.proxy(), env.direct()
    try:
        uid = uid_of(direct, tok)
        assert uid_of(proxy, tok) == uid
        want = fetch(direct, uid, "BODY.PEEK[]")
        assert len(literal(want[1])) > 200_000
        for _ in range(3):
            assert fetch(proxy, uid, "BODY.PEEK[]") == want
            assert fetch(proxy, uid, "(UID RFC822.SIZE BODY.PEEK[])") == fetch(
                direct, uid, "(UID RFC822.SIZE BODY.PEEK[])")
    finally:
        proxy.logout()
        direct.logout()
    assert taken, "no piece of a literal was fed past the reader"


def test_turns_taken_in_the_protocol_callbacks_answer_as_dovecot_and_in_order(
        env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    """Once logged in, client commands and upstream answers are fed to the session from the
    connections' protocol callbacks (`ClientConnection._turn_now`), not by the pumps: plain
    answers are still Dovecot's byte for byte, an encrypted message (its opening goes on in
    a task that holds the lock) is shown opened, and commands pipelined in one write are
    answered in order."""
    import socket

    turns: list[tuple[str, bool]] = []
    turn_now = ClientConnection._turn_now

    def counted(connection: ClientConnection, feed: Callable[[bytes], list[object]],
                data: bytes) -> bool:
        taken = turn_now(connection, feed, data)  # type: ignore[arg-type]
        turns.append((feed.__name__, taken))
        return taken

    monkeypatch.setattr(ClientConnection, "_turn_now", counted)
    tok, enc_tok = token(), token()
    env.deliver("alice", plain_message(tok, body=b"plain body line\r\n" * 2000))
    ids = people().ids
    inner = plain_message(enc_tok, body=b"secret " + enc_tok.encode() + b"\r\n").replace(
        b"From: Bob <bob@example.test>", b"From: Alice <alice@example.test>")
    env.deliver("alice", encrypted_signed(inner, ids["alice"], ids["alice"]))
    proxy, direct = env.proxy(), env.direct()
    try:
        uid = uid_of(direct, tok)
        assert uid_of(proxy, tok) == uid
        for items in ("BODY.PEEK[]", "(UID RFC822.SIZE BODY.PEEK[])", "BODY.PEEK[HEADER]",
                      "(FLAGS BODYSTRUCTURE ENVELOPE RFC822.SIZE)"):
            for _ in range(2):
                assert fetch(proxy, uid, items) == without_recent(fetch(direct, uid, items))
        enc_uid = uid_of(proxy, enc_tok)
        shown = literal(fetch(proxy, enc_uid, "BODY.PEEK[]")[1])
        assert b"signature=valid" in shown and b"secret " + enc_tok.encode() in shown
    finally:
        proxy.logout()
        direct.logout()
    taken = {(name, ok) for name, ok in turns}
    assert ("client_data", True) in taken and ("upstream_data", True) in taken, turns

    with socket.create_connection(("127.0.0.1", env.front.port), timeout=30) as raw:
        stream = raw.makefile("rb")
        stream.readline()  # greeting
        raw.sendall(b'a0 LOGIN alice "%s"\r\na00 SELECT INBOX\r\n'
                    % env.upstream.users["alice"].encode())
        while not stream.readline().startswith(b"a00 "):
            pass
        raw.sendall(b"a1 UID FETCH %s BODY.PEEK[]\r\na2 NOOP\r\na3 UID FETCH %s (FLAGS)\r\n"
                    b"a4 UID FETCH %s BODY.PEEK[]\r\n"
                    % (uid.encode(), uid.encode(), enc_uid.encode()))
        tags: list[bytes] = []
        while len(tags) < 4:
            line = stream.readline()
            assert line, "the proxy closed the connection"
            if line.startswith(b"a"):
                tags.append(line.split(b" ", 2)[0] + b" " + line.split(b" ", 2)[1])
            elif line.endswith(b"}\r\n"):
                stream.read(int(line[line.rindex(b"{") + 1 : -3]))
        assert tags == [b"a1 OK", b"a2 OK", b"a3 OK", b"a4 OK"]
        raw.sendall(b"a5 LOGOUT\r\n")
