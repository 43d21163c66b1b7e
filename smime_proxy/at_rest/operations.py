"""The daemon's folder operations (issue 11): encrypt or decrypt a user's stored messages
in place, in the background, with their progress, started from the JSON API, the Secure
Mail page or an IMAP keyword a mail client sets.

`FolderOperations.start` (the API and the page: a folder, or some UIDs) and
`FolderOperations.request_by_keyword` (the IMAP front: a client set `$SmimeEncrypt` or
`$SmimeDecrypt` on messages) run `at_rest.operation` with the user's mail login, which is
never stored: it lives in the task until the task ends. The user's key must be unlocked
when the operation starts (`KeyLocked` otherwise); it is used through its agent. Keyword
requests of one (user, folder, action) run one at a time: a request made while one runs
makes it look again once it ends. The same request made again after a restart resumes (the
journals are in `data_dir/at-rest`). Operations stop with the daemon (`close`).

May import: at_rest, config, errors, services, stdlib.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from smime_proxy.at_rest.convert import Build, Progress
from smime_proxy.at_rest.keywords import Action
from smime_proxy.at_rest.operation import builder, run_operation, run_requested
from smime_proxy.errors import InputError, SmimeProxyError
from smime_proxy.services import Services

log = logging.getLogger("smime_proxy.at_rest")
MAX_KEPT = 100  # finished operations remembered per daemon

State = Literal["running", "done", "failed", "cancelled"]
Origin = Literal["request", "keyword"]


@dataclass
class Operation:
    id: str
    user: str
    action: Action
    mailbox: str
    origin: Origin = "request"
    state: State = "running"
    progress: Progress = field(default_factory=Progress)
    error: str | None = None
    cancel: bool = False
    again: bool = False  # a keyword request came while it ran: look once more
    task: asyncio.Task[None] | None = field(default=None, repr=False)

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "action": self.action, "mailbox": self.mailbox,
                "origin": self.origin, "state": self.state, "total": self.progress.total,
                "done": self.progress.done, "skipped": self.progress.skipped,
                "error": self.error}


def chosen_action(action: str) -> Action:
    if action == "encrypt":
        return "encrypt"
    if action == "decrypt":
        return "decrypt"
    raise InputError("action must be encrypt or decrypt")


class FolderOperations:
    """Every folder operation of the daemon (shared by the control endpoint and the IMAP
    front, built by the composition root)."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self._operations: dict[str, Operation] = {}

    def _build(self, user: str, action: Action) -> Build:
        """The per-message step from the user's unlocked key (`KeyLocked` if it is not)."""
        services = self.services
        now = services.now()
        mail = services.secure_mail
        return builder(action, mail.agent_for(user, now), mail.certificate(user),
                       services.trust_roots, now)

    def start(self, user: str, login: str, mail_password: str, action: str, mailbox: str,
              uids: list[int] | None) -> Operation:
        """Convert `uids` of `mailbox` (None: every message in the starting form)."""
        chosen = chosen_action(action)
        build = self._build(user, chosen)
        operation = Operation(secrets.token_urlsafe(12), user, chosen, mailbox)
        config = self.services.config

        async def work(progress: Callable[[Progress], None]) -> Progress:
            return await run_operation(
                config.upstream.imap, config.data_dir / "at-rest", login, mail_password,
                mailbox, chosen, uids, build, progress=progress,
                cancelled=lambda: operation.cancel)

        return self._launch(operation, work)

    def request_by_keyword(self, user: str, login: str, mail_password: str, action: Action,
                           mailbox: str) -> Operation:
        """Convert the messages of `mailbox` that carry the action's keyword, and take the
        keyword off every one of them (converted or not)."""
        for operation in self._operations.values():
            if (operation.state == "running" and operation.origin == "keyword"
                    and (operation.user, operation.mailbox, operation.action)
                    == (user, mailbox, action)):
                operation.again = True
                return operation
        build = self._build(user, action)
        operation = Operation(secrets.token_urlsafe(12), user, action, mailbox,
                              origin="keyword")
        config = self.services.config

        async def work(progress: Callable[[Progress], None]) -> Progress:
            total = Progress()
            while True:
                operation.again = False
                state = await run_requested(
                    config.upstream.imap, config.data_dir / "at-rest", login, mail_password,
                    mailbox, action, build, progress=progress,
                    cancelled=lambda: operation.cancel)
                total.total += state.total
                total.done += state.done
                total.skipped += state.skipped
                total.cancelled = state.cancelled
                if not operation.again or operation.cancel:
                    return total

        return self._launch(operation, work)

    def _launch(self, operation: Operation,
                work: Callable[[Callable[[Progress], None]], Awaitable[Progress]]
                ) -> Operation:
        def progress(state: Progress) -> None:
            operation.progress = state

        async def run() -> None:
            try:
                operation.progress = await work(progress)
                operation.state = "cancelled" if operation.progress.cancelled else "done"
            except SmimeProxyError as exc:
                operation.state, operation.error = "failed", str(exc)
            except Exception as exc:  # logged; the state says it failed
                log.exception("store operation failed", extra={"user": operation.user})
                operation.state, operation.error = "failed", type(exc).__name__
            log.info("store operation ended",
                     extra={"user": operation.user, "state": operation.state,
                            "origin": operation.origin})

        self._forget_finished()
        operation.task = asyncio.create_task(run(), name=f"store-{operation.id}")
        self._operations[operation.id] = operation
        return operation

    def get(self, user: str, ident: str) -> Operation | None:
        operation = self._operations.get(ident)
        return operation if operation is not None and operation.user == user else None

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
