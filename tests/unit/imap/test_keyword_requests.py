"""Which client commands ask for a conversion by keyword (imap.keyword_requests)."""

from __future__ import annotations

import pytest

from smime_proxy.imap.keyword_requests import requested_conversions


@pytest.mark.parametrize(("raw", "asked"), [
    (b"a1 UID STORE 7 +FLAGS ($SmimeEncrypt)\r\n", ("encrypt",)),
    (b"a1 uid store 7 +flags.silent ($smimedecrypt \\Seen)\r\n", ("decrypt",)),
    (b"a1 STORE 1:3 FLAGS (\\Seen $SmimeDecrypt $SmimeEncrypt)\r\n", ("encrypt", "decrypt")),
    (b"a1 STORE 2 +FLAGS $SmimeEncrypt\r\n", ("encrypt",)),  # RFC 9051: a list or flags
    (b"a1 UID STORE 5 (UNCHANGEDSINCE 12) +FLAGS ($SmimeEncrypt)\r\n", ("encrypt",)),
    (b"a1 UID STORE 7 -FLAGS ($SmimeEncrypt)\r\n", ()),
    (b"a1 UID STORE 7 +FLAGS ($SmimeEncrypted)\r\n", ()),
    (b"a1 UID STORE 7 +FLAGS ($Label1)\r\n", ()),
    (b"a1 UID FETCH 7 (FLAGS)\r\n", ()),
    (b"a1 SEARCH KEYWORD $SmimeEncrypt\r\n", ()),
])
def test_requested_conversions(raw: bytes, asked: tuple[str, ...]) -> None:
    assert requested_conversions(raw) == asked
