"""The control endpoint (aiohttp): the "Secure Mail" web page at `/` (control/web.py), the
JSON API under `/api/v1` (control/api.py, described by `/api/v1/openapi.json`), `/health`
and `/metrics`. This module routes and starts; every request first passes the
`RequestGuard` (control/guard.py), and both the API and the page call the same
`KeyOperations` (control/operations.py).

No password, key or request body is ever logged.

May import: accounts, at_rest, throttle, config, errors, services, tlsconfig, control,
aiohttp, cryptography, prometheus_client, stdlib.
"""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from prometheus_client import generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from smime_proxy.accounts import Accounts
from smime_proxy.at_rest.operations import FolderOperations
from smime_proxy.control.api import JsonApi
from smime_proxy.control.guard import RequestGuard
from smime_proxy.control.imapcheck import EXCHANGE_TIMEOUT
from smime_proxy.control.metrics import ControlMetrics
from smime_proxy.control.openapi import openapi_document
from smime_proxy.control.operations import KeyOperations
from smime_proxy.control.web import WebPage
from smime_proxy.errors import ConfigError
from smime_proxy.services import Services
from smime_proxy.throttle import Throttle
from smime_proxy.tlsconfig import listener_context

log = logging.getLogger("smime_proxy.control")

DEFAULT_CLIENT_MAX_SIZE = 1 << 20


def _dns_names(pem: bytes) -> frozenset[str]:
    """The DNS names of the first certificate of a PEM chain (lowercase)."""
    certificate = x509.load_pem_x509_certificate(pem)
    try:
        san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return frozenset()
    return frozenset(name.lower() for name in san.value.get_values_for_type(x509.DNSName))


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
        folder_operations: FolderOperations | None = None,
    ) -> None:
        """`folder_operations`: shared with the IMAP front (keyword requests); this front
        closes them when it stops (it is the last to stop)."""
        self.services = services
        self.listener = services.config.listeners.control
        self.tls = self.listener.tls is not None
        self.metrics = ControlMetrics()
        accounts = Accounts.from_config(services.config)  # who a login is, for both
        self.guard = RequestGuard(services, self.metrics, tls=self.tls, port=self.listener.port,
                                  allowed_hosts=allowed_hosts, client_max_size=client_max_size,
                                  imap_timeout=imap_timeout, accounts=accounts)
        self.operations = KeyOperations(services, self.metrics, accounts=accounts,
                                        throttle=throttle, mail_domain=mail_domain)
        self.stored = folder_operations or FolderOperations(services)
        self.api = JsonApi(self.guard, self.operations, self.stored)
        self.page = WebPage(self.guard, self.operations, tls=self.tls, stored=self.stored)
        self.app = self._build_app(client_max_size)
        self._runner: web.AppRunner | None = None

    def __repr__(self) -> str:
        return f"ControlFront({self.listener.host}:{self.port}, tls={self.tls})"

    @property
    def port(self) -> int:
        return self.guard.port

    @property
    def url(self) -> str:
        host = self.listener.host
        if host in ("0.0.0.0", "::"):  # noqa: S104 (a client connects to loopback)
            host = "127.0.0.1"
        if ":" in host:
            host = f"[{host}]"
        return f"{'https' if self.tls else 'http'}://{host}:{self.port}"

    def _build_app(self, client_max_size: int) -> web.Application:
        app = web.Application(client_max_size=client_max_size,
                              middlewares=[self.guard.middleware])
        app.router.add_get("/health", self.health)
        app.router.add_get("/metrics", self.metrics_page)
        app.router.add_get("/api/v1/openapi.json", self.openapi)
        app.router.add_get("/server-ca.pem", self.server_ca)
        self.api.add_routes(app.router)
        self.page.add_routes(app.router)
        return app

    # --- Front -----------------------------------------------------------------------------

    async def start(self) -> None:
        context = listener_context(self.listener, "control")
        if self.listener.tls is not None:
            try:
                self.guard.certificate_names = _dns_names(self.listener.tls.cert.read_bytes())
            except (OSError, ValueError) as exc:
                raise ConfigError(f"listeners.control.tls: cannot read the certificate: "
                                  f"{exc}") from None
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
                self.guard.port = int(address[1])
                break

    async def stop(self, grace: float) -> None:
        await self.stored.close()  # a folder operation stops; its journal resumes it later
        runner, self._runner = self._runner, None
        if runner is not None:
            try:
                await asyncio.wait_for(runner.cleanup(), max(grace, 0.1) + 5.0)
            except TimeoutError:
                log.warning("control endpoint: stopping took too long")

    # --- plain endpoints -------------------------------------------------------------------

    async def health(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def metrics_page(self, request: web.Request) -> web.Response:
        body = (generate_latest(self.metrics.registry)
                + generate_latest(self.services.metrics.registry))
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def server_ca(self, request: web.Request) -> web.Response:
        """The server CA's certificate (public), for mail clients to trust (issue 14)."""
        ca = self.services.ca
        if ca is None:
            return web.Response(status=404, text="this server has no certificate authority\n")
        return web.Response(
            body=ca.certificate.public_bytes(Encoding.PEM),
            headers={"Content-Type": "application/x-pem-file",
                     "Content-Disposition": 'attachment; filename="server-ca.pem"'})

    async def openapi(self, request: web.Request) -> web.Response:
        return web.json_response(openapi_document(self.url))
