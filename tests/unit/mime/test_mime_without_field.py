"""`mime.entity.without_field`: the proxy's own status field removed from messages the MIME
parsers refuse (it must never raise and has no size limit of its own)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from smime_proxy.mime.entity import MAX_HEADER_BYTES, STATUS_HEADER, without_field

BODY = b"\r\nbody: X-SMIME-Status: stays in the body\r\n"


def test_removes_every_spelling_with_its_continuations() -> None:
    message = (b"From: a@b\r\nx-smime-status : encrypted=yes;\r\n signature=valid\r\n"
               b"Subject: s\r\nX-SMIME-STATUS:\tsigner=x\r\n\tmore\r\nTo: c@d\r\n" + BODY)
    assert without_field(message, STATUS_HEADER) == b"From: a@b\r\nSubject: s\r\nTo: c@d\r\n" \
        + BODY


def test_other_fields_and_messages_without_it_are_untouched() -> None:
    message = b"From: a@b\r\nX-SMIME-Statusbar: no\r\nX-Other: X-SMIME-Status: x\r\n" + BODY
    assert without_field(message, STATUS_HEADER) == message


def test_header_beyond_the_parsers_limit() -> None:
    filler = b"X-F: " + b"y" * 70 + b"\r\n"
    message = (b"X-SMIME-Status: signature=valid\r\n" + filler * (MAX_HEADER_BYTES // 70)
               + b"\n" + BODY)
    result = without_field(message, STATUS_HEADER)
    assert result == message[len(b"X-SMIME-Status: signature=valid\r\n"):]


@given(st.binary(max_size=400))
def test_never_raises_and_never_grows(data: bytes) -> None:
    result = without_field(data, STATUS_HEADER)
    assert len(result) <= len(data)
    if b"x-smime-status" not in data.lower():
        assert result == data


@pytest.mark.parametrize("eol", [b"\r\n", b"\n"])
def test_the_last_field_goes_with_its_whole_line_break(eol: bytes) -> None:
    """Found with the locked listing (issue 13): the CR of a removed last field was kept."""
    message = b"From: a@b" + eol + b"X-SMIME-Status: signature=valid" + eol + eol + b"body"
    assert without_field(message, STATUS_HEADER) == b"From: a@b" + eol + eol + b"body"
