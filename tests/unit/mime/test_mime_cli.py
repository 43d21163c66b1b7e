"""`smime-proxy mime fetch --item ITEM < message`: the value as it follows the item name."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import pytest

from smime_proxy.cli import main
from smime_proxy.cli.mime import parse_fetch_item
from smime_proxy.imap.wire import FetchItem, Section

MESSAGE = (
    b"From: a@b.example\r\nSubject: hi\r\nMIME-Version: 1.0\r\n"
    b"Content-Type: multipart/mixed; boundary=q\r\n\r\n--q\r\nContent-Type: text/plain\r\n\r\n"
    b"hello\r\n--q\r\nContent-Type: application/octet-stream\r\n"
    b"Content-Transfer-Encoding: base64\r\n\r\nAAE=\r\n--q--\r\n"
)


def _run(item: str, capsys: pytest.CaptureFixture[bytes], monkeypatch: pytest.MonkeyPatch,
         message: bytes = MESSAGE) -> tuple[int, bytes, str]:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(message)))
    code = main(["mime", "fetch", "--item", item])
    out, err = capsys.readouterr()
    return code, out, err.decode() if isinstance(err, bytes) else err


@pytest.mark.parametrize(
    ("item", "expected"),
    [
        ("RFC822.SIZE", b"%d\n" % len(MESSAGE)),
        ("BODY[1.MIME]", b"{28}\r\nContent-Type: text/plain\r\n\r\n\n"),
        ("body.peek[1]", b"{5}\r\nhello\n"),
        ("BODY[]<0.4>", b"{4}\r\nFrom\n"),
        ("BINARY[2]", b"~{2}\r\n\x00\x01\n"),
        ("BINARY.SIZE[2]", b"2\n"),
        # no space between the parts of a multipart (RFC 9051 body-type-mpart; Dovecot)
        ("BODY", b'(("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 5 0)'
                 b'("application" "octet-stream" NIL NIL NIL "base64" 4) "mixed")\n'),
        ("ENVELOPE", b'(NIL "hi" ((NIL NIL "a" "b.example")) ((NIL NIL "a" "b.example"))'
                     b' ((NIL NIL "a" "b.example")) NIL NIL NIL NIL NIL)\n'),
    ],
)
def test_fetch_prints_wire_value(item: str, expected: bytes,
                                 capsysbinary: pytest.CaptureFixture[bytes],
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    code, out, _ = _run(item, capsysbinary, monkeypatch)
    assert code == 0
    assert out == expected


def test_bodystructure_from_file(
    tmp_path: Path, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    path = tmp_path / "m.eml"
    path.write_bytes(MESSAGE)
    assert main(["mime", "fetch", "--item", "BODYSTRUCTURE", "--file", str(path)]) == 0
    out = capsysbinary.readouterr().out
    assert out.startswith(b'(("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 5 0 NIL NIL')
    assert out.endswith(b' "mixed" ("boundary" "q") NIL NIL NIL)\n')


@pytest.mark.parametrize("item", ["FLAGS", "BODY[MIME]", "BODY[1", "BINARY[HEADER]",
                                  "BINARY.SIZE[1]<0.1>", "BODY[HEADER.FIELDS ()]"])
def test_bad_items_exit_2(item: str, capsysbinary: pytest.CaptureFixture[bytes],
                          monkeypatch: pytest.MonkeyPatch) -> None:
    code, out, err = _run(item, capsysbinary, monkeypatch)
    assert code == 2
    assert out == b""
    assert "smime-proxy:" in err


def test_undecodable_binary_is_an_input_error(capsysbinary: pytest.CaptureFixture[bytes],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    bad = b"Content-Transfer-Encoding: base64\r\n\r\nAAE\r\n"
    code, out, err = _run("BINARY[1]", capsysbinary, monkeypatch, bad)
    assert code == 2 and out == b"" and "base64" in err


def test_parse_fetch_item() -> None:
    assert parse_fetch_item("rfc822.size") == FetchItem("RFC822.SIZE")
    assert parse_fetch_item("BODY.PEEK[1.2.HEADER]<5.10>") == FetchItem(
        "BODY", Section((1, 2), "HEADER"), True, 5, 10
    )
