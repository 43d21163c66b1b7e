"""What every control request passes before a handler sees it, and who is asking.

- `Host` must name this listener (DNS rebinding); a state-changing request with a foreign
  `Origin` (or `Sec-Fetch-Site: cross-site`) gets 403. Every response gets the security
  headers (CSP with the page's one script by hash, no framing, no sniffing, no caching).
- A `Refusal` (or an aiohttp HTTP error) becomes a JSON error under /api/, an HTML page
  elsewhere; any other exception a 500 whose log line names only its type and place (an
  exception's message may quote request data).
- Credentials: the user's mail login checked by the upstream IMAP server (`imapcheck`),
  cached for at most 5 minutes as a salted hash, throttled per account and source address.

May import: accounts, throttle, errors, services, imap.upstream, keystore, control, aiohttp, stdlib.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import ipaddress
import logging
import traceback
import urllib.parse
from collections.abc import Awaitable, Callable

from aiohttp import web

from smime_proxy.accounts import Accounts
from smime_proxy.control import pages
from smime_proxy.control.auth import CredentialCache
from smime_proxy.control.imapcheck import check_login
from smime_proxy.control.metrics import ControlMetrics
from smime_proxy.control.operations import Refusal
from smime_proxy.control.requests import remote
from smime_proxy.errors import InputError
from smime_proxy.imap.upstream import UpstreamUnavailable
from smime_proxy.keystore.service import check_user
from smime_proxy.services import Services
from smime_proxy.throttle import Throttle, Throttled, account_key

log = logging.getLogger("smime_proxy.control")

LOGIN_FAILED = "wrong user name or password"
UPSTREAM_DOWN = "the mail server cannot check your password right now; try again later"
_STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_COUNTDOWN_HASH = base64.b64encode(
    hashlib.sha256(pages.COUNTDOWN_SCRIPT.encode("utf-8")).digest()
).decode("ascii")
CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; "
    f"script-src 'sha256-{_COUNTDOWN_HASH}'; form-action 'self'; frame-ancestors 'none'; "
    "base-uri 'none'"
)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class RequestGuard:
    """Host/Origin checks, error mapping, security headers and the credential check."""

    def __init__(self, services: Services, metrics: ControlMetrics, *, tls: bool, port: int,
                 allowed_hosts: tuple[str, ...], client_max_size: int,
                 imap_timeout: float, accounts: Accounts) -> None:
        self.services = services
        self.metrics = metrics
        self.tls = tls
        self.port = port  # the bound port once the listener started
        self.extra_hosts = tuple(h.lower() for h in allowed_hosts)
        self.certificate_names: frozenset[str] = frozenset()
        self.client_max_size = client_max_size
        self.imap_timeout = imap_timeout
        self.credentials = CredentialCache(services.now)
        self.accounts = accounts
        self.login_throttle = Throttle(services.now)

    # --- Host / Origin ---------------------------------------------------------------------

    def host_allowed(self, authority: str) -> bool:
        """Whether a Host header (or an Origin's host[:port]) names this listener.

        DNS rebinding makes a browser send the attacker's *name* for our address, so names
        are the danger: accepted are IP literals (a page reached by IP is really ours),
        `localhost`, the DNS names of the listener's TLS certificate (a rebound name would
        fail certificate checks anyway) and `allowed_hosts`. The port must be ours.
        """
        authority = authority.strip().lower()
        if not authority or authority in self.extra_hosts:
            return bool(authority)
        default = 443 if self.tls else 80
        if authority.startswith("["):
            host, _, rest = authority[1:].partition("]")
            port_text = rest[1:] if rest.startswith(":") else ("" if not rest else "x")
        else:
            host, sep, port_text = authority.rpartition(":")
            if not sep:
                host, port_text = authority, ""
        try:
            port = int(port_text) if port_text else default
        except ValueError:
            return False
        if port != self.port:
            return False
        if host == "localhost" or host in self.certificate_names:
            return True
        try:
            ipaddress.ip_address(host)
        except ValueError:
            return False
        return True

    def origin_allowed(self, origin: str) -> bool:
        parts = urllib.parse.urlsplit(origin.strip())
        if parts.scheme != ("https" if self.tls else "http") or parts.path or parts.query:
            return False
        return self.host_allowed(parts.netloc)

    def check_request(self, request: web.Request) -> None:
        if not self.host_allowed(request.headers.get("Host") or ""):
            self.metrics.failures.labels("host").inc()
            raise Refusal(403, "this server is not reached under that host name")
        if request.method in _STATE_CHANGING:
            origin = request.headers.get("Origin")
            if origin is not None and not self.origin_allowed(origin):
                self.metrics.failures.labels("origin").inc()
                raise Refusal(403, "cross-origin request refused")
            if request.headers.get("Sec-Fetch-Site", "").lower() == "cross-site":
                self.metrics.failures.labels("origin").inc()
                raise Refusal(403, "cross-site request refused")

    # --- the middleware --------------------------------------------------------------------

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        route = "unmatched"
        resource = request.match_info.route.resource
        if resource is not None:
            route = resource.canonical
        response: web.StreamResponse
        try:
            if request.path not in ("/health", "/metrics"):
                self.check_request(request)
            response = await handler(request)
        except Refusal as exc:
            response = self.error_response(request, exc)
        except web.HTTPException as exc:
            if exc.status == 413:
                self.metrics.failures.labels("too_large").inc()
                response = self.error_response(
                    request, Refusal(413, f"the upload is larger than "
                                          f"{self.client_max_size} bytes"))
            else:
                headers = {k: v for k, v in exc.headers.items()
                           if k.lower() in ("allow", "location", "retry-after")}
                response = self.error_response(
                    request, Refusal(exc.status, exc.reason, headers))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # type and place only: an exception's message may quote request data
            frame = traceback.extract_tb(exc.__traceback__)[-1:]
            where = f"{frame[0].filename}:{frame[0].lineno}" if frame else "?"
            log.error("control endpoint: internal error %s at %s", type(exc).__name__, where,
                      extra={"route": route})
            response = self.error_response(request, Refusal(500, "internal error"))
        self.metrics.requests.labels(route, request.method, str(response.status)).inc()
        out = response.headers
        out.setdefault("X-Content-Type-Options", "nosniff")
        out.setdefault("X-Frame-Options", "DENY")
        out.setdefault("Referrer-Policy", "same-origin")  # no-referrer makes Origin "null"
        out.setdefault("Cache-Control", "no-store")
        out.setdefault("Content-Security-Policy", CSP)
        return response

    @staticmethod
    def error_response(request: web.Request, exc: Refusal) -> web.Response:
        if exc.status < 400:
            return web.Response(status=exc.status, headers=exc.headers)
        if request.path.startswith("/api/") or request.path in ("/health", "/metrics"):
            return web.json_response({"error": exc.message}, status=exc.status,
                                     headers=exc.headers)
        return web.Response(text=pages.error_page(exc.status, exc.message), status=exc.status,
                            content_type="text/html", headers=exc.headers)

    # --- who is asking ---------------------------------------------------------------------

    async def check_credentials(self, user: str, password: str, address: str) -> None:
        """Return if the upstream accepts user/password; Refusal 401/429/503 otherwise."""
        try:
            check_user(user)
        except InputError:
            user = "(invalid)"
            password = ""
        if password and self.credentials.hit(user, password):
            return
        bucket = account_key(user)
        try:
            self.login_throttle.reserve(bucket, address)
        except Throttled as exc:
            self.metrics.failures.labels("throttled").inc()
            raise Refusal(429, str(exc), {"Retry-After": str(exc.retry_after)}) from None
        try:
            ok = await check_login(self.services.config.upstream.imap, user, password,
                                   limit=self.imap_timeout)
        except UpstreamUnavailable as exc:
            self.login_throttle.cancel(bucket, address)  # not the user's fault
            self.metrics.failures.labels("upstream_unavailable").inc()
            log.warning("credential check impossible: %s", exc, extra={"remote": address})
            raise Refusal(503, UPSTREAM_DOWN, {"Retry-After": "30"}) from None
        if not ok:
            self.login_throttle.failed(bucket, address)
            self.metrics.failures.labels("login").inc()
            log.info("login refused", extra={"user": user, "remote": address})
            raise Refusal(401, LOGIN_FAILED, {"WWW-Authenticate": 'Basic realm="smime-proxy"'})
        self.login_throttle.succeeded(bucket, address)
        self.credentials.remember(user, password)

    @staticmethod
    def _basic_credentials(request: web.Request) -> tuple[str, str]:
        """(login, password) of a request's HTTP Basic credentials; ("", "") if none."""
        scheme, _, value = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "basic":
            return "", ""
        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError, ValueError):
            return "", ""
        login, _, password = decoded.partition(":")
        return login, password

    @classmethod
    def basic_login(cls, request: web.Request) -> str:
        """The login of a request's HTTP Basic credentials, as the client gave it."""
        return cls._basic_credentials(request)[0]

    @classmethod
    def basic_password(cls, request: web.Request) -> str:
        """The password of a request's HTTP Basic credentials (after `basic_user` accepted
        them; "" if there are none)."""
        return cls._basic_credentials(request)[1]

    async def basic_user(self, request: web.Request) -> str:
        """The user of an HTTP Basic request whose mail credentials the upstream accepts."""
        header = request.headers.get("Authorization", "")
        scheme, _, value = header.partition(" ")
        challenge = {"WWW-Authenticate": 'Basic realm="smime-proxy", charset="UTF-8"'}
        if scheme.lower() != "basic" or not value:
            self.metrics.failures.labels("login").inc()
            raise Refusal(401, "authentication required (HTTP Basic, your mail account)",
                          challenge)
        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError, ValueError):
            self.metrics.failures.labels("login").inc()
            raise Refusal(401, LOGIN_FAILED, challenge) from None
        user, sep, password = decoded.partition(":")
        if not sep:
            self.metrics.failures.labels("login").inc()
            raise Refusal(401, LOGIN_FAILED, challenge)
        await self.check_credentials(user, password, remote(request))
        return self.accounts.user(user)
