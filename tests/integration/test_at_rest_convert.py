"""Encrypt and decrypt stored messages in place, against the real Dovecot, as the user:
flags and INTERNALDATE kept, the decrypted message byte for byte what was there, and an
operation stopped at every step and run again leaves each message exactly once, in one
form (at_rest.convert)."""

from __future__ import annotations

import imaplib
import itertools
import re
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from smime_proxy.at_rest.convert import Journal, StoredMessages, convert
from smime_proxy.at_rest.forms import decrypted_form
from smime_proxy.at_rest.keywords import MARK
from smime_proxy.config import UpstreamEndpoint
from smime_proxy.crypto.keyagent import InProcessKeyAgent
from smime_proxy.harness import Upstream
from smime_proxy.imap.upstream import authenticate, close_client, open_client
from smime_proxy.smime import seal_stored_copy
from smime_proxy.smime_forms import is_encrypted
from support import pki
from support.mailbox import stored_messages
from support.smtp_proxy import people

_BOX = itertools.count()
DATE = '"02-Jan-2026 03:04:05 +0100"'


def _message(n: int) -> bytes:
    return (f"From: Dave <dave@example.org>\r\nTo: carol@example.test\r\nSubject: rest {n}\r\n"
            f"Message-ID: <rest-{n}@example.org>\r\nMIME-Version: 1.0\r\n"
            f"Content-Type: text/plain; charset=utf-8\r\n\r\nstored body {n}\r\n").encode()


def _fill(up: Upstream, count: int) -> tuple[str, list[bytes]]:
    """A new mailbox of carol's with `count` plain messages (\\Seen $Label1, DATE)."""
    mailbox = f"AtRest{next(_BOX)}"
    messages = [_message(n) for n in range(count)]
    with imaplib.IMAP4(up.host, up.imap_port) as imap:
        imap.login("carol", up.users["carol"])
        imap.create(mailbox)
        for message in messages:
            imap.append(mailbox, "(\\Seen $Label1)", DATE, message)
    return mailbox, messages


def _stored(up: Upstream, mailbox: str) -> list[tuple[bytes, bytes, bytes]]:
    """(flags, internaldate, message) of every message, straight from Dovecot."""
    return [(m.flags, m.date, m.message) for m in stored_messages(up, "carol", mailbox)]


@asynccontextmanager
async def _session(up: Upstream, mailbox: str) -> AsyncIterator[StoredMessages]:
    endpoint = UpstreamEndpoint(up.host, up.imap_port, "starttls", True, up.ca_file)
    client = await open_client(endpoint, connect_timeout=5, handshake_timeout=5)
    try:
        assert await authenticate(client, "carol", up.users["carol"])
        messages = StoredMessages(client, mailbox)
        await messages.select()
        yield messages
    finally:
        await close_client(client)


def _seal(message: bytes) -> bytes:
    return seal_stored_copy(message, people().ids["carol"].cert)


def _open(message: bytes) -> bytes:
    carol = people().ids["carol"]
    return decrypted_form(message, InProcessKeyAgent(carol.key, carol.cert,
                                                     tuple(carol.chain)), [], pki.NOW)


async def test_encrypt_then_decrypt_a_folder(upstream: Upstream, tmp_path: Path) -> None:
    mailbox, originals = _fill(upstream, 3)
    [date_before] = {d for _f, d, _m in _stored(upstream, mailbox)}  # Dovecot's own zone
    async with _session(upstream, mailbox) as messages:
        uids = await messages.candidates("encrypt")
        assert len(uids) == 3
        done = await convert(messages, Journal(tmp_path / "enc.jsonl"), uids, _seal)
        assert (done.done, done.skipped) == (3, 0)
        assert await messages.candidates("encrypt") == []
    stored = _stored(upstream, mailbox)
    assert len(stored) == 3
    for flags, date, message in stored:
        assert is_encrypted(message) and b"stored body" not in message
        assert set(flags.split()) == {b"\\Seen", b"$Label1"}  # no $SmimeReplacement left
        assert date == date_before
    async with _session(upstream, mailbox) as messages:
        uids = await messages.candidates("decrypt")
        done = await convert(messages, Journal(tmp_path / "dec.jsonl"), uids, _open)
        assert done.done == 3
    assert sorted(m for _f, _d, m in _stored(upstream, mailbox)) == sorted(originals)


@pytest.mark.parametrize("stop_at", ["fetched", "journal-appending", "appended",
                                     "journal-appended", "expunged", "unmarked"])
async def test_stopped_at_any_step_and_run_again(upstream: Upstream, tmp_path: Path,
                                                 stop_at: str) -> None:
    mailbox, originals = _fill(upstream, 2)
    journal_path = tmp_path / "journal.jsonl"

    class Stop(Exception):
        pass

    def stop(name: str) -> None:
        if name == stop_at:
            raise Stop(name)

    async with _session(upstream, mailbox) as messages:
        with pytest.raises(Stop):
            await convert(messages, Journal(journal_path), await messages.candidates(
                "encrypt"), _seal, step=stop)
    middle = _stored(upstream, mailbox)
    forms = [(re.search(rb"Subject: (rest \d+)", m)[1], is_encrypted(m))  # type: ignore[index]
             for _f, _d, m in middle]
    assert len(forms) == len(set(forms))  # at most one copy of either form of a message
    assert {subject for subject, _form in forms} == {b"rest 0", b"rest 1"}
    async with _session(upstream, mailbox) as messages:
        await convert(messages, Journal(journal_path), await messages.candidates("encrypt"),
                      _seal)
    stored = _stored(upstream, mailbox)
    assert len(stored) == 2, [m[:80] for _f, _d, m in stored]
    assert all(is_encrypted(m) for _f, _d, m in stored)
    assert all(MARK.encode() not in f for f, _d, _m in stored)
    assert sorted(_open(m) for _f, _d, m in stored) == sorted(originals)


# --- the command line ------------------------------------------------------------------------


def _cli(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "smime_proxy", *args], input=stdin,
                          capture_output=True, text=True, timeout=120, check=False)


def test_the_store_command_encrypts_and_decrypts(upstream: Upstream, tmp_path: Path) -> None:
    import yaml

    from smime_proxy.app import stores_of
    from support.control import Upstreamish, control_config

    carol = people().ids["carol"]
    data_dir = tmp_path / "data"
    with stores_of(data_dir) as stores:
        stores.secure_mail.import_pkcs12("carol", carol.key_pem() + carol.cert_pem(), b"",
                                         "carol-secure-mail-1")
    config = control_config(tmp_path, Upstreamish(upstream.host, upstream.imap_port,
                                                  ca_file=upstream.ca_file))
    config["data_dir"] = str(data_dir)
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    (tmp_path / "mail-pw").write_text(upstream.users["carol"] + "\n")
    (tmp_path / "smp").write_text("carol-secure-mail-1\n")
    mailbox, originals = _fill(upstream, 2)
    common = ["carol", "--config", str(tmp_path / "config.yaml"), "--mailbox", mailbox,
              "--all", "--mail-password-file", str(tmp_path / "mail-pw")]
    wrong = _cli("store", "encrypt", *common, "--password-file", "-", stdin="nope\n")
    assert wrong.returncode == 1, wrong.stderr
    assert all(not is_encrypted(m) for _f, _d, m in _stored(upstream, mailbox))
    done = _cli("store", "encrypt", *common, "--password-file", str(tmp_path / "smp"))
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"encrypted 2 of 2 messages in {mailbox} (0 skipped)\n"
    assert all(is_encrypted(m) for _f, _d, m in _stored(upstream, mailbox))
    back = _cli("store", "decrypt", *common, "--password-file", str(tmp_path / "smp"))
    assert back.returncode == 0, back.stderr
    assert sorted(m for _f, _d, m in _stored(upstream, mailbox)) == sorted(originals)
    assert "carol-secure-mail-1" not in done.stderr + back.stderr + wrong.stderr


async def test_a_crash_among_the_appends_of_a_round(upstream: Upstream, tmp_path: Path) -> None:
    """One APPEND per message (a store without MULTIAPPEND) stopped after two of three:
    the two unclaimed replacements belong, in UID order, to the round's first originals."""
    mailbox, originals = _fill(upstream, 3)
    journal = Journal(tmp_path / "journal.jsonl")
    async with _session(upstream, mailbox) as messages:
        uids = await messages.candidates("encrypt")
        journal.record("appending", uids)
        fetched = await messages.fetch(uids[:2])
        for uid in uids[:2]:
            message, flags, date = fetched[uid]
            await messages.append(_seal(message), flags, date)
    assert len(_stored(upstream, mailbox)) == 5
    async with _session(upstream, mailbox) as messages:
        await convert(messages, Journal(tmp_path / "journal.jsonl"),
                      await messages.candidates("encrypt"), _seal)
    stored = _stored(upstream, mailbox)
    assert len(stored) == 3 and all(is_encrypted(m) for _f, _d, m in stored)
    assert sorted(_open(m) for _f, _d, m in stored) == sorted(originals)


async def test_a_folder_stopped_in_the_middle_and_resumed(upstream: Upstream,
                                                          tmp_path: Path) -> None:
    """The issue's bar: 1000 messages (twenty rounds), stopped after the tenth round's
    APPEND, run again: each message exactly once, encrypted, with its flags and
    INTERNALDATE."""
    mailbox, originals = _fill(upstream, 1000)
    before = {m: (set(f.split()) - {b"\\Recent"}, d) for f, d, m in _stored(upstream, mailbox)}
    rounds = []

    class Stop(Exception):
        pass

    def stop(name: str) -> None:
        if name == "appended":
            rounds.append(name)
            if len(rounds) == 10:
                raise Stop(name)

    async with _session(upstream, mailbox) as messages:
        with pytest.raises(Stop):
            await convert(messages, Journal(tmp_path / "j.jsonl"),
                          await messages.candidates("encrypt"), _seal, step=stop)
    # 450 done; the tenth round's 50 and their 50 replacements; 500 not begun
    assert len(_stored(upstream, mailbox)) == 1050
    async with _session(upstream, mailbox) as messages:
        done = await convert(messages, Journal(tmp_path / "j.jsonl"),
                             await messages.candidates("encrypt"), _seal)
        assert done.done == 500  # the interrupted round was finished before it began
    stored = _stored(upstream, mailbox)
    assert len(stored) == 1000
    for flags, date, message in stored:
        assert (set(flags.split()) - {b"\\Recent"}, date) == before[_open(message)]
    assert sorted(_open(m) for _f, _d, m in stored) == sorted(originals)
