"""What is verified is what is shown (security issue, item 1, "two MIME parsers"): a
multipart/signed message is valid only when the tree that computes the client's views
(Dovecot's rules) splits it into exactly the parts that were verified."""

from __future__ import annotations

import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from smime_proxy.crypto.keyagent import InProcessKeyAgent
from smime_proxy.mime.entity import canonical_crlf
from smime_proxy.mime.tree import parse as parse_tree
from smime_proxy.smime import AMBIGUOUS, inspect_signature, sign_message
from support.pki import NOW, Identity, make_user

MESSAGE = (b"From: alice@example.test\r\nTo: bob@example.test\r\nSubject: pay\r\n"
           b"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n"
           b"Please pay invoice 1 to account A.\r\n")
ATTACK = b"Content-Type: text/plain\r\n\r\nPay everything to account EVIL.\r\n"


@pytest.fixture(scope="module")
def signed(root: Identity) -> bytes:
    alice = make_user("alice@example.test", root)
    agent = InProcessKeyAgent(alice.key, alice.cert, tuple(alice.chain))
    return sign_message(MESSAGE, agent, now=NOW)


def boundary_of(message: bytes) -> bytes:
    match = re.search(rb'boundary="([^"]+)"', message)
    assert match is not None
    return match[1]


def test_the_unchanged_message_is_valid(signed: bytes, root: Identity) -> None:
    assert inspect_signature(signed, [root.cert], now=NOW).valid


def test_a_preamble_line_that_only_starts_with_the_delimiter(signed: bytes,
                                                             root: Identity) -> None:
    """Dovecot takes `--<boundary>x` as a delimiter, the old splitter did not: the client
    was shown the attacker's part under signature=valid."""
    b = boundary_of(signed)
    head, sep, body = signed.partition(b"\r\n\r\n")
    forged = head + sep + b"--" + b + b"x\r\n" + ATTACK + body
    report = inspect_signature(forged, [root.cert], now=NOW)
    assert not report.valid and report.reason == AMBIGUOUS
    first = parse_tree(forged).children[0].raw_bytes
    assert b"EVIL" in first  # what a client would have been shown first


def test_a_second_boundary_parameter(signed: bytes, root: Identity) -> None:
    b = boundary_of(signed)
    for second in (b'boundary="zz"', b'boundary="' + b + b'"'):  # another one, or the same
        forged = signed.replace(b'boundary="' + b + b'"', b'boundary="' + b + b'"; ' + second, 1)
        assert not inspect_signature(forged, [root.cert], now=NOW).valid


def test_a_second_content_type_field(signed: bytes, root: Identity) -> None:
    forged = signed.replace(b"MIME-Version: 1.0\r\n",
                            b"MIME-Version: 1.0\r\nContent-Type: text/plain\r\n", 1)
    assert not inspect_signature(forged, [root.cert], now=NOW).valid


def mutations(b: bytes) -> st.SearchStrategy[list[tuple[str, bytes]]]:
    lines = st.sampled_from([
        b"--" + b + b"x", b"--" + b + b" ", b"--" + b + b"\t", b"--" + b + b"--",
        b"--" + b, b"--" + b + b"-", b" --" + b, b"--" + b.upper(), ATTACK.rstrip(),
        b"Content-Type: text/html", b"", b"x",
    ])
    one = st.one_of(
        st.tuples(st.just("preamble"), lines),
        st.tuples(st.just("epilogue"), lines),
        st.tuples(st.just("inside"), lines),
        st.tuples(st.just("param"), st.sampled_from([b"boundary=zz", b"BOUNDARY=\"" + b + b"\"",
                                                     b"protocol=x", b"boundary*=zz"])),
        st.tuples(st.just("lf"), st.integers(0, 40).map(lambda i: b"%d" % i)),
    )
    return st.lists(one, min_size=1, max_size=4)


def mutate(message: bytes, steps: list[tuple[str, bytes]]) -> bytes:
    head, sep, body = message.partition(b"\r\n\r\n")
    for kind, value in steps:
        if kind == "preamble":
            body = value + b"\r\n" + body
        elif kind == "epilogue":
            body = body + value + b"\r\n"
        elif kind == "inside":
            cut = body.find(b"\r\n", len(body) // 3)
            if cut > 0:
                body = body[:cut] + b"\r\n" + value + body[cut:]
        elif kind == "param":
            head = head.replace(b"multipart/signed;", b"multipart/signed; " + value + b";", 1)
        else:  # one CRLF of the body becomes a bare LF
            positions = [m.start() for m in re.finditer(rb"\r\n", body)]
            if positions:
                at = positions[int(value) % len(positions)]
                body = body[:at] + body[at + 1 :]
    return head + sep + body


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                    HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_valid_means_the_shown_first_part_is_the_signed_part(signed: bytes, root: Identity,
                                                             data: st.DataObject) -> None:
    steps = data.draw(mutations(boundary_of(signed)))
    message = mutate(signed, steps)
    report = inspect_signature(message, [root.cert], now=NOW)  # a report, never a raise
    if report.valid:
        tree = parse_tree(message)
        assert len(tree.children) == 2
        assert report.content is not None
        assert canonical_crlf(tree.children[0].raw_bytes) == report.content
