"""Check a user's mail credentials with one login to the upstream IMAP server.

`check_login(endpoint, user, password)` connects through `imap.upstream.open_client` (TLS per
the config, the STARTTLS injection check, an aioimaplib client), logs in and returns True
(OK) or False (NO/BAD). Anything else - refused connection, timeout, TLS failure, an
unexpected greeting - raises `UpstreamUnavailable`, so the control endpoint answers 503
quickly instead of hanging.

How the credentials are sent: `AUTHENTICATE PLAIN` with an initial response (RFC 4959) when
the server offers it (base64: any UTF-8 user name or password, nothing to quote); otherwise
`LOGIN` with quoted strings, which carry ASCII only (RFC 9051 4.3), so non-ASCII credentials
are then refused here. The password is never logged and never appears in an exception.

May import: config, errors, imap.upstream, aioimaplib, stdlib.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl

from smime_proxy.config import UpstreamEndpoint
from smime_proxy.imap.upstream import (
    UpstreamUnavailable,
    authenticate,
    close_client,
    open_client,
)

CONNECT_TIMEOUT = 5.0
EXCHANGE_TIMEOUT = 15.0
async def _login(endpoint: UpstreamEndpoint, user: str, password: str) -> bool:
    try:
        client = await open_client(endpoint, connect_timeout=CONNECT_TIMEOUT,
                                   handshake_timeout=CONNECT_TIMEOUT)
    except ssl.SSLError:
        raise UpstreamUnavailable("TLS with the IMAP server failed") from None
    except OSError:
        raise UpstreamUnavailable("the connection to the IMAP server failed") from None
    try:
        ok = await authenticate(client, user, password)
        if ok:
            with contextlib.suppress(Exception):
                client.send(f"{client.new_tag()} LOGOUT")
        return ok
    except (OSError, EOFError):
        raise UpstreamUnavailable("the connection to the IMAP server failed") from None
    finally:
        await close_client(client)


async def check_login(
    endpoint: UpstreamEndpoint, user: str, password: str, *, limit: float = EXCHANGE_TIMEOUT
) -> bool:
    """True if the upstream accepts user/password; `UpstreamUnavailable` if it cannot be
    asked within `limit` seconds. Credentials with CR, LF or NUL are refused here."""
    if any(c in user + password for c in "\r\n\x00") or not user or not password:
        return False
    try:
        return await asyncio.wait_for(_login(endpoint, user, password), limit)
    except TimeoutError:
        raise UpstreamUnavailable("the IMAP server did not answer in time") from None
