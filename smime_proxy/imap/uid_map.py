"""Which UID each message number of the selected mailbox has, as far as the session has seen
(`UidMap`): learnt from the FETCH responses that carry a UID, kept in step with EXISTS and
EXPUNGE (RFC 9051 7.4.1, 7.5.1), forgotten at any doubt (VANISHED, a number out of step).

The map is only a prediction. It lets a content FETCH by message numbers (`FETCH 1:*`) be
planned from what is known of each message (plain, or opened and cached) without asking the
upstream for the classification fields or the stored bytes first; every answer is still
checked by its own UID (`imap.fetch_answers`), so a wrong prediction costs one more pass and
never a wrong answer.

May import: imap.wire, stdlib.
"""

from __future__ import annotations

import re
from array import array
from typing import Final

from smime_proxy.imap.wire.sequence import SequenceSet

MAX_MESSAGES: Final = 1_000_000  # a larger mailbox is not mapped (4 bytes a message)
MAX_PREDICTED: Final = 100_000  # UIDs one FETCH may be planned for
_NUMBERED: Final = re.compile(
    rb"\* ([0-9]{1,10}) (?:(EXISTS|EXPUNGE)\r\n|FETCH \(UID ([0-9]{1,10})[ )])", re.IGNORECASE)
_VANISHED: Final = re.compile(rb"\* VANISHED (\(EARLIER\) )?", re.IGNORECASE)


class UidMap:
    """See the module docstring. Entry 0 is an unknown UID."""

    __slots__ = ("_uids", "_unknown", "valid")

    def __init__(self) -> None:
        self._uids = array("I")
        self._unknown = 0
        self.valid = False  # the length is the mailbox's (EXISTS seen since the SELECT)

    def __len__(self) -> int:
        return len(self._uids)

    def selected(self) -> None:
        """A SELECT or EXAMINE was sent: its EXISTS gives the length."""
        self.forget()
        self.valid = True

    def forget(self) -> None:
        self._uids = array("I")
        self._unknown = 0
        self.valid = False

    def observe(self, raw: bytes) -> None:
        """An untagged upstream response, in the order the upstream sent it."""
        if not self.valid:
            return
        match = _NUMBERED.match(raw)
        if match is not None:
            number = int(match[1])
            what = match[2]
            if what is None:
                self.learn(number, int(match[3]))
            elif what.upper() == b"EXISTS":
                self.exists(number)
            else:
                self.expunge(number)
            return
        vanished = _VANISHED.match(raw)
        if vanished is not None and vanished[1] is None:
            # RFC 7162 3.2.10: UIDs, not numbers; where they were is not known here
            self.forget()

    def exists(self, count: int) -> None:
        if count > MAX_MESSAGES or count < len(self._uids):
            self.forget()  # fewer than known: an EXPUNGE was missed (RFC 9051 7.4.1)
            return
        grow = count - len(self._uids)
        if grow:
            self._uids.frombytes(bytes(grow * self._uids.itemsize))
            self._unknown += grow

    def expunge(self, number: int) -> None:
        if not 1 <= number <= len(self._uids):
            self.forget()
            return
        if self._uids[number - 1] == 0:
            self._unknown -= 1
        del self._uids[number - 1]

    def learn(self, number: int, uid: int) -> None:
        """Message `number` has `uid`. UIDs ascend with the numbers (RFC 9051 2.3.1.1): one
        out of step with a known neighbour means the map missed something."""
        uids = self._uids
        if not self.valid or not 1 <= number <= len(uids) or uid == 0:
            return
        index = number - 1
        if uids[index] == uid:
            return
        if uids[index] != 0 or (index and 0 != uids[index - 1] >= uid) or (
                index + 1 < len(uids) and 0 != uids[index + 1] <= uid):
            self.forget()
            return
        uids[index] = uid
        self._unknown -= 1

    def predict(self, sequence_set: SequenceSet, *, by_uid: bool) -> list[int] | None:
        """The UIDs a FETCH of `sequence_set` would answer, when the map knows them all
        (None: not known, or too many)."""
        if sequence_set.saved:
            return None
        if not by_uid:
            return self._by_numbers(sequence_set)
        explicit = all(r.first is not None and r.last is not None for r in sequence_set.ranges)
        if self.valid and self._unknown == 0 and self._uids:
            largest = self._uids[-1]
            return [uid for uid in self._uids if sequence_set.contains(uid, largest)][
                :MAX_PREDICTED] if len(self._uids) <= MAX_PREDICTED else None
        if not explicit:
            return None
        count = 0
        for item in sequence_set.ranges:
            low, high = item.bounds(0)
            count += high - low + 1
            if count > MAX_PREDICTED:
                return None
        return list(sequence_set.iter_numbers(0))

    def _by_numbers(self, sequence_set: SequenceSet) -> list[int] | None:
        uids = self._uids
        if not self.valid or not uids:
            return None
        largest = len(uids)
        out: list[int] = []
        following = 1  # overlapping ranges name a message once
        for low, high in sorted(r.bounds(largest) for r in sequence_set.ranges):
            if high > largest:
                return None  # a number the client should not have (BAD from upstream)
            low = max(low, following)
            if low > high:
                continue
            following = high + 1
            part = uids[low - 1 : high]
            if 0 in part:
                return None
            out.extend(part)
            if len(out) > MAX_PREDICTED:
                return None
        return out
