"""The DATA reader: dot-unstuffing at every split, the end marker only as CRLF.CRLF,
smuggling variants refused (never split), the size limit enforced while reading."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smime_proxy.errors import LocalProtocolError
from smime_proxy.smtp.data import DataReader, DataResult


def _stuff(message: bytes) -> bytes:
    lines = message.split(b"\r\n")
    return b"\r\n".join(b"." + line if line.startswith(b".") else line for line in lines)


def _read(stream: bytes, sizes: list[int], limit: int = 0) -> tuple[DataResult | None, bytes,
                                                                     int]:
    reader = DataReader(limit)
    pos = 0
    leftover = b""
    peak = 0
    index = 0
    while not reader.done and pos < len(stream):
        size = sizes[index % len(sizes)] if sizes else len(stream)
        index += 1
        leftover = reader.feed(stream[pos:pos + size])
        peak = max(peak, reader.buffered)
        pos += size
    rest = leftover + stream[pos:]
    return (reader.result() if reader.done else None), rest, peak


_line = st.binary(max_size=40).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b""))
_message = st.lists(st.one_of(_line, st.sampled_from([b".", b"..", b".x", b"", b". "])),
                    max_size=30).map(lambda lines: b"".join(x + b"\r\n" for x in lines))


@settings(max_examples=300, deadline=None)
@given(_message, st.lists(st.integers(1, 17), min_size=1, max_size=8))
def test_round_trip_at_every_split(message: bytes, sizes: list[int]) -> None:
    stream = _stuff(message) + b".\r\nQUIT\r\n"
    result, rest, _ = _read(stream, sizes)
    assert result is not None
    assert result.content == message
    assert rest == b"QUIT\r\n"
    assert not result.bare_line_end and not result.too_big


@pytest.mark.parametrize("smuggle", [b"\n.\n", b"\r.\r", b"\n.\r\n", b"\r\n.\n", b"\r.\r\n",
                                      b"\n.\r", b"x\ny", b"x\ry"])
@pytest.mark.parametrize("size", [1, 3, 7, 4096])
def test_smuggling_variants_refused_never_split(smuggle: bytes, size: int) -> None:
    inner = b"MAIL FROM:<evil@x.test>\r\nRCPT TO:<victim@x.test>\r\nDATA\r\nforged\r\n"
    stream = b"Subject: a\r\n\r\nhello" + smuggle + inner + b".\r\nNOOP\r\n"
    result, rest, _ = _read(stream, [size])
    assert result is not None
    assert result.bare_line_end
    assert result.content is None
    assert rest == b"NOOP\r\n"  # the smuggled commands were swallowed as data


def test_leading_dot_and_empty_message() -> None:
    result, rest, _ = _read(b".\r\n", [1])
    assert result is not None and result.content == b"" and rest == b""
    result, _, _ = _read(b"..\r\n.\r\n", [2])
    assert result is not None and result.content == b".\r\n"


def test_incomplete_data_is_not_done() -> None:
    result, _, _ = _read(b"Subject: x\r\n\r\nbody\r\n", [5])
    assert result is None
    with pytest.raises(LocalProtocolError):
        DataReader().result()


@pytest.mark.parametrize("size", [100, 65536])
def test_size_limit_enforced_while_reading(size: int) -> None:
    body = (b"x" * 70 + b"\r\n") * 20_000  # 1.4 MB
    result, rest, peak = _read(body + b".\r\nQUIT\r\n", [size], limit=10_000)
    assert result is not None
    assert result.too_big and result.content is None
    assert result.size == len(body)
    assert rest == b"QUIT\r\n"
    assert peak <= 10_000 + size + 72


def test_very_long_line_is_bounded_and_kept() -> None:
    line = b"y" * 300_000
    result, _, peak = _read(line + b"\r\n.\r\n", [100_000])
    assert result is not None and result.content == line + b"\r\n"
    assert not result.bare_line_end
    assert peak <= 400_100


def test_crlf_split_between_chunks_of_a_long_line() -> None:
    line = b"z" * 70_000 + b"\r"
    stream = line + b"\n.\r\n"
    for cut in (len(line) - 1, len(line), len(line) + 1):
        reader = DataReader()
        reader.feed(stream[:cut])
        reader.feed(stream[cut:])
        res = reader.result()
        assert res.content == b"z" * 70_000 + b"\r\n" and not res.bare_line_end
