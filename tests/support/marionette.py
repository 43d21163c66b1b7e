"""A small blocking Marionette client: enough of the protocol to drive Thunderbird's chrome.

Marionette (Gecko's remote protocol, started with ``--marionette`` on the port of the pref
``marionette.port``) frames every message as ``<decimal length>:<JSON>``. On connect the
server sends ``{"applicationType": "gecko", "marionetteProtocol": 3}``; a command is
``[0, id, name, params]`` and its answer ``[1, id, error, result]`` (error is null or
``{"error", "message", "stacktrace"}``). Commands used here: ``WebDriver:NewSession``,
``Marionette:SetContext`` (``chrome`` = privileged JS in the browser window),
``WebDriver:ExecuteScript`` / ``WebDriver:ExecuteAsyncScript`` and
``WebDriver:TakeScreenshot``, ``WebDriver:DeleteSession``, ``Marionette:Quit``.
"""

from __future__ import annotations

import base64
import json
import socket
import time
from collections.abc import Callable
from typing import Any


class MarionetteError(Exception):
    """The server answered a command with an error (``error``: the WebDriver error code)."""

    def __init__(self, command: str, error: dict[str, Any]) -> None:
        self.error = str(error.get("error", "unknown error"))
        self.message = str(error.get("message", ""))
        self.stacktrace = str(error.get("stacktrace", ""))
        super().__init__(f"{command}: {self.error}: {self.message}")


class Marionette:
    """One connection to a Marionette server. Not thread-safe."""

    def __init__(self, sock: socket.socket, timeout: float) -> None:
        self._sock = sock
        self._buffer = b""
        self._next_id = 0
        self.timeout = timeout
        self.hello = self._receive()

    @classmethod
    def connect(cls, host: str, port: int, *, deadline: float, timeout: float = 60.0,
                alive: Callable[[], bool] | None = None) -> Marionette:
        """Connect, retrying until ``deadline`` (``time.monotonic()``) while the server starts.
        ``alive()``, if given, is asked between attempts; when it says False, give up."""
        last: OSError | None = None
        while time.monotonic() < deadline:
            if alive is not None and not alive():
                break
            try:
                sock = socket.create_connection((host, port), timeout=2.0)
            except OSError as exc:
                last = exc
                time.sleep(0.2)
                continue
            sock.settimeout(timeout)
            try:
                return cls(sock, timeout)
            except (OSError, ValueError) as exc:  # connected too early: closed before hello
                sock.close()
                last = OSError(str(exc))
                time.sleep(0.2)
        raise ConnectionError(f"Marionette at {host}:{port} did not answer ({last})")

    def close(self) -> None:
        self._sock.close()

    def set_timeout(self, seconds: float) -> None:
        """How long to wait for any one answer (the socket's timeout)."""
        self.timeout = seconds
        self._sock.settimeout(seconds)

    # --- framing ------------------------------------------------------------------------------

    def _receive(self) -> Any:
        while True:
            head, sep, rest = self._buffer.partition(b":")
            if sep:
                length = int(head)
                if len(rest) >= length:
                    self._buffer = rest[length:]
                    return json.loads(rest[:length])
            elif len(self._buffer) > 20:
                raise ValueError(f"bad Marionette frame {self._buffer[:40]!r}")
            chunk = self._sock.recv(65536)
            if not chunk:
                raise ConnectionError("Marionette closed the connection")
            self._buffer += chunk

    def command(self, name: str, params: dict[str, Any] | None = None) -> Any:
        """Send one command and return its ``value`` (or the whole result when it has none)."""
        self._next_id += 1
        msg_id = self._next_id
        data = json.dumps([0, msg_id, name, params or {}]).encode("utf-8")
        self._sock.sendall(str(len(data)).encode("ascii") + b":" + data)
        while True:
            answer = self._receive()
            if isinstance(answer, list) and len(answer) == 4 and answer[1] == msg_id:
                break
        _, _, error, result = answer
        if error:
            raise MarionetteError(name, error)
        if isinstance(result, dict) and set(result) == {"value"}:
            return result["value"]
        return result

    # --- conveniences -------------------------------------------------------------------------

    def start_chrome_session(self) -> None:
        """A session in the chrome context. Prompts (alerts) are left alone ("ignore"): the
        caller reads them; by default Marionette would dismiss them before each command."""
        self.command("WebDriver:NewSession",
                     {"unhandledPromptBehavior": "ignore"})
        self.command("Marionette:SetContext", {"value": "chrome"})

    def execute(self, script: str, *args: Any) -> Any:
        """Run ``script`` (a function body; ``arguments`` holds ``args``) and return its value
        (the session's script timeout applies: 30 s unless ``WebDriver:SetTimeouts``)."""
        return self.command("WebDriver:ExecuteScript", {
            "script": script, "args": list(args), "sandbox": "system", "newSandbox": False,
        })

    def execute_async(self, script: str, *args: Any, timeout_ms: int = 30000) -> Any:
        """Run ``script``; it ends by calling ``arguments[arguments.length - 1](value)``."""
        self.command("WebDriver:SetTimeouts", {"script": timeout_ms})
        return self.command("WebDriver:ExecuteAsyncScript", {
            "script": script, "args": list(args), "sandbox": "system", "newSandbox": False,
        })

    def screenshot_png(self) -> bytes:
        """A PNG of the current chrome window (the whole Thunderbird window)."""
        data = self.command("WebDriver:TakeScreenshot", {"full": False, "hash": False})
        return base64.b64decode(data)

    def quit(self) -> None:
        """Ask the application to quit (answers before it exits)."""
        self.command("Marionette:Quit", {"flags": ["eForceQuit"]})
