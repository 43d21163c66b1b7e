"""Sequence sets (message numbers and UIDs): `1:*`, `3,5:7`, `$`.

ABNF (RFC 9051 section 9; `$` from RFC 5182 section 2, folded into RFC 9051):
    sequence-set = (seq-number / seq-range) ["," sequence-set] / seq-last-command
    seq-number   = nz-number / "*"
    seq-range    = seq-number ":" seq-number
    seq-last-command = "$"

May import: imap.wire, stdlib.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from .errors import ParseError, RenderError
from .lexer import NUMBER_MAX, Reader

__all__ = ["SeqRange", "SequenceSet"]

_SEQUENCE_SET = re.compile(rb"\$|[0-9*][0-9*:,]*")
_ITEM = re.compile(rb"(\*|[1-9][0-9]{0,9})(?::(\*|[1-9][0-9]{0,9}))?\Z")


@dataclass(frozen=True, slots=True)
class SeqRange:
    """`first:last` (a single number has first == last); None stands for `*`."""

    first: int | None
    last: int | None

    def render(self) -> bytes:
        first = b"*" if self.first is None else b"%d" % self.first
        if self.first == self.last:
            return first
        return first + b":" + (b"*" if self.last is None else b"%d" % self.last)

    def bounds(self, largest: int) -> tuple[int, int]:
        """(low, high) with `*` resolved to `largest` (the order of a range does not matter)."""
        first = largest if self.first is None else self.first
        last = largest if self.last is None else self.last
        return (first, last) if first <= last else (last, first)


@dataclass(frozen=True, slots=True)
class SequenceSet:
    """A parsed sequence set; `saved` is `$`, the result saved by SEARCH (RFC 5182)."""

    ranges: tuple[SeqRange, ...] = ()
    saved: bool = False

    def __post_init__(self) -> None:
        if self.saved == bool(self.ranges):
            raise RenderError("a sequence set is either `$` or a non-empty list of ranges")
        for item in self.ranges:
            for number in (item.first, item.last):
                if number is not None and not 0 < number <= NUMBER_MAX:
                    raise RenderError(f"sequence number out of range: {number}")

    @classmethod
    def read(cls, reader: Reader) -> SequenceSet:
        """sequence-set = (seq-number / seq-range) ["," sequence-set] / "$"
        seq-number = nz-number / "*"; seq-range = seq-number ":" seq-number
                                                (RFC 9051 section 9, RFC 5182 section 2)"""
        start = reader.pos
        match = _SEQUENCE_SET.match(reader.data, start)
        if match is None:
            raise reader.error("expected a sequence set")
        reader.pos = match.end()
        return cls._from_text(match[0], start)

    @classmethod
    def parse(cls, text: bytes) -> SequenceSet:
        """A whole sequence set from its wire text."""
        return cls._from_text(text, 0)

    @classmethod
    def _from_text(cls, text: bytes, position: int) -> SequenceSet:
        if text == b"$":
            return cls(saved=True)
        ranges: list[SeqRange] = []
        for part in text.split(b","):
            match = _ITEM.match(part)
            if match is None:
                raise ParseError("bad sequence set", position)
            first = None if match[1] == b"*" else int(match[1])
            last = first if match[2] is None else None if match[2] == b"*" else int(match[2])
            if (first is not None and first > NUMBER_MAX) or (
                last is not None and last > NUMBER_MAX
            ):
                raise ParseError("sequence number out of range", position)
            ranges.append(SeqRange(first, last))
            position += len(part) + 1
        return cls(tuple(ranges))

    @classmethod
    def of(cls, *numbers: int) -> SequenceSet:
        """The set of these numbers, one range each."""
        return cls(tuple(SeqRange(n, n) for n in numbers))

    @classmethod
    def compact(cls, numbers: Iterable[int]) -> SequenceSet:
        """The set of these numbers, consecutive ones as one range (`1:3,7`)."""
        ranges: list[SeqRange] = []
        for number in sorted(set(numbers)):
            if ranges and ranges[-1].last == number - 1:
                ranges[-1] = SeqRange(ranges[-1].first, number)
            else:
                ranges.append(SeqRange(number, number))
        return cls(tuple(ranges))

    def render(self) -> bytes:
        if self.saved:
            return b"$"
        return b",".join(item.render() for item in self.ranges)

    def contains(self, number: int, largest: int) -> bool:
        """Whether `number` is in the set when `*` is `largest`. Not defined for `$`."""
        if self.saved:
            raise RenderError("`$` has no members until the session resolves it")
        for item in self.ranges:
            low, high = item.bounds(largest)
            if low <= number <= high:
                return True
        return False

    def iter_numbers(self, largest: int) -> Iterator[int]:
        """The members in ascending order, each once, `*` being `largest`."""
        if self.saved:
            raise RenderError("`$` has no members until the session resolves it")
        spans = sorted(item.bounds(largest) for item in self.ranges)
        nxt = 1
        for low, high in spans:
            yield from range(max(low, nxt), high + 1)
            nxt = max(nxt, high + 1)
