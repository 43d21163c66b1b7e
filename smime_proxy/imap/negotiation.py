"""What the proxy tells a client about capabilities and logins (sans-I/O helpers of
`imap.session`).

- The capabilities a client is shown: the upstream's, without those the proxy cannot carry
  (COMPRESS, NOTIFY, PREVIEW/SNIPPET, SASL mechanisms other than PLAIN, the upstream's own
  STARTTLS/LOGINDISABLED); before login STARTTLS is added where the listener offers it, and
  LOGINDISABLED (without AUTH=PLAIN) where a login is not allowed yet (no TLS).
- The user a SASL PLAIN message names (RFC 4616).

May import: imap.wire, stdlib.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable

from smime_proxy.imap.wire import CapabilityResponse, ParseError, UntaggedStatus, parse_response

_DROPPED_CAPS = re.compile(
    r"(STARTTLS|LOGINDISABLED|COMPRESS=.*|NOTIFY|PREVIEW.*|SNIPPET=.*|AUTH=.*)", re.IGNORECASE
)
_CAPABILITY_LINE = re.compile(
    rb"(\* CAPABILITY |\S+ OK \[CAPABILITY |\* OK \[CAPABILITY )([^\]\r]*)", re.IGNORECASE)


def capabilities_in(raw: bytes) -> tuple[str, ...] | None:
    """The capabilities an upstream response announces (`* CAPABILITY` or a CAPABILITY
    response code), or None."""
    try:
        response = parse_response(raw)
    except ParseError:
        return None
    if isinstance(response, CapabilityResponse):
        return response.capabilities
    if isinstance(response, UntaggedStatus) and response.code is not None:
        if response.code.name == "CAPABILITY":
            return response.code.words()
    return None


def shown_capabilities(caps: tuple[str, ...], *, before_login: bool, starttls: bool,
                       login_allowed: bool) -> list[str]:
    kept = [cap for cap in caps if cap.upper() == "AUTH=PLAIN" or not _DROPPED_CAPS.fullmatch(cap)]
    if before_login:
        if starttls:
            kept.append("STARTTLS")
        if not login_allowed:
            kept = [c for c in kept if c.upper() != "AUTH=PLAIN"]
            kept.append("LOGINDISABLED")
    return kept


def rewrite_capabilities(raw: bytes, shown: Callable[[tuple[str, ...]], list[str]]) -> bytes:
    """`* CAPABILITY ...`, `* OK [CAPABILITY ...] ...` or a tagged response with a
    CAPABILITY code, with the list replaced by `shown(list)`."""
    match = _CAPABILITY_LINE.match(raw)
    if match is None:
        return raw
    caps = tuple(w.decode("ascii", "replace") for w in match[2].split(b" ") if w)
    kept = b" ".join(c.encode("ascii", "replace") for c in shown(caps))
    return match[1] + kept + raw[match.end() :]


def sasl_plain_user(blob: bytes) -> str | None:
    """The user of a SASL PLAIN message (authzid if given, else authcid)."""
    return sasl_plain_credentials(blob)[0]


def sasl_plain_credentials(blob: bytes) -> tuple[str | None, bytes]:
    """(the user, the password) of a SASL PLAIN message (RFC 4616); (None, b"") if it is
    not one."""
    try:
        decoded = base64.b64decode(blob, validate=True)
    except (binascii.Error, ValueError):
        return None, b""
    parts = decoded.split(b"\0")
    if len(parts) != 3:
        return None, b""
    user = parts[0] or parts[1]
    return user.decode("utf-8", "replace") or None, parts[2]
