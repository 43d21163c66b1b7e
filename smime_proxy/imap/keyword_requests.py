"""Conversions a mail client asks for with a keyword (a part of `imap.session.ImapSession`;
issue 11, "from an unmodified mail client").

A client that sets `$SmimeEncrypt` or `$SmimeDecrypt` on messages (a Thunderbird tag of that
name) with STORE `+FLAGS` or `FLAGS` has the STORE relayed as it is; once the upstream
answers OK, the session asks the shell for the conversion (`ConvertRequested`: the shell
runs it on a connection of its own, and this session sees the original expunged and the
replacement appear as any other change, from the upstream). While the user's key is locked
nothing is started: an `[ALERT]` before the tagged OK names the unlock page and says to set
the tag again; the keyword stays on the message.

May import: at_rest.keywords, imap.events, imap.view_cache, imap.inflight, stdlib.
"""

from __future__ import annotations

import re
from typing import Final

from smime_proxy.at_rest.keywords import REQUEST_KEYWORDS
from smime_proxy.at_rest.keywords import Action as Conversion
from smime_proxy.imap.events import Action, ConvertRequested, SendToClient, SessionSettings
from smime_proxy.imap.inflight import RelayedCommand
from smime_proxy.imap.view_cache import MailboxKey, ViewCache

# RFC 9051 6.4.6: STORE sequence-set [store-modifiers (RFC 7162)] store-att-flags, where the
# flags are a parenthesised list or flags separated by spaces; "-FLAGS" asks for nothing
_STORE: Final = re.compile(
    rb"[^ ]+ (?:UID )?STORE [^ ]+ (?:\([^()\r\n]*\) )?\+?FLAGS(?:\.SILENT)? \(?([^()\r\n]*)\)?\r\n",
    re.IGNORECASE)
_BY_KEYWORD: Final[dict[bytes, Conversion]] = {
    keyword.lower().encode("ascii"): action for action, keyword in REQUEST_KEYWORDS.items()}


__all__ = ["Conversion", "KeywordRequests", "requested_conversions"]


def requested_conversions(raw: bytes) -> tuple[Conversion, ...]:
    """The conversions a client command asks for by keyword (none for any other command)."""
    found = _STORE.fullmatch(raw)
    if found is None:
        return ()
    flags = {flag.lower() for flag in found[1].split()}
    return tuple(action for keyword, action in _BY_KEYWORD.items() if keyword in flags)


class KeywordRequests:
    """The keyword half of the session (a mixin: the session provides the state)."""

    settings: SessionSettings
    user: str | None
    mailbox: MailboxKey | None
    views: ViewCache
    _out: list[Action]

    def _tagged_with_requests(self, job: RelayedCommand, tagged: bytes, ok: bool) -> None:
        """Send the tagged answer of a STORE that set a request keyword, with what follows
        from it."""
        if not (job.requests and ok and self.user and self.mailbox is not None):
            self._out.append(SendToClient(tagged))
            return
        if not self.views.key_unlocked():
            where = self.settings.unlock_url or "the Secure Mail page"
            self._out.append(SendToClient(
                b"* OK [ALERT] Secure Mail is locked: unlock it at "
                + where.encode("ascii", "replace")
                + b", then set the tag again to encrypt or decrypt the message\r\n"))
            self._out.append(SendToClient(tagged))
            return
        self._out.append(SendToClient(tagged))
        mailbox = self.mailbox[0].decode("utf-8", "replace")
        for action in job.requests:
            self._out.append(ConvertRequested(self.user, mailbox, action))
