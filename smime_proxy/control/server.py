"""The control endpoint (aiohttp): the "Secure Mail" web page at `/`, the JSON API under
`/api/v1` (described by `/api/v1/openapi.json`), `/health` and `/metrics`.

Who you are: the user's mail credentials, checked by an IMAP LOGIN to the upstream
(`imapcheck`), cached for at most 5 minutes as a salted hash. The API takes HTTP Basic; the
page uses a session cookie (HttpOnly, SameSite=Strict, Secure and `__Host-` under TLS) and a
CSRF token in every form. Every request must name this listener in `Host` (DNS rebinding);
a state-changing request with a foreign `Origin` (or `Sec-Fetch-Site: cross-site`) gets 403.

Slow key-store work (PBKDF2) runs in worker threads. Password attempts (login, unlock,
export, change of password) are throttled per user and per source address. No password,
key or request body is ever logged.

May import: config, errors, services, keystore, control, tlsconfig, aiohttp, prometheus_client.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import ipaddress
import json
import logging
import secrets
import ssl
import traceback
import urllib.parse
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from cryptography import x509
from multidict import MultiDictProxy
from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from smime_proxy.errors import (
    ConfigError,
    InputError,
    KeyExists,
    KeyLocked,
    KeyMismatch,
    KeyStoreError,
    NoSuchKey,
    WrongPassword,
)
from smime_proxy.imap.upstream import UpstreamUnavailable
from smime_proxy.keystore.certs import CertificateSummary, normalize_address
from smime_proxy.keystore.contacts import usable_for_encryption
from smime_proxy.keystore.service import UNLOCK_FAILED, check_user
from smime_proxy.services import Services

from . import pages
from .auth import CredentialCache, Session, Sessions, Throttle, Throttled
from .imapcheck import EXCHANGE_TIMEOUT, check_login
from .openapi import openapi_document

log = logging.getLogger("smime_proxy.control")

DEFAULT_CLIENT_MAX_SIZE = 1 << 20
LOGIN_FAILED = "wrong user name or password"
UPSTREAM_DOWN = "the mail server cannot check your password right now; try again later"
KEY_TYPES = ("rsa2048", "rsa3072", "ec-p256", "ec-p384")
EXPORT_FILENAME = "CertAndKey.pfx"
_STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_COUNTDOWN_HASH = base64.b64encode(
    hashlib.sha256(pages.COUNTDOWN_SCRIPT.encode("utf-8")).digest()
).decode("ascii")
_CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; "
    f"script-src 'sha256-{_COUNTDOWN_HASH}'; form-action 'self'; frame-ancestors 'none'; "
    "base-uri 'none'"
)


_Form = MultiDictProxy[str | bytes | bytearray | web.FileField]
_Action = Callable[[web.Request, Session, Mapping[str, Any]], Awaitable[str]]


def _redirect(location: str = "/") -> web.Response:
    return web.Response(status=303, headers={"Location": location})


class ApiError(Exception):
    """A refusal with an HTTP status and a message safe to show (never a secret)."""

    def __init__(self, status: int, message: str, headers: Mapping[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = dict(headers or {})


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None


def summary_json(summary: CertificateSummary) -> dict[str, Any]:
    return {
        "subject": summary.subject,
        "issuer": summary.issuer,
        "addresses": list(summary.addresses),
        "serial": summary.serial,
        "not_before": summary.not_before.isoformat(),
        "not_after": summary.not_after.isoformat(),
        "key_type": summary.key_type,
        "key_size": summary.key_size,
        "fingerprint": summary.fingerprint,
    }


def _dns_names(pem: bytes) -> frozenset[str]:
    """The DNS names of the first certificate of a PEM chain (lowercase)."""
    certificate = x509.load_pem_x509_certificate(pem)
    try:
        san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return frozenset()
    return frozenset(name.lower() for name in san.value.get_values_for_type(x509.DNSName))


class _Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "smime_control_requests", "Control endpoint requests",
            ["route", "method", "status"], registry=self.registry,
        )
        self.unlocks = Counter(
            "smime_control_unlocks", "Unlock attempts by result", ["result"],
            registry=self.registry,
        )
        self.failures = Counter(
            "smime_control_failures", "Refused requests by reason", ["reason"],
            registry=self.registry,
        )


def _remote(request: web.Request) -> str:
    return request.remote or "unknown"


def _text(value: object, name: str, *, required: bool = True) -> str:
    if value is None or value == "":
        if required:
            raise ApiError(400, f"missing field: {name}")
        return ""
    if not isinstance(value, str):
        raise ApiError(400, f"field {name} must be a string")
    return value


def _pair(first: str, second: str, what: str) -> str:
    if not first:
        raise ApiError(400, f"the {what} must not be empty")
    if not hmac.compare_digest(first.encode("utf-8"), second.encode("utf-8")):
        raise ApiError(400, f"the two {what}s differ")
    return first


class ControlFront:
    """The control listener (a `Front` of the daemon)."""

    name = "control"

    def __init__(
        self,
        services: Services,
        *,
        client_max_size: int = DEFAULT_CLIENT_MAX_SIZE,
        imap_timeout: float = EXCHANGE_TIMEOUT,
        allowed_hosts: tuple[str, ...] = (),
        mail_domain: str | None = None,
        throttle: Throttle | None = None,
    ) -> None:
        self.services = services
        self.listener = services.config.listeners.control
        self.client_max_size = client_max_size
        self.imap_timeout = imap_timeout
        self.extra_hosts = tuple(h.lower() for h in allowed_hosts)
        self.certificate_names: frozenset[str] = frozenset()
        self.mail_domain = mail_domain
        self.tls = self.listener.tls is not None
        self.credentials = CredentialCache(services.now)
        self.login_throttle = Throttle(services.now)
        self.unlock_throttle = throttle if throttle is not None else Throttle(services.now)
        self.sessions = Sessions(services.now)
        self.metrics = _Metrics()
        self.cookie_name = "__Host-smime-session" if self.tls else "smime-session"
        self.pre_cookie = "__Host-smime-pre" if self.tls else "smime-pre"
        self.app = self._build_app()
        self._runner: web.AppRunner | None = None
        self.port: int = self.listener.port

    def __repr__(self) -> str:
        return f"ControlFront({self.listener.host}:{self.port}, tls={self.tls})"

    @property
    def url(self) -> str:
        host = self.listener.host
        if host in ("0.0.0.0", "::"):  # noqa: S104 (a client connects to loopback)
            host = "127.0.0.1"
        if ":" in host:
            host = f"[{host}]"
        return f"{'https' if self.tls else 'http'}://{host}:{self.port}"

    # --- Front -----------------------------------------------------------------------------

    async def start(self) -> None:
        context: ssl.SSLContext | None = None
        tls = self.listener.tls
        if tls is not None:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            try:
                context.load_cert_chain(str(tls.cert), str(tls.key))
                self.certificate_names = _dns_names(tls.cert.read_bytes())
            except (OSError, ssl.SSLError, ValueError) as exc:
                raise ConfigError(f"listeners.control.tls: cannot load the certificate or "
                                  f"key: {exc}") from None
        runner = web.AppRunner(self.app, access_log=None, handle_signals=False,
                               shutdown_timeout=5.0)
        await runner.setup()
        site = web.TCPSite(runner, self.listener.host, self.listener.port,
                           ssl_context=context)
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            raise ConfigError(
                f"listeners.control.port: cannot listen on {self.listener.host} port "
                f"{self.listener.port}: {exc.strerror or exc}"
            ) from None
        self._runner = runner
        for address in runner.addresses:
            if isinstance(address, tuple) and len(address) >= 2:
                self.port = int(address[1])
                break

    async def stop(self, grace: float) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            try:
                await asyncio.wait_for(runner.cleanup(), max(grace, 0.1) + 5.0)
            except TimeoutError:
                log.warning("control endpoint: stopping took too long")

    # --- application ---------------------------------------------------------------------

    def _build_app(self) -> web.Application:
        app = web.Application(
            client_max_size=self.client_max_size, middlewares=[self._guard],
        )
        r = app.router
        r.add_get("/health", self.health)
        r.add_get("/metrics", self.metrics_page)
        r.add_get("/api/v1/openapi.json", self.openapi)
        r.add_get("/api/v1/status", self.api_status)
        r.add_post("/api/v1/unlock", self.api_unlock)
        r.add_post("/api/v1/lock", self.api_lock)
        r.add_post("/api/v1/import", self.api_import)
        r.add_post("/api/v1/generate", self.api_generate)
        r.add_post("/api/v1/export", self.api_export)
        r.add_post("/api/v1/password", self.api_password)
        r.add_post("/api/v1/remove", self.api_remove)
        r.add_get("/api/v1/contacts", self.api_contacts)
        r.add_post("/api/v1/contacts", self.api_contacts_add)
        r.add_delete("/api/v1/contacts/{address}", self.api_contacts_remove)
        r.add_get("/", self.web_index)
        r.add_post("/login", self.web_login)
        r.add_post("/logout", self.web_logout)
        for path, handler in (
            ("/unlock", self._web_unlock), ("/lock", self._web_lock),
            ("/import", self._web_import), ("/generate", self._web_generate),
            ("/password", self._web_password), ("/remove", self._web_remove),
            ("/contacts/add", self._web_contacts_add),
            ("/contacts/remove", self._web_contacts_remove),
        ):
            r.add_post(path, self._web_action(handler))
        r.add_post("/export", self.web_export)
        return app

    # --- Host / Origin / errors / metrics ------------------------------------------------

    def _host_allowed(self, authority: str) -> bool:
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

    def _origin_allowed(self, origin: str) -> bool:
        parts = urllib.parse.urlsplit(origin.strip())
        if parts.scheme != ("https" if self.tls else "http") or parts.path or parts.query:
            return False
        return self._host_allowed(parts.netloc)

    def _check_request(self, request: web.Request) -> None:
        if not self._host_allowed(request.headers.get("Host") or ""):
            self.metrics.failures.labels("host").inc()
            raise ApiError(403, "this server is not reached under that host name")
        if request.method in _STATE_CHANGING:
            origin = request.headers.get("Origin")
            if origin is not None and not self._origin_allowed(origin):
                self.metrics.failures.labels("origin").inc()
                raise ApiError(403, "cross-origin request refused")
            if request.headers.get("Sec-Fetch-Site", "").lower() == "cross-site":
                self.metrics.failures.labels("origin").inc()
                raise ApiError(403, "cross-site request refused")

    @web.middleware
    async def _guard(
        self, request: web.Request,
        handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
    ) -> web.StreamResponse:
        route = "unmatched"
        resource = request.match_info.route.resource
        if resource is not None:
            route = resource.canonical
        response: web.StreamResponse
        try:
            if request.path not in ("/health", "/metrics"):
                self._check_request(request)
            response = await handler(request)
        except ApiError as exc:
            response = self._error_response(request, exc)
        except web.HTTPException as exc:
            if exc.status == 413:
                self.metrics.failures.labels("too_large").inc()
                response = self._error_response(
                    request, ApiError(413, f"the upload is larger than "
                                           f"{self.client_max_size} bytes"))
            else:
                headers = {k: v for k, v in exc.headers.items()
                           if k.lower() in ("allow", "location", "retry-after")}
                response = self._error_response(
                    request, ApiError(exc.status, exc.reason, headers))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # type and place only: an exception's message may quote request data
            frame = traceback.extract_tb(exc.__traceback__)[-1:]
            where = f"{frame[0].filename}:{frame[0].lineno}" if frame else "?"
            log.error("control endpoint: internal error %s at %s", type(exc).__name__, where,
                      extra={"route": route})
            response = self._error_response(request, ApiError(500, "internal error"))
        self.metrics.requests.labels(route, request.method, str(response.status)).inc()
        out = response.headers
        out.setdefault("X-Content-Type-Options", "nosniff")
        out.setdefault("X-Frame-Options", "DENY")
        out.setdefault("Referrer-Policy", "same-origin")  # no-referrer makes Origin "null"
        out.setdefault("Cache-Control", "no-store")
        out.setdefault("Content-Security-Policy", _CSP)
        return response

    def _error_response(self, request: web.Request, exc: ApiError) -> web.Response:
        if exc.status < 400:
            return web.Response(status=exc.status, headers=exc.headers)
        if request.path.startswith("/api/") or request.path in ("/health", "/metrics"):
            return web.json_response({"error": exc.message}, status=exc.status,
                                     headers=exc.headers)
        return web.Response(text=pages.error_page(exc.status, exc.message), status=exc.status,
                            content_type="text/html", headers=exc.headers)

    # --- who is asking -------------------------------------------------------------------

    async def _check_credentials(self, user: str, password: str, remote: str) -> None:
        """Return if the upstream accepts user/password; ApiError 401/429/503 otherwise."""
        try:
            check_user(user)
        except InputError:
            user = "(invalid)"
            password = ""
        if password and self.credentials.hit(user, password):
            return
        # one bucket for the spellings a server may treat as one account (Alice, alice@dom)
        bucket = user.lower().partition("@")[0]
        try:
            self.login_throttle.reserve(bucket, remote)
        except Throttled as exc:
            self.metrics.failures.labels("throttled").inc()
            raise ApiError(429, str(exc), {"Retry-After": str(exc.retry_after)}) from None
        try:
            ok = await check_login(self.services.config.upstream.imap, user, password,
                                   limit=self.imap_timeout)
        except UpstreamUnavailable as exc:
            self.login_throttle.cancel(bucket, remote)  # not the user's fault
            self.metrics.failures.labels("upstream_unavailable").inc()
            log.warning("credential check impossible: %s", exc, extra={"remote": remote})
            raise ApiError(503, UPSTREAM_DOWN, {"Retry-After": "30"}) from None
        if not ok:
            self.metrics.failures.labels("login").inc()
            log.info("login refused", extra={"user": user, "remote": remote})
            raise ApiError(401, LOGIN_FAILED, {"WWW-Authenticate": 'Basic realm="smime-proxy"'})
        self.login_throttle.succeeded(bucket, remote)
        self.credentials.remember(user, password)

    async def _api_user(self, request: web.Request) -> str:
        header = request.headers.get("Authorization", "")
        scheme, _, value = header.partition(" ")
        challenge = {"WWW-Authenticate": 'Basic realm="smime-proxy", charset="UTF-8"'}
        if scheme.lower() != "basic" or not value:
            self.metrics.failures.labels("login").inc()
            raise ApiError(401, "authentication required (HTTP Basic, your mail account)",
                           challenge)
        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError, ValueError):
            self.metrics.failures.labels("login").inc()
            raise ApiError(401, LOGIN_FAILED, challenge) from None
        user, sep, password = decoded.partition(":")
        if not sep:
            self.metrics.failures.labels("login").inc()
            raise ApiError(401, LOGIN_FAILED, challenge)
        await self._check_credentials(user, password, _remote(request))
        return user

    # --- operations shared by the API and the page ---------------------------------------

    def _status(self, user: str) -> dict[str, Any]:
        mail = self.services.secure_mail
        now = self.services.now()
        certificate = None
        if mail.has_key(user):
            certificate = summary_json(mail.key_info(user).certificate)
        state = mail.unlock_state(user, now)
        expires = state.expires if state.unlocked else None
        left = max(0, int((expires - now).total_seconds())) if expires else None
        return {
            "user": user,
            "key_present": certificate is not None,
            "locked": not state.unlocked,
            "expires_at": _iso(expires),
            "idle_expires_at": _iso(state.idle_expires),
            "absolute_expires_at": _iso(state.absolute_expires),
            "seconds_left": left,
            "certificate": certificate,
        }

    async def _guarded(self, user: str, remote: str,
                       work: Callable[[], Any], *, counted: str | None = None) -> Any:
        """Run a Secure-Mail-Password operation in a thread, throttled."""
        try:
            self.unlock_throttle.reserve(user, remote)
        except Throttled as exc:
            self.metrics.failures.labels("throttled").inc()
            if counted:
                self.metrics.unlocks.labels("throttled").inc()
            raise ApiError(429, str(exc), {"Retry-After": str(exc.retry_after)}) from None
        try:
            result = await asyncio.to_thread(work)
        except WrongPassword:
            self.metrics.failures.labels("secure_mail_password").inc()
            if counted:
                self.metrics.unlocks.labels("wrong_password").inc()
            log.info("wrong Secure Mail Password", extra={"user": user, "remote": remote})
            raise ApiError(403, UNLOCK_FAILED) from None
        except BaseException:
            self.unlock_throttle.cancel(user, remote)  # not a password failure
            raise
        self.unlock_throttle.succeeded(user, remote)
        if counted:
            self.metrics.unlocks.labels("ok").inc()
        return result

    async def op_unlock(self, user: str, remote: str, password: str) -> dict[str, Any]:
        if not password:
            raise ApiError(400, "missing field: password")
        mail = self.services.secure_mail
        now = self.services.now()
        await self._guarded(user, remote, lambda: mail.unlock(user, password, now),
                            counted="unlock")
        log.info("unlocked", extra={"user": user, "remote": remote})
        return self._status(user)

    def op_lock(self, user: str) -> dict[str, Any]:
        self.services.secure_mail.lock(user)
        log.info("locked", extra={"user": user})
        return self._status(user)

    async def op_import(self, user: str, data: bytes, file_password: str, password: str,
                        password2: str) -> dict[str, Any]:
        new = _pair(password, password2, "new Secure Mail Password")
        mail = self.services.secure_mail
        if not data:
            raise ApiError(400, "missing field: file")
        try:
            await asyncio.to_thread(mail.import_pkcs12, user, data, file_password, new)
        except WrongPassword:
            raise ApiError(403, "wrong password for the PKCS#12 file (or a damaged file)") \
                from None
        log.info("key imported", extra={"user": user})
        return self._status(user)

    def _generate_address(self, user: str, email: str, domain: str | None) -> str:
        login = user.lower()
        if email:
            try:
                address = normalize_address(email)
            except InputError:
                raise ApiError(400, "not an e-mail address") from None
            local, _, address_domain = address.partition("@")
            if "@" in login:
                if address != login:
                    raise ApiError(400, f"the certificate can only be for {login}")
            elif local != login or (self.mail_domain is not None
                                    and address_domain != self.mail_domain.lower()):
                raise ApiError(400, "the address does not belong to this account")
            return address
        if "@" in login:
            return login
        chosen = domain or self.mail_domain
        if not chosen:
            raise ApiError(400, "give the e-mail address for the certificate")
        try:
            return normalize_address(f"{login}@{chosen}")
        except InputError:
            raise ApiError(400, "not an e-mail address") from None

    async def op_generate(self, user: str, email: str, key_type: str, password: str,
                          password2: str, domain: str | None = None) -> dict[str, Any]:
        new = _pair(password, password2, "new Secure Mail Password")
        if key_type not in KEY_TYPES:
            raise ApiError(400, f"key_type must be one of {', '.join(KEY_TYPES)}")
        address = self._generate_address(user, email, domain)
        mail = self.services.secure_mail
        if mail.ca is None:
            raise ApiError(409, "this server has no certificate authority to issue keys")
        now = self.services.now()
        await asyncio.to_thread(mail.generate, user, address, new, now, key_type=key_type)
        log.info("key generated", extra={"user": user})
        return self._status(user)

    async def op_export(self, user: str, remote: str, password: str, export_password: str,
                        export_password2: str, legacy: bool) -> bytes:
        export = _pair(export_password, export_password2, "export password")
        if not password:
            raise ApiError(400, "missing field: password")
        mail = self.services.secure_mail
        if not mail.has_key(user):
            raise ApiError(404, "you have no Secure Mail key")
        data: bytes = await self._guarded(
            user, remote, lambda: mail.export_pkcs12(user, password, export, legacy))
        log.info("key exported", extra={"user": user})
        return data

    async def op_change_password(self, user: str, remote: str, old: str, new: str,
                                 new2: str) -> dict[str, Any]:
        fresh = _pair(new, new2, "new Secure Mail Password")
        if not old:
            raise ApiError(400, "missing field: old_password")
        mail = self.services.secure_mail
        if not mail.has_key(user):
            raise ApiError(404, "you have no Secure Mail key")
        await self._guarded(user, remote, lambda: mail.change_password(user, old, fresh))
        log.info("Secure Mail Password changed", extra={"user": user})
        return self._status(user)

    async def op_remove(self, user: str, remote: str, data: bytes,
                        file_password: str) -> dict[str, Any]:
        if not data:
            raise ApiError(400, "missing field: file")
        mail = self.services.secure_mail
        if not mail.has_key(user):
            raise ApiError(404, "you have no Secure Mail key")
        try:
            await self._guarded(user, remote, lambda: mail.remove(user, data, file_password))
        except ApiError as exc:
            if exc.status == 403:
                raise ApiError(403, "wrong password for the PKCS#12 file (or a damaged file)") \
                    from None
            raise
        log.info("key removed", extra={"user": user})
        return self._status(user)

    def op_contacts(self, user: str) -> list[tuple[CertificateSummary, bool]]:
        now = self.services.now()
        return [(e.summary, usable_for_encryption(e.certificate, now))
                for e in self.services.contacts.entries(user)]

    async def op_contacts_add(self, user: str, data: bytes) -> list[CertificateSummary]:
        if not data:
            raise ApiError(400, "missing field: file")
        added = await asyncio.to_thread(self.services.contacts.add, user, data)
        log.info("contacts added", extra={"user": user, "count": len(added)})
        return added

    def op_contacts_remove(self, user: str, address: str) -> int:
        try:
            count = self.services.contacts.remove(user, address)
        except InputError:
            raise ApiError(400, "not an e-mail address") from None
        except KeyStoreError as exc:
            raise ApiError(404, str(exc)) from None
        log.info("contact removed", extra={"user": user})
        return count

    async def _run(self, action: Awaitable[Any]) -> Any:
        """Map the key store's errors to statuses."""
        try:
            return await action
        except ApiError:
            raise
        except KeyExists:
            raise ApiError(409, "you already have a key: remove it first") from None
        except KeyMismatch as exc:
            raise ApiError(409, str(exc)) from None
        except NoSuchKey:
            raise ApiError(404, "you have no Secure Mail key") from None
        except KeyLocked:
            raise ApiError(409, "the key is locked") from None
        except InputError as exc:  # ImportRejected too
            raise ApiError(400, str(exc)) from None
        except KeyStoreError as exc:
            raise ApiError(409, str(exc)) from None

    # --- plain endpoints -----------------------------------------------------------------

    async def health(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def metrics_page(self, request: web.Request) -> web.Response:
        body = generate_latest(self.metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def openapi(self, request: web.Request) -> web.Response:
        return web.json_response(openapi_document(self.url))

    # --- JSON API ------------------------------------------------------------------------

    @staticmethod
    async def _json(request: web.Request) -> dict[str, Any]:
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError, ValueError):
            raise ApiError(400, "the body must be a JSON object") from None
        if not isinstance(body, dict):
            raise ApiError(400, "the body must be a JSON object")
        return body

    @staticmethod
    async def _form(request: web.Request) -> _Form:
        if not request.content_type.startswith(("multipart/form-data",
                                                "application/x-www-form-urlencoded")):
            raise ApiError(400, "the body must be multipart/form-data")
        try:
            return await request.post()
        except web.HTTPException:
            raise
        except (ValueError, UnicodeDecodeError, AssertionError, RuntimeError, LookupError,
                HttpProcessingError):
            raise ApiError(400, "malformed form data") from None

    @staticmethod
    def _file(form: Mapping[str, Any], name: str) -> bytes:
        value = form.get(name)
        if isinstance(value, web.FileField):
            data = value.file.read()
            return data if isinstance(data, bytes) else bytes(data)
        if isinstance(value, str):
            return value.encode("utf-8")
        if isinstance(value, bytes | bytearray):
            return bytes(value)
        raise ApiError(400, f"missing field: {name}")

    @staticmethod
    def _field(form: Mapping[str, Any], name: str, *, required: bool = True) -> str:
        return _text(form.get(name), name, required=required)

    async def api_status(self, request: web.Request) -> web.Response:
        user = await self._api_user(request)
        return web.json_response(self._status(user))

    async def api_unlock(self, request: web.Request) -> web.Response:
        user = await self._api_user(request)
        body = await self._json(request)
        status = await self._run(self.op_unlock(user, _remote(request),
                                                _text(body.get("password"), "password")))
        return web.json_response(status)

    async def api_lock(self, request: web.Request) -> web.Response:
        user = await self._api_user(request)
        return web.json_response(self.op_lock(user))

    async def api_import(self, request: web.Request) -> web.Response:
        user = await self._api_user(request)
        form = await self._form(request)
        status = await self._run(self.op_import(
            user, self._file(form, "file"), self._field(form, "file_password", required=False),
            self._field(form, "password"), self._field(form, "password2")))
        return web.json_response(status, status=201)

    async def api_generate(self, request: web.Request) -> web.Response:
        user = await self._api_user(request)
        body = await self._json(request)
        status = await self._run(self.op_generate(
            user, _text(body.get("email"), "email", required=False),
            _text(body.get("key_type"), "key_type", required=False) or "rsa2048",
            _text(body.get("password"), "password"), _text(body.get("password2"), "password2")))
        return web.json_response(status, status=201)

    def _pfx_response(self, data: bytes) -> web.Response:
        return web.Response(body=data, headers={
            "Content-Type": "application/x-pkcs12",
            "Content-Disposition": f'attachment; filename="{EXPORT_FILENAME}"',
        })

    async def api_export(self, request: web.Request) -> web.Response:
        user = await self._api_user(request)
        body = await self._json(request)
        legacy = body.get("legacy", False)
        if not isinstance(legacy, bool):
            raise ApiError(400, "legacy must be true or false")
        data = await self._run(self.op_export(
            user, _remote(request), _text(body.get("password"), "password"),
            _text(body.get("export_password"), "export_password"),
            _text(body.get("export_password2"), "export_password2"), legacy))
        return self._pfx_response(data)

    async def api_password(self, request: web.Request) -> web.Response:
        user = await self._api_user(request)
        body = await self._json(request)
        status = await self._run(self.op_change_password(
            user, _remote(request), _text(body.get("old_password"), "old_password"),
            _text(body.get("new_password"), "new_password"),
            _text(body.get("new_password2"), "new_password2")))
        return web.json_response(status)

    async def api_remove(self, request: web.Request) -> web.Response:
        user = await self._api_user(request)
        form = await self._form(request)
        status = await self._run(self.op_remove(
            user, _remote(request), self._file(form, "file"),
            self._field(form, "file_password", required=False)))
        return web.json_response(status)

    async def api_contacts(self, request: web.Request) -> web.Response:
        user = await self._api_user(request)
        entries = self.op_contacts(user)
        return web.json_response({"contacts": [summary_json(s) for s, _ in entries]})

    async def api_contacts_add(self, request: web.Request) -> web.Response:
        user = await self._api_user(request)
        if request.content_type.startswith("multipart/"):
            data = self._file(await self._form(request), "file")
        else:
            data = await request.read()
        added = await self._run(self.op_contacts_add(user, data))
        return web.json_response({"contacts": [summary_json(s) for s in added]}, status=201)

    async def api_contacts_remove(self, request: web.Request) -> web.Response:
        user = await self._api_user(request)
        count = self.op_contacts_remove(user, request.match_info["address"])
        return web.json_response({"removed": count})

    # --- the web page --------------------------------------------------------------------

    def _cookie_args(self) -> dict[str, Any]:
        return {"httponly": True, "secure": self.tls, "samesite": "Strict", "path": "/"}

    def _session(self, request: web.Request) -> Session | None:
        return self.sessions.get(request.cookies.get(self.cookie_name))

    def _login_response(self, request: web.Request, error: str | None = None,
                        status: int = 200, user: str = "") -> web.Response:
        token = request.cookies.get(self.pre_cookie) or ""
        if len(token) < 32:
            token = secrets.token_urlsafe(32)
        response = web.Response(text=pages.login_page(token, error, user), status=status,
                                content_type="text/html")
        response.set_cookie(self.pre_cookie, token, **self._cookie_args())
        return response

    def _render(self, session: Session) -> web.Response:
        user = session.user
        status = self._status(user)
        certificate = None
        if status["key_present"]:
            certificate = self.services.secure_mail.key_info(user).certificate
        unlock = self.services.secure_mail.unlock_state(user, self.services.now())
        domain = session.domain or self.mail_domain
        default_email = user if "@" in user else (f"{user}@{domain}" if domain else "")
        flash, session.flash = session.flash, []
        state = pages.PageState(
            user=user, csrf=session.csrf, certificate=certificate,
            unlocked=not status["locked"], expires_at=unlock.expires,
            seconds_left=status["seconds_left"], absolute_expires_at=unlock.absolute_expires,
            default_email=default_email,
            contacts=self.op_contacts(user), flash=flash,
            can_generate=self.services.secure_mail.ca is not None,
        )
        return web.Response(text=pages.main_page(state), content_type="text/html")

    async def web_index(self, request: web.Request) -> web.Response:
        session = self._session(request)
        if session is None:
            return self._login_response(request)
        return self._render(session)

    async def web_login(self, request: web.Request) -> web.Response:
        form = await self._form(request)
        token = request.cookies.get(self.pre_cookie, "")
        sent = form.get("csrf")
        if not token or not isinstance(sent, str) or not hmac.compare_digest(
                sent.encode("utf-8"), token.encode("utf-8")):
            self.metrics.failures.labels("csrf").inc()
            raise ApiError(403, "the form is stale or forged (CSRF check failed): reload "
                                "the page")
        user = self._field(form, "user", required=False)
        password = self._field(form, "password", required=False)
        domain = self._field(form, "domain", required=False).strip().lower() or None
        if domain is not None:
            try:
                normalize_address(f"x@{domain}")
            except InputError:
                return self._login_response(request, "that mail domain is not valid", 400,
                                            user)
        try:
            await self._check_credentials(user, password, _remote(request))
        except ApiError as exc:
            return self._login_response(request, exc.message, exc.status, user)
        session = self.sessions.create(user, domain)
        log.info("web login", extra={"user": user, "remote": _remote(request)})
        response = _redirect()
        response.set_cookie(self.cookie_name, session.id, **self._cookie_args())
        response.del_cookie(self.pre_cookie, path="/")
        return response

    async def _web_form(self, request: web.Request
                        ) -> tuple[Session, _Form]:
        session = self._session(request)
        form = await self._form(request)
        sent = form.get("csrf")
        if session is None:
            raise ApiError(403, "you are not logged in (or the session expired): log in again")
        if not isinstance(sent, str) or not hmac.compare_digest(
                sent.encode("utf-8"), session.csrf.encode("utf-8")):
            self.metrics.failures.labels("csrf").inc()
            raise ApiError(403, "the form is stale or forged (CSRF check failed): reload "
                                "the page")
        return session, form

    async def web_logout(self, request: web.Request) -> web.Response:
        session, _ = await self._web_form(request)
        self.services.secure_mail.lock(session.user)
        self.sessions.drop(session.id)
        log.info("web logout", extra={"user": session.user})
        response = _redirect()
        response.del_cookie(self.cookie_name, path="/")
        return response

    def _web_action(self, action: _Action) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def handler(request: web.Request) -> web.Response:
            session, form = await self._web_form(request)
            try:
                message = await self._run(action(request, session, form))
                session.flash.append(("ok", message))
            except ApiError as exc:
                if exc.status >= 500:
                    raise
                session.flash.append(("error", exc.message))
            return _redirect()
        return handler

    async def _web_unlock(self, request: web.Request, session: Session,
                          form: Mapping[str, Any]) -> str:
        await self.op_unlock(session.user, _remote(request),
                             self._field(form, "password"))
        return "Secure Mail is unlocked."

    async def _web_lock(self, request: web.Request, session: Session,
                        form: Mapping[str, Any]) -> str:
        self.op_lock(session.user)
        return "Secure Mail is locked."

    async def _web_import(self, request: web.Request, session: Session,
                          form: Mapping[str, Any]) -> str:
        await self.op_import(session.user, self._file(form, "file"),
                             self._field(form, "file_password", required=False),
                             self._field(form, "password"), self._field(form, "password2"))
        return "The key and certificate were imported."

    async def _web_generate(self, request: web.Request, session: Session,
                            form: Mapping[str, Any]) -> str:
        await self.op_generate(session.user, self._field(form, "email", required=False),
                               self._field(form, "key_type", required=False) or "rsa2048",
                               self._field(form, "password"), self._field(form, "password2"),
                               session.domain)
        return "A new key and certificate were generated."

    async def _web_password(self, request: web.Request, session: Session,
                            form: Mapping[str, Any]) -> str:
        await self.op_change_password(session.user, _remote(request),
                                      self._field(form, "old_password"),
                                      self._field(form, "new_password"),
                                      self._field(form, "new_password2"))
        return "The Secure Mail Password was changed."

    async def _web_remove(self, request: web.Request, session: Session,
                          form: Mapping[str, Any]) -> str:
        await self.op_remove(session.user, _remote(request), self._file(form, "file"),
                             self._field(form, "file_password", required=False))
        return "The key and certificate were removed."

    async def _web_contacts_add(self, request: web.Request, session: Session,
                                form: Mapping[str, Any]) -> str:
        added = await self.op_contacts_add(session.user, self._file(form, "file"))
        return f"{len(added)} certificate(s) added to the address book."

    async def _web_contacts_remove(self, request: web.Request, session: Session,
                                   form: Mapping[str, Any]) -> str:
        address = self._field(form, "address")
        self.op_contacts_remove(session.user, address)
        return f"{address} was removed from the address book."

    async def web_export(self, request: web.Request) -> web.Response:
        session, form = await self._web_form(request)
        try:
            data = await self._run(self.op_export(
                session.user, _remote(request), self._field(form, "password"),
                self._field(form, "export_password"), self._field(form, "export_password2"),
                form.get("legacy") == "1"))
        except ApiError as exc:
            if exc.status >= 500:
                raise
            session.flash.append(("error", exc.message))
            return _redirect()
        return self._pfx_response(data)
