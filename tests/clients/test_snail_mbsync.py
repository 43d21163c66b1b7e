"""s-nail and mbsync, two real clients beside Thunderbird, read through the product (issue 13).

The product runs as a user starts it (``demo_proxy``, clients/conftest.py); the clients talk
to its IMAP listener with STARTTLS and the demo's TLS CA, as bob, with bob's key unlocked.

- **s-nail** (Debian's 14.9, which does S/MIME itself) prints a signed+encrypted message alice
  sent through the proxy's SMTP listener: the decrypted body, one ``X-SMIME-Status``, no
  S/MIME or ``message/rfc822`` wrapper, nothing s-nail tries to decrypt. A second proxy on a
  copy of the demo's config and data with ``signatures: keep`` shows the signed layer too, and
  s-nail's ``verify`` verifies alice's signature against the demo S/MIME CA (and fails
  without it, so that CA is what it verified against).
- **mbsync** (Debian's isync 1.4) pulls a folder of 200 mixed messages (plain, multipart with
  an attachment, signed detached and opaque, signed+encrypted with AES-CBC and AES-GCM,
  APPENDed straight to Dovecot) into a Maildir. Every local message is byte for byte what the
  proxy shows for its UID (``UID FETCH n BODY.PEEK[]``), up to the two things mbsync itself
  does to every message it stores in a Maildir: CRLF line ends become LF, and an
  ``X-TUID: <12 characters>`` field is added as the header's last field (its token for
  finding a message again after an interrupted run). A second run changes nothing.
- **mbsync with the key locked** gets ``NO [UNAVAILABLE]`` for the encrypted message and
  pulls the others; after unlocking, the next run does not pull the refused one (mbsync
  records a refused FETCH as done): a known failure, reported as an xfail.

Both clients check only the DNS names of a server certificate (not its IP address entries),
so they connect to ``localhost`` (the demo certificate names ``localhost``, and the proxy
listens on 127.0.0.1). Each test leaves the client's output and IMAP log in its artifacts
directory (s-nail ``-vv`` with the password masked, mbsync ``-Dn``).
"""

from __future__ import annotations

import dataclasses
import email.utils
import imaplib
import os
import re
import secrets
import shutil
import smtplib
import ssl
import subprocess
import time
from collections.abc import Sequence
from email.message import EmailMessage
from pathlib import Path

import pytest

from smime_proxy.crypto.keyagent import InProcessKeyAgent
from smime_proxy.harness import Upstream
from smime_proxy.smime import Recipient, encrypt_message, sign_message
from support import mailbox
from support.cmsutil import load_p12
from support.demo_proxy import DemoProxy
from support.smime_check import smime_type

SNAIL = shutil.which("s-nail")
MBSYNC = shutil.which("mbsync")
needs_snail = pytest.mark.skipif(SNAIL is None, reason="s-nail is not installed (Debian s-nail)")
needs_mbsync = pytest.mark.skipif(MBSYNC is None,
                                  reason="mbsync is not installed (Debian isync)")
pytestmark = [pytest.mark.clients]

CLIENT_HOST = "localhost"
"""What the clients connect to: s-nail and mbsync match a certificate's DNS names only."""

SYNC_COUNT = 200
KINDS = ("plain", "attachment", "signed", "encrypted")


# --- the proxy as the clients see it -------------------------------------------------------


def proxy_imap(proxy: DemoProxy, user: str = "bob") -> imaplib.IMAP4:
    imap = imaplib.IMAP4(proxy.host, proxy.imap_port, timeout=60)
    imap.starttls(ssl.create_default_context(cafile=str(proxy.tls_ca)))
    imap.login(user, proxy.mail_passwords[user])
    return imap


def shown_by_proxy(proxy: DemoProxy, folder: str) -> dict[int, tuple[int, bytes]]:
    """``UID FETCH 1:* (UID RFC822.SIZE BODY.PEEK[])`` of ``folder`` through the proxy:
    {uid: (RFC822.SIZE, the message's bytes)}."""
    with proxy_imap(proxy) as imap:
        status, _ = imap.select(f'"{folder}"', readonly=True)
        assert status == "OK"
        status, data = imap.uid("FETCH", "1:*", "(UID RFC822.SIZE BODY.PEEK[])")
        assert status == "OK", data
    shown: dict[int, tuple[int, bytes]] = {}
    for i, item in enumerate(data):
        if not isinstance(item, tuple):
            continue
        after = data[i + 1] if i + 1 < len(data) else b""
        items = item[0] + (after if isinstance(after, bytes) else b"")
        uid = re.search(rb"\bUID (\d+)", items)
        size = re.search(rb"\bRFC822\.SIZE (\d+)", items)
        assert uid and size, items
        shown[int(uid.group(1))] = (int(size.group(1)), item[1])
    return shown


# --- s-nail --------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Delivered:
    folder: str
    subject: str
    body: str


def submit_protected(proxy: DemoProxy, subject: str, body: str) -> None:
    """alice sends bob a message through the proxy's SMTP listener, signed and encrypted."""
    msg = EmailMessage()
    msg["From"] = "Alice <alice@example.test>"
    msg["To"] = "Bob <bob@example.test>"
    msg["Subject"] = subject
    msg["Date"] = email.utils.formatdate(localtime=True)
    msg["Message-ID"] = email.utils.make_msgid(domain="example.test")
    msg["X-SMIME-Sign"] = msg["X-SMIME-Encrypt"] = "yes"
    msg.set_content(body + "\n")
    with smtplib.SMTP(proxy.host, proxy.smtp_port, timeout=60) as smtp:
        smtp.starttls(context=ssl.create_default_context(cafile=str(proxy.tls_ca)))
        smtp.login("alice", proxy.mail_passwords["alice"])
        smtp.send_message(msg)


@pytest.fixture(scope="module")
def snail_folder(demo_proxy: DemoProxy, upstream: Upstream) -> Delivered:
    """alice's signed+encrypted message to bob, as Dovecot stored it (checked to be
    enveloped-data), copied upstream into a folder of its own: s-nail's message 1."""
    demo_proxy.unlock("alice")
    token = secrets.token_hex(4)
    sent = Delivered(folder=f"Snail-{token}", subject=f"For s-nail s{token}",
                     body=f"Only bob can read this: the secret word is quince-{token}.")
    submit_protected(demo_proxy, sent.subject, sent.body)
    stored = mailbox.wait_for(upstream, "bob", f"s{token}")
    assert len(stored) == 1, f"arrived {len(stored)} times"
    assert smime_type(stored[0]) == "enveloped-data", stored[0][:800]
    assert sent.body.encode() not in stored[0]
    with imaplib.IMAP4(upstream.host, upstream.imap_port) as imap:
        imap.login("bob", upstream.users["bob"])
        assert imap.create(sent.folder)[0] == "OK"
        imap.select("INBOX")
        _, found = imap.uid("SEARCH", "SUBJECT", f'"s{token}"')
        uids = (found[0] or b"").split()
        assert len(uids) == 1, found
        assert imap.uid("COPY", uids[0].decode(), sent.folder)[0] == "OK"
    return sent


@dataclasses.dataclass(frozen=True)
class SnailRun:
    shown: str
    """stdout: what s-nail printed for the user."""
    diagnostics: str
    """stderr (``-vv``: the IMAP exchange, TLS and S/MIME verification messages)."""


def run_snail(proxy: DemoProxy, folder: str, commands: Sequence[str], home: Path,
              log: Path, *, smime_ca: Path | None = None) -> SnailRun:
    """s-nail, no resource files (``-:/``), batch mode, on bob's ``folder`` at the proxy's
    IMAP listener (STARTTLS, the demo TLS CA only); runs ``commands``, then ``xit`` (leave
    without changing anything). S/MIME trust: ``smime_ca`` only, or nothing."""
    assert SNAIL is not None
    port = proxy.imap_port
    password = proxy.mail_passwords["bob"]
    argv = [SNAIL, "-:/", "-#", "-vv", "-Sv15-compat", "-Sttycharset=utf-8",
            "-Simap-use-starttls", f"-Stls-ca-file={proxy.tls_ca}", "-Stls-ca-no-defaults",
            f"-Spassword-bob@{CLIENT_HOST}:{port}={password}", "-Ssmime-ca-no-defaults"]
    if smime_ca is not None:
        argv.append(f"-Ssmime-ca-file={smime_ca}")
    argv += ["-f", f"imap://bob@{CLIENT_HOST}:{port}/{folder}"]
    home.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(argv, input="\n".join([*commands, "xit"]) + "\n",
                          capture_output=True, text=True, timeout=60, check=False,
                          env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                               "HOME": str(home), "LC_ALL": "C.UTF-8"})
    run = SnailRun(done.stdout, done.stderr.replace(password, "<password>"))
    log.write_text(f"$ s-nail ... {' / '.join(commands)}  (exit {done.returncode})\n"
                   f"--- stdout\n{run.shown}--- stderr\n{run.diagnostics}", encoding="utf-8")
    print(f"\n--- s-nail {' / '.join(commands)}: stdout\n{run.shown}")
    assert done.returncode == 0, run
    return run


def imap_lines(diagnostics: str) -> list[str]:
    """The server's lines of s-nail's ``-vv`` log."""
    return [line.split(">>> SERVER: ", 1)[1] for line in diagnostics.splitlines()
            if ">>> SERVER: " in line]


def failed(server_lines: Sequence[str]) -> list[str]:
    """Every NO, BAD and BYE among the server's lines, but the BYE that answers LOGOUT."""
    return [line for line in server_lines
            if re.match(r"(\S+|\*) (NO|BAD|BYE)\b", line) and line != "* BYE Logging out"]


def no_failed_command(diagnostics: str) -> None:
    assert failed(imap_lines(diagnostics)) == []


@needs_snail
def test_snail_prints_the_decrypted_message(demo_proxy: DemoProxy, snail_folder: Delivered,
                                            tmp_path: Path, artifacts: Path) -> None:
    demo_proxy.unlock("bob")
    run = run_snail(demo_proxy, snail_folder.folder, ["headers", "type 1"],
                    tmp_path / "home", artifacts / "s-nail.txt")
    no_failed_command(run.diagnostics)
    shown = run.shown
    assert snail_folder.body in shown
    assert f"Subject: {snail_folder.subject}\n" in shown
    status = [line for line in shown.splitlines() if line.startswith("X-SMIME-Status:")]
    assert len(status) == 1, status
    assert re.fullmatch(r"X-SMIME-Status: encrypted=yes; cipher=aes-256-(cbc|gcm); "
                        r"signature=valid; signer=alice@example\.test; headers=protected",
                        status[0]), status
    assert 'Content-Type: text/plain; charset="utf-8"' in shown
    # one plain message: no wrapper, no part of it that s-nail lists, nothing it decrypts
    everything = shown + run.diagnostics
    for wrapper in ("pkcs7", "p7m", "p7s", "ForwardedMessage", "message/rfc822",
                    "multipart/", "[-- #", "private key"):
        assert wrapper not in everything, wrapper


@needs_snail
def test_snail_verifies_the_kept_signature(keep_proxy: DemoProxy, snail_folder: Delivered,
                                           tmp_path: Path, artifacts: Path) -> None:
    """``signatures: keep``: the decrypted message is alice's multipart/signed, and s-nail
    verifies it with the demo S/MIME CA as its only trust root; without that root the same
    command fails on the chain."""
    keep_proxy.unlock("bob")
    run = run_snail(keep_proxy, snail_folder.folder, ["type 1", "verify 1"],
                    tmp_path / "home", artifacts / "s-nail-verify.txt",
                    smime_ca=keep_proxy.smime_ca)
    no_failed_command(run.diagnostics)
    everything = run.shown + run.diagnostics
    assert "Message 1 was verified successfully" in everything
    assert "Error verifying" not in everything
    assert snail_folder.body in run.shown
    assert re.search(r"^X-SMIME-Status: encrypted=yes; cipher=\S+; signature=valid; "
                     r"signer=alice@example\.test; headers=protected$", run.shown, re.M)
    assert re.search(r"^Content-Type: multipart/signed; "
                     r'protocol="application/pkcs7-signature"', run.shown, re.M)
    assert "application/pkcs7-mime" not in everything
    assert "private key" not in everything

    untrusted = run_snail(keep_proxy, snail_folder.folder, ["verify 1"], tmp_path / "home",
                          artifacts / "s-nail-verify-untrusted.txt")
    assert "Error verifying message 1" in untrusted.diagnostics, untrusted
    assert "verified successfully" not in untrusted.shown + untrusted.diagnostics


# --- mbsync --------------------------------------------------------------------------------


def sync_message(i: int, alice: InProcessKeyAgent, bob: InProcessKeyAgent) -> bytes:
    """Message ``i`` of the folder (UID ``i + 1``), of kind ``KINDS[i % 4]``: plain text
    (every other one 8-bit UTF-8), multipart with a binary attachment, signed (by alice or
    bob, every third one opaque), signed and encrypted to bob (AES-CBC, every third AES-GCM)."""
    kind = KINDS[i % 4]
    sender, agent = ("alice", alice) if i % 8 < 4 else ("bob", bob)
    msg = EmailMessage()
    msg["From"] = f"{sender.capitalize()} <{sender}@example.test>"
    msg["To"] = "Bob <bob@example.test>"
    msg["Subject"] = f"Sync {kind} {i}"
    msg["Date"] = email.utils.formatdate(1767225600 + 60 * i)
    msg["Message-ID"] = f"<sync-{i}@example.test>"
    text = f"Message {i} ({kind}).\nIts word is word-{i}.\n"
    if kind in ("plain", "attachment") and i % 2 == 0:
        msg.set_content(text + "Grüße aus Köln.\n", cte="8bit")
    else:
        msg.set_content(text)
    if kind == "attachment":
        msg.add_attachment(bytes(range(256)) * (1 + i % 7), maintype="application",
                           subtype="octet-stream", filename=f"data-{i}.bin")
    raw = msg.as_bytes(policy=msg.policy.clone(linesep="\r\n"))
    if kind in ("plain", "attachment"):
        return raw
    signed = sign_message(raw, agent, opaque=i % 3 == 0)
    if kind == "signed":
        return signed
    return encrypt_message(signed, [Recipient(bob.certificate, supports_gcm=i % 3 == 1)])


@pytest.fixture(scope="module")
def agents(demo_proxy: DemoProxy, tmp_path_factory: pytest.TempPathFactory
           ) -> tuple[InProcessKeyAgent, InProcessKeyAgent]:
    """alice's and bob's demo keys, exported through the control API (the Secure Mail
    page's export)."""
    directory = tmp_path_factory.mktemp("keys")
    found = []
    for user in ("alice", "bob"):
        path = directory / f"{user}.p12"
        path.write_bytes(demo_proxy.export_p12(user, "export-pw"))
        found.append(load_p12(path, b"export-pw"))
    return found[0], found[1]


def append_upstream(upstream: Upstream, folder: str, messages: Sequence[bytes]) -> None:
    """A fresh ``folder`` of bob's at Dovecot with ``messages`` APPENDed: UIDs 1, 2, ..."""
    with imaplib.IMAP4(upstream.host, upstream.imap_port) as imap:
        imap.login("bob", upstream.users["bob"])
        assert imap.create(folder)[0] == "OK"
        for raw in messages:
            status, answer = imap.append(folder, "", None, raw)
            assert status == "OK", answer
        imap.select(folder, readonly=True)
        _, uids = imap.uid("SEARCH", "ALL")
    assert (uids[0] or b"").split() == [str(i + 1).encode() for i in range(len(messages))]


def mbsyncrc(proxy: DemoProxy, folder: str, maildir: Path) -> str:
    return f"""\
IMAPAccount bob
Host {CLIENT_HOST}
Port {proxy.imap_port}
User bob
Pass "{proxy.mail_passwords["bob"]}"
SSLType STARTTLS
CertificateFile {proxy.tls_ca}

IMAPStore bob-proxy
Account bob

MaildirStore bob-local
Path {maildir}/
Inbox {maildir}/INBOX
SubFolders Verbatim

Channel pull
Far :bob-proxy:
Near :bob-local:
Patterns "{folder}"
Sync Pull
Create Near
Expunge None
SyncState *
"""


def mbsync_setup(proxy: DemoProxy, folder: str, directory: Path) -> tuple[Path, Path]:
    """The config file (``directory/mbsyncrc``) and the Maildir root for ``folder``."""
    maildir = directory / "Maildir"
    maildir.mkdir()
    rc = directory / "mbsyncrc"
    rc.write_text(mbsyncrc(proxy, folder, maildir), encoding="utf-8")
    rc.chmod(0o600)
    return rc, maildir


def run_mbsync(rc: Path, home: Path, log: Path, *, clean: bool = True) -> str:
    """``mbsync -Dn pull`` (its IMAP exchange, literals left out, in ``log``); the log.
    ``clean``: no NO, BAD or BYE (but LOGOUT's) and no error or warning in it."""
    assert MBSYNC is not None
    done = subprocess.run([MBSYNC, "-c", str(rc), "-Dn", "pull"], capture_output=True,
                          text=True, timeout=120, check=False,
                          env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                               "HOME": str(home), "LC_ALL": "C.UTF-8"})
    output = done.stdout + done.stderr
    log.write_text(output, encoding="utf-8")
    assert done.returncode == 0, output[-3000:]
    if clean:
        lines = output.splitlines()
        assert failed(lines) == []
        assert [line for line in lines if mbsync_complaint(line)] == []
    return output


def mbsync_complaint(line: str) -> bool:
    return bool(re.match(r"(IMAP |Maildir )?(error|warning)\b", line, re.I)
                or re.match(r"IMAP command .* returned an error", line))


def local_messages(folder: Path) -> dict[int, bytes]:
    """The Maildir's messages by far-side UID (mbsync's ``,U=<uid>`` in the file name)."""
    found: dict[int, bytes] = {}
    for path in [*(folder / "new").iterdir(), *(folder / "cur").iterdir()]:
        uid = re.search(r",U=(\d+)", path.name)
        assert uid, path.name
        assert int(uid.group(1)) not in found, path.name
        found[int(uid.group(1))] = path.read_bytes()
    return found


def without_tuid(stored: bytes) -> bytes:
    """``stored`` without the ``X-TUID`` field mbsync put last in its header."""
    header, sep, body = stored.partition(b"\n\n")
    lines = header.split(b"\n")
    assert re.fullmatch(rb"X-TUID: \S{12}", lines[-1]), lines[-3:]
    assert not any(line.lower().startswith(b"x-tuid:") for line in lines[:-1]), header
    return b"\n".join(lines[:-1]) + sep + body


@needs_mbsync
def test_mbsync_pulls_200_messages_as_the_proxy_shows_them(
        demo_proxy: DemoProxy, upstream: Upstream,
        agents: tuple[InProcessKeyAgent, InProcessKeyAgent], tmp_path: Path,
        artifacts: Path) -> None:
    appended = [sync_message(i, *agents) for i in range(SYNC_COUNT)]
    folder = f"Sync200-{secrets.token_hex(4)}"
    append_upstream(upstream, folder, appended)
    demo_proxy.unlock("bob")
    rc, maildir = mbsync_setup(demo_proxy, folder, tmp_path)
    started = time.monotonic()
    run_mbsync(rc, tmp_path, artifacts / "mbsync-1.txt")
    print(f"\nmbsync pulled {SYNC_COUNT} messages in {time.monotonic() - started:.2f} s")

    local = local_messages(maildir / folder)
    assert sorted(local) == list(range(1, SYNC_COUNT + 1))
    shown = shown_by_proxy(demo_proxy, folder)
    assert sorted(shown) == list(range(1, SYNC_COUNT + 1))

    tuids = differing = 0
    for uid, (size, message) in sorted(shown.items()):
        i = uid - 1
        kind = KINDS[i % 4]
        assert size == len(message), (uid, size, len(message))
        # the proxy shows CRLF line ends only, so mbsync's CRLF -> LF loses nothing
        assert message.count(b"\r\n") == message.count(b"\n") == message.count(b"\r"), uid
        tuids += b"\nX-TUID: " in local[uid].partition(b"\n\n")[0]
        if without_tuid(local[uid]) != message.replace(b"\r\n", b"\n"):
            differing += 1
            (artifacts / f"uid-{uid}-local.eml").write_bytes(local[uid])
            (artifacts / f"uid-{uid}-proxy.eml").write_bytes(message)
        if kind in ("plain", "attachment"):
            assert message == appended[i], uid  # plain mail is shown as stored
            continue
        sender = "alice" if i % 8 < 4 else "bob"
        status = message.split(b"\r\n", 1)[0].decode()
        assert status.startswith("X-SMIME-Status: encrypted="
                                 + ("yes; cipher=aes-256-" if kind == "encrypted" else "no;"))
        assert f"signature=valid; signer={sender}@example.test;" in status, (uid, status)
        assert b"application/pkcs7" not in local[uid], uid  # strip: an ordinary message
        assert f"Its word is word-{i}.".encode() in local[uid], uid
    assert differing == 0, f"{differing} messages differ (saved in {artifacts})"
    print(f"{tuids} of {SYNC_COUNT} local messages got an X-TUID field from mbsync")

    # a second run has nothing to pull and changes nothing
    before = {path.name for path in (maildir / folder).rglob("*") if path.is_file()}
    second = run_mbsync(rc, tmp_path, artifacts / "mbsync-2.txt")
    after = {path.name for path in (maildir / folder).rglob("*") if path.is_file()}
    assert after == before, after ^ before
    assert f"near side: {SYNC_COUNT} messages" in second, second[-2000:]


@needs_mbsync
def test_mbsync_after_a_locked_run_pulls_what_was_locked(
        demo_proxy: DemoProxy, upstream: Upstream,
        agents: tuple[InProcessKeyAgent, InProcessKeyAgent], tmp_path: Path,
        artifacts: Path) -> None:
    """mbsync runs while bob's key is locked: the encrypted message (UID 4) gets the proxy's
    ``NO [UNAVAILABLE]`` and the three others are pulled. After unlocking, the next run
    should pull UID 4. Known failure: mbsync 1.4 takes a NO to ``UID FETCH n (BODY.PEEK[])``
    as a message that is gone, moves its ``MaxPulledUid`` past it and never asks again: the
    Maildir lacks the message until its sync state is deleted."""
    folder = f"Locked-{secrets.token_hex(4)}"
    append_upstream(upstream, folder, [sync_message(i, *agents) for i in range(4)])
    rc, maildir = mbsync_setup(demo_proxy, folder, tmp_path)
    demo_proxy.lock("bob")
    try:
        locked = run_mbsync(rc, tmp_path, artifacts / "mbsync-locked.txt", clean=False)
    finally:
        demo_proxy.unlock("bob")
    refused = [line for line in locked.splitlines() if failed([line])]
    assert len(refused) == 1, refused
    assert re.fullmatch(r"\d+ NO \[UNAVAILABLE\] .*locked.*", refused[0]), refused
    assert sorted(local_messages(maildir / folder)) == [1, 2, 3]

    run_mbsync(rc, tmp_path, artifacts / "mbsync-unlocked.txt")
    pulled = sorted(local_messages(maildir / folder))
    if pulled == [1, 2, 3]:
        pytest.xfail("mbsync never asks again for a message the proxy refused while the key "
                     "was locked (NO [UNAVAILABLE] to UID FETCH): it is missing locally")
    assert pulled == [1, 2, 3, 4]
