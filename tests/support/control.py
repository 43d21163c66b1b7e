"""Run the control endpoint in-process for tests and benches, and talk to it over HTTP.

`running_control(...)` builds a config pointing at an upstream IMAP server (normally the real
Dovecot of the `upstream` fixture), opens the stores with a low KDF iteration count, starts a
`Daemon` with a `ControlFront` on an event loop in a background thread, and yields a
`RunningControl` with an injected clock (`clock.advance(seconds)`). `Client` is a small
blocking HTTP client (http.client) that lets a test set any header (Host, Origin, cookies).

`control_running(...)` is the same daemon on the test's own (pytest-asyncio) loop, with
`AsyncClient` (aiohttp, same interface, every call awaited): what the API tests use. The
thread version stays for blocking clients (Playwright's sync API, schemathesis, benches).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import http.client
import json
import secrets
import socket
import ssl
import threading
import urllib.parse
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any

import aiohttp
from multidict import CIMultiDictProxy

from smime_proxy import event_loop
from smime_proxy.app import Daemon, DaemonServices, build_services
from smime_proxy.config import parse_config
from smime_proxy.control import ControlFront
from smime_proxy.keystore.ca import ServerCA
from smime_proxy.throttle import Throttle

TEST_KDF_ITERATIONS = 1000


class FakeClock:
    """A settable clock (aware UTC datetimes), shared by the key store, throttle, sessions."""

    def __init__(self, start: datetime | None = None) -> None:
        self._now = start or datetime.now(UTC)
        self._lock = threading.Lock()

    def __call__(self) -> datetime:
        with self._lock:
            return self._now

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._now += timedelta(seconds=seconds)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class Upstreamish:
    """What the control endpoint needs to know of the upstream IMAP server."""

    host: str
    port: int
    tls: str = "starttls"
    ca_file: Path | None = None
    verify: bool = True


@dataclass
class RunningControl:
    front: ControlFront
    services: DaemonServices
    clock: FakeClock
    loop: asyncio.AbstractEventLoop
    tls_ca: Path | None = None
    clients: list[AsyncClient] = field(default_factory=list)

    @property
    def url(self) -> str:
        return self.front.url

    @property
    def port(self) -> int:
        return self.front.port

    def client(self, user: str | None = None, password: str | None = None) -> Client:
        return Client(self.url, auth=(user, password) if user is not None and password
                      is not None else None, cafile=self.tls_ca)

    def async_client(self, user: str | None = None, password: str | None = None
                     ) -> AsyncClient:
        client = AsyncClient(self.url, auth=(user, password) if user is not None and password
                             is not None else None, cafile=self.tls_ca)
        self.clients.append(client)
        return client

    async def close_clients(self) -> None:
        for client in self.clients:
            await client.close()
        self.clients.clear()

    def call(self, fn: Callable[[], Any]) -> Any:
        """Run `fn` on the daemon's loop thread and wait for it."""
        async def run() -> Any:
            return fn()
        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(30)


def control_config(
    workdir: Path, imap: Upstreamish, *, tls_cert: Path | None = None,
    tls_key: Path | None = None, idle_timeout: int = 180, max_unlock: int = 3600,
    port: int | None = None,
) -> dict[str, Any]:
    control: dict[str, Any] = {"host": "127.0.0.1", "port": port or free_port()}
    if tls_cert is not None and tls_key is not None:
        control["tls"] = {"mode": "implicit", "cert": str(tls_cert), "key": str(tls_key)}
    else:
        control["plaintext_loopback"] = True
    endpoint: dict[str, Any] = {"host": imap.host, "port": imap.port, "tls": imap.tls,
                                "verify": imap.verify}
    if imap.ca_file is not None:
        endpoint["ca_file"] = str(imap.ca_file)
    return {
        "listeners": {
            "imap": {"host": "127.0.0.1", "port": free_port(), "plaintext_loopback": True},
            "smtp": {"host": "127.0.0.1", "port": free_port(), "plaintext_loopback": True},
            "control": control,
        },
        "upstream": {"imap": endpoint, "smtp": {"host": "127.0.0.1", "port": 1, "tls": "none"}},
        "data_dir": str(workdir / "data"),
        "unlock": {"idle_timeout": idle_timeout, "max_unlock": max_unlock},
    }


def _prepare(workdir: Path, imap: Upstreamish, *, with_ca: bool = True,
             tls_cert: Path | None = None, tls_key: Path | None = None,
             idle_timeout: int = 180, max_unlock: int = 3600,
             front_options: Mapping[str, Any] | None = None,
             throttle: Callable[[FakeClock], Throttle] | None = None,
             users: Mapping[str, Any] | None = None,
             ) -> tuple[FakeClock, DaemonServices, dict[str, Any]]:
    """Config, server CA, stores (low KDF cost) and the front's options. `with_ca`: a server
    CA exists; `tls_cert`/`tls_key`: the listener speaks TLS; `throttle`: the unlock
    throttle to use, made from the test clock; `users`: the config's `users` section."""
    clock = FakeClock()
    data = control_config(workdir, imap, tls_cert=tls_cert, tls_key=tls_key,
                          idle_timeout=idle_timeout, max_unlock=max_unlock)
    if users is not None:
        data["users"] = dict(users)
    config = parse_config(data, base_dir=workdir)
    if with_ca:
        ServerCA.init(config.data_dir, clock(), key_type="ec-p256")
    services = build_services(config, now=clock, kdf_iterations=TEST_KDF_ITERATIONS)
    options = dict(front_options or {})
    if throttle is not None:
        options["throttle"] = throttle(clock)
    return clock, services, options


@contextlib.asynccontextmanager
async def control_running(workdir: Path, imap: Upstreamish, *, tls_ca: Path | None = None,
                          **setup: Any) -> AsyncIterator[RunningControl]:
    """The daemon with its control front on the running (pytest-asyncio) loop; talk to it
    with `RunningControl.async_client`. `setup`: the options of `_prepare`."""
    clock, services, options = _prepare(workdir, imap, **setup)
    front = ControlFront(services, **options)
    daemon = Daemon(services, [front])
    await daemon.start()
    running = RunningControl(front, services, clock, asyncio.get_running_loop(), tls_ca)
    try:
        yield running
    finally:
        await running.close_clients()
        await daemon.stop(2.0)


@contextlib.contextmanager
def running_control(workdir: Path, imap: Upstreamish, *, tls_ca: Path | None = None,
                    **setup: Any) -> Iterator[RunningControl]:
    """The daemon on a loop in a background thread, for blocking clients (the browser's
    Playwright sync API, schemathesis, the bench) that must not run on the daemon's loop."""
    clock, services, options = _prepare(workdir, imap, **setup)
    loop = event_loop.loop_factory()()  # the kind the daemon runs on
    thread = threading.Thread(target=loop.run_forever, name="control-daemon", daemon=True)
    thread.start()
    front: ControlFront | None = None
    daemon: Daemon | None = None
    try:
        async def make() -> ControlFront:
            return ControlFront(services, **options)

        front = asyncio.run_coroutine_threadsafe(make(), loop).result(30)
        daemon = Daemon(services, [front])
        asyncio.run_coroutine_threadsafe(daemon.start(), loop).result(30)
        yield RunningControl(front, services, clock, loop, tls_ca)
    finally:
        if daemon is not None:
            asyncio.run_coroutine_threadsafe(daemon.stop(2.0), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


# --- HTTP ------------------------------------------------------------------------------------


@dataclass
class Response:
    status: int
    headers: http.client.HTTPMessage | CIMultiDictProxy[str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    def header(self, name: str) -> str | None:
        return self.headers.get(name)

    def set_cookies(self) -> list[str]:
        if isinstance(self.headers, http.client.HTTPMessage):
            return self.headers.get_all("Set-Cookie") or []
        return list(self.headers.getall("Set-Cookie", []))


def _request_parts(
    default_auth: tuple[str, str] | None, cookies: Mapping[str, str], *, json_body: Any = None,
    form: Mapping[str, str | bytes | tuple[str, bytes]] | None = None,
    urlencoded: Mapping[str, str] | None = None, body: bytes | None = None,
    content_type: str | None = None, headers: Mapping[str, str] | None = None,
    auth: tuple[str, str] | None = None, use_auth: bool = True,
) -> tuple[bytes | None, dict[str, str]]:
    """The body and headers of a request (Basic auth, JSON / multipart / urlencoded body,
    cookies, then the caller's headers, which may replace any of them, Host included)."""
    all_headers: dict[str, str] = {}
    credentials = auth or (default_auth if use_auth else None)
    if credentials is not None:
        token = base64.b64encode(f"{credentials[0]}:{credentials[1]}".encode()).decode()
        all_headers["Authorization"] = f"Basic {token}"
    if json_body is not None:
        body = json.dumps(json_body).encode()
        content_type = "application/json"
    elif form is not None:
        body, content_type = multipart(form)
    elif urlencoded is not None:
        body = urllib.parse.urlencode(urlencoded).encode()
        content_type = "application/x-www-form-urlencoded"
    if content_type is not None:
        all_headers["Content-Type"] = content_type
    if cookies:
        all_headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in cookies.items())
    all_headers.update(headers or {})
    return body, all_headers


def _keep_cookies(cookies: dict[str, str], response: Response) -> None:
    for line in response.set_cookies():
        jar: SimpleCookie = SimpleCookie()
        jar.load(line)
        for name, morsel in jar.items():
            if morsel["max-age"] == "0" or "1970" in morsel["expires"]:
                cookies.pop(name, None)
            else:
                cookies[name] = morsel.value


def _csrf(page: str) -> str:
    marker = 'name="csrf" value="'
    start = page.index(marker) + len(marker)
    return page[start:page.index('"', start)]


def multipart(fields: Mapping[str, str | bytes | tuple[str, bytes]]) -> tuple[bytes, str]:
    """Encode form fields; a (filename, data) tuple is a file part."""
    boundary = "----smime-test-" + secrets.token_hex(8)
    parts: list[bytes] = []
    for name, value in fields.items():
        if isinstance(value, tuple):
            filename, data = value
            head = (f'Content-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
                    "Content-Type: application/octet-stream\r\n\r\n")
        else:
            data = value.encode("utf-8") if isinstance(value, str) else value
            head = f'Content-Disposition: form-data; name="{name}"\r\n\r\n'
        parts.append(f"--{boundary}\r\n".encode() + head.encode() + data + b"\r\n")
    body = b"".join(parts) + f"--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


@dataclass
class Client:
    """Blocking HTTP/1.1 client with a cookie jar (name -> value) and optional Basic auth."""

    base_url: str
    auth: tuple[str, str] | None = None
    cafile: Path | None = None
    cookies: dict[str, str] = field(default_factory=dict)
    timeout: float = 60.0
    keep_alive: bool = False
    _conn: http.client.HTTPConnection | None = None

    def _connection(self) -> http.client.HTTPConnection:
        if self._conn is None:
            parts = urllib.parse.urlsplit(self.base_url)
            host, port = parts.hostname or "127.0.0.1", parts.port
            if parts.scheme == "https":
                context = ssl.create_default_context(
                    cafile=str(self.cafile) if self.cafile else None)
                self._conn = http.client.HTTPSConnection(host, port, timeout=self.timeout,
                                                         context=context)
            else:
                self._conn = http.client.HTTPConnection(host, port, timeout=self.timeout)
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def request(self, method: str, path: str, **kwargs: Any) -> Response:
        body, all_headers = _request_parts(self.auth, self.cookies, **kwargs)
        conn = self._connection()
        try:
            conn.request(method, path, body=body, headers=all_headers)
            raw = conn.getresponse()
            data = raw.read()
        except (http.client.HTTPException, ConnectionError):
            self.close()
            raise
        if not self.keep_alive or raw.getheader("Connection", "").lower() == "close":
            self.close()
        response = Response(raw.status, raw.headers, data)
        _keep_cookies(self.cookies, response)
        return response

    def get(self, path: str, **kwargs: Any) -> Response:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> Response:
        return self.request("POST", path, **kwargs)

    # --- the web page -------------------------------------------------------------------

    def csrf(self, page: str) -> str:
        return _csrf(page)

    def web_login(self, user: str, password: str, domain: str = "") -> Response:
        page = self.get("/", use_auth=False)
        token = self.csrf(page.text)
        return self.post("/login", urlencoded={"csrf": token, "user": user,
                                               "password": password, "domain": domain},
                         use_auth=False)


@dataclass
class AsyncClient:
    """`Client` on the running loop (aiohttp): the same calls, awaited. Its own cookie jar
    (aiohttp's is switched off) and any header may be set, Host included."""

    base_url: str
    auth: tuple[str, str] | None = None
    cafile: Path | None = None
    cookies: dict[str, str] = field(default_factory=dict)
    timeout: float = 60.0
    _session: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def request(self, method: str, path: str, **kwargs: Any) -> Response:
        body, headers = _request_parts(self.auth, self.cookies, **kwargs)
        if self._session is None:
            context: ssl.SSLContext | bool = False
            if self.base_url.startswith("https:"):
                context = ssl.create_default_context(
                    cafile=str(self.cafile) if self.cafile else None)
            self._session = aiohttp.ClientSession(
                cookie_jar=aiohttp.DummyCookieJar(),
                connector=aiohttp.TCPConnector(ssl=context, force_close=True),
                timeout=aiohttp.ClientTimeout(total=self.timeout))
        async with self._session.request(
                method, self.base_url + path, data=body, headers=headers,
                allow_redirects=False, skip_auto_headers=("Content-Type",)) as raw:
            data = await raw.read()
            response = Response(raw.status, raw.headers, data)
        _keep_cookies(self.cookies, response)
        return response

    async def get(self, path: str, **kwargs: Any) -> Response:
        return await self.request("GET", path, **kwargs)

    async def post(self, path: str, **kwargs: Any) -> Response:
        return await self.request("POST", path, **kwargs)

    def csrf(self, page: str) -> str:
        return _csrf(page)

    async def web_login(self, user: str, password: str, domain: str = "") -> Response:
        page = await self.get("/", use_auth=False)
        token = self.csrf(page.text)
        return await self.post("/login", urlencoded={"csrf": token, "user": user,
                                                     "password": password, "domain": domain},
                               use_auth=False)
