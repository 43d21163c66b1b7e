"""The key agent as the daemon's child (config `agent: {socket: PATH, start: true}`): a `Front`
of the daemon that starts `smime-proxy agent --socket PATH` before the mail fronts, starts it
again if it dies (its unlocks are gone then: users see the locked behaviour until they
unlock again), and stops it last.

May import: errors, stdlib.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
from pathlib import Path

from smime_proxy.errors import ConfigError

log = logging.getLogger("smime_proxy.agent")
READY_SECONDS = 15.0
RESTART_DELAY = 1.0


class AgentChild:
    """Start, watch and stop the key agent process."""

    name = "agent"

    def __init__(self, socket_path: Path) -> None:
        self.socket_path = socket_path
        self.process: asyncio.subprocess.Process | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._stopping = False

    async def _spawn(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()
        self.process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "smime_proxy", "agent", "--socket", str(self.socket_path),
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
            env={**os.environ, "PYTHONUNBUFFERED": "1"})
        deadline = asyncio.get_running_loop().time() + READY_SECONDS
        while not self.socket_path.exists():
            if self.process.returncode is not None:
                raise ConfigError(f"agent: the key agent exited at start (status "
                                  f"{self.process.returncode}); socket {self.socket_path}")
            if asyncio.get_running_loop().time() > deadline:
                raise ConfigError(f"agent: the key agent did not listen on "
                                  f"{self.socket_path} within {READY_SECONDS:.0f} s")
            await asyncio.sleep(0.05)
        log.info("key agent started", extra={"pid": self.process.pid})

    async def start(self) -> None:
        await self._spawn()
        self._watcher = asyncio.create_task(self._watch(), name="agent-watch")

    async def _watch(self) -> None:
        while not self.stopping():
            process = self.process
            assert process is not None
            status = await process.wait()
            if self.stopping():
                return
            log.warning("the key agent exited: every key is locked; starting it again",
                        extra={"status": status})
            await asyncio.sleep(RESTART_DELAY)
            try:
                await self._spawn()
            except ConfigError as exc:
                log.error("the key agent cannot be started again: %s", exc)
                return

    def stopping(self) -> bool:
        return self._stopping

    async def stop(self, grace: float) -> None:
        self._stopping = True
        process = self.process
        if process is not None and process.returncode is None:
            process.terminate()
            try:
                await asyncio.wait_for(process.wait(), max(grace, 1.0))
            except TimeoutError:
                process.kill()
                await process.wait()
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
