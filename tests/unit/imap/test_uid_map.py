"""The session's map of message numbers to UIDs: kept in step with EXISTS and EXPUNGE,
forgotten at any doubt, and checked against a model by hypothesis."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from smime_proxy.imap.uid_map import UidMap
from smime_proxy.imap.wire.sequence import SequenceSet


def mapped(*uids: int) -> UidMap:
    uid_map = UidMap()
    uid_map.selected()
    uid_map.observe(b"* %d EXISTS\r\n" % len(uids))
    for number, uid in enumerate(uids, 1):
        uid_map.observe(b"* %d FETCH (UID %d FLAGS ())\r\n" % (number, uid))
    return uid_map


def test_numbers_are_predicted_once_every_uid_is_known() -> None:
    uid_map = UidMap()
    uid_map.selected()
    uid_map.observe(b"* 3 EXISTS\r\n")
    assert uid_map.predict(SequenceSet.parse(b"1:*"), by_uid=False) is None
    uid_map.observe(b"* 1 FETCH (UID 4 FLAGS ())\r\n")
    uid_map.observe(b"* 2 FETCH (UID 9)\r\n")
    assert uid_map.predict(SequenceSet.parse(b"1:2"), by_uid=False) == [4, 9]
    assert uid_map.predict(SequenceSet.parse(b"2:*"), by_uid=False) is None  # 3 unknown
    uid_map.observe(b"* 3 FETCH (UID 12 FLAGS ())\r\n")
    assert uid_map.predict(SequenceSet.parse(b"*:2,1,2"), by_uid=False) == [4, 9, 12]


def test_expunge_and_exists_keep_the_numbers_in_step() -> None:
    uid_map = mapped(4, 9, 12, 15)
    uid_map.observe(b"* 2 EXPUNGE\r\n")
    assert uid_map.predict(SequenceSet.parse(b"1:*"), by_uid=False) == [4, 12, 15]
    uid_map.observe(b"* 4 EXISTS\r\n")
    assert uid_map.predict(SequenceSet.parse(b"1:3"), by_uid=False) == [4, 12, 15]
    assert uid_map.predict(SequenceSet.parse(b"1:*"), by_uid=False) is None  # 4 is new


def test_uid_sets_use_the_whole_map_when_it_is_complete() -> None:
    uid_map = mapped(4, 9, 12)
    assert uid_map.predict(SequenceSet.parse(b"5:*"), by_uid=True) == [9, 12]
    assert uid_map.predict(SequenceSet.parse(b"1:4,100"), by_uid=True) == [4]
    unknown = UidMap()
    assert unknown.predict(SequenceSet.parse(b"3,5"), by_uid=True) == [3, 5]
    assert unknown.predict(SequenceSet.parse(b"3:*"), by_uid=True) is None
    assert unknown.predict(SequenceSet.parse(b"1:200000"), by_uid=True) is None


def test_any_doubt_forgets_the_map() -> None:
    for doubt in (b"* VANISHED 9\r\n", b"* 2 EXISTS\r\n", b"* 7 EXPUNGE\r\n",
                  b"* 2 FETCH (UID 3)\r\n", b"* 2 FETCH (UID 20)\r\n"):
        uid_map = mapped(4, 9, 12)
        uid_map.observe(doubt)
        assert not uid_map.valid, doubt
        assert uid_map.predict(SequenceSet.parse(b"1"), by_uid=False) is None
    uid_map = mapped(4, 9, 12)
    uid_map.observe(b"* VANISHED (EARLIER) 1:3\r\n")  # before this session's view
    assert uid_map.predict(SequenceSet.parse(b"1:*"), by_uid=False) == [4, 9, 12]
    assert UidMap().predict(SequenceSet.parse(b"$"), by_uid=False) is None


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["new", "expunge", "learn"]),
                          st.integers(1, 12)), max_size=40))
def test_predictions_match_a_model_mailbox(steps: list[tuple[str, int]]) -> None:
    """Whatever the order of events, a prediction is either None or the true UIDs."""
    mailbox: list[int] = []  # the true UIDs by number
    next_uid = 1
    uid_map = UidMap()
    uid_map.selected()
    uid_map.observe(b"* 0 EXISTS\r\n")
    for what, value in steps:
        if what == "new":
            for _ in range(value % 3 + 1):
                mailbox.append(next_uid)
                next_uid += value % 4 + 1
            uid_map.observe(b"* %d EXISTS\r\n" % len(mailbox))
        elif what == "expunge" and mailbox:
            number = (value - 1) % len(mailbox) + 1
            del mailbox[number - 1]
            uid_map.observe(b"* %d EXPUNGE\r\n" % number)
        elif what == "learn" and mailbox:
            number = (value - 1) % len(mailbox) + 1
            uid_map.observe(b"* %d FETCH (UID %d)\r\n" % (number, mailbox[number - 1]))
        if mailbox:
            predicted = uid_map.predict(SequenceSet.parse(b"1:*"), by_uid=False)
            assert predicted is None or predicted == mailbox
            one = uid_map.predict(SequenceSet.parse(b"%d" % len(mailbox)), by_uid=False)
            assert one is None or one == [mailbox[-1]]
