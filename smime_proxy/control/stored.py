"""Folder operations of the JSON API (issue 11): encrypt or decrypt a user's stored
messages in place, in the background, with their progress as a resource.

`POST /api/v1/store` (action, mailbox, optional uids, the Secure Mail Password) unlocks the
key as `/api/v1/unlock` does and starts `at_rest.operation.run_operation` with the mail
login of the request (never stored: it lives in the task until the task ends). `GET
/api/v1/store/{id}` says how far it is; `DELETE` cancels it between two rounds. The same
request made again after a restart resumes (the journal is in `data_dir/at-rest`).

May import: at_rest, config, errors, services, control, aiohttp, stdlib.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from dataclasses import dataclass, field
from typing import Any, Literal

from smime_proxy.at_rest.convert import Action, Progress
from smime_proxy.at_rest.operation import builder, run_operation
from smime_proxy.control.operations import Refusal
from smime_proxy.errors import SmimeProxyError
from smime_proxy.services import Services

log = logging.getLogger("smime_proxy.control")
MAX_KEPT = 100  # finished operations remembered per daemon

State = Literal["running", "done", "failed", "cancelled"]


@dataclass
class Operation:
    id: str
    user: str
    action: Action
    mailbox: str
    state: State = "running"
    progress: Progress = field(default_factory=Progress)
    error: str | None = None
    cancel: bool = False
    task: asyncio.Task[None] | None = field(default=None, repr=False)

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "action": self.action, "mailbox": self.mailbox,
                "state": self.state, "total": self.progress.total,
                "done": self.progress.done, "skipped": self.progress.skipped,
                "error": self.error}


class StoredOperations:
    def __init__(self, services: Services) -> None:
        self.services = services
        self._operations: dict[str, Operation] = {}

    def start(self, user: str, login: str, mail_password: str, action: str, mailbox: str,
              uids: list[int] | None) -> Operation:
        """Start (the caller unlocked `user`'s key); the key is used through its agent."""
        if action not in ("encrypt", "decrypt"):
            raise Refusal(400, "action must be encrypt or decrypt")
        chosen: Action = "encrypt" if action == "encrypt" else "decrypt"
        services = self.services
        now = services.now()
        mail = services.secure_mail
        try:
            build = builder(chosen, mail.agent_for(user, now), mail.certificate(user),
                            services.trust_roots, now)
        except SmimeProxyError as exc:
            raise Refusal(409, str(exc)) from None
        operation = Operation(secrets.token_urlsafe(12), user, chosen, mailbox)

        def progress(state: Progress) -> None:
            operation.progress = state

        async def work() -> None:
            try:
                operation.progress = await run_operation(
                    services.config.upstream.imap, services.config.data_dir / "at-rest",
                    login, mail_password, mailbox, operation.action, uids, build,
                    progress=progress, cancelled=lambda: operation.cancel)
                operation.state = "cancelled" if operation.progress.cancelled else "done"
            except SmimeProxyError as exc:
                operation.state, operation.error = "failed", str(exc)
            except Exception as exc:  # logged; the state says it failed
                log.exception("store operation failed", extra={"user": user})
                operation.state, operation.error = "failed", type(exc).__name__
            log.info("store operation ended", extra={"user": user, "state": operation.state})

        self._forget_finished()
        operation.task = asyncio.create_task(work(), name=f"store-{operation.id}")
        self._operations[operation.id] = operation
        return operation

    def get(self, user: str, ident: str) -> Operation:
        operation = self._operations.get(ident)
        if operation is None or operation.user != user:
            raise Refusal(404, "no such operation")
        return operation

    def of_user(self, user: str) -> list[Operation]:
        """The user's operations, the newest first."""
        return [o for o in reversed(self._operations.values()) if o.user == user]

    def _forget_finished(self) -> None:
        finished = [k for k, o in self._operations.items() if o.state != "running"]
        for key in finished[: max(0, len(finished) - MAX_KEPT)]:
            del self._operations[key]

    async def close(self) -> None:
        tasks = [o.task for o in self._operations.values() if o.task is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
