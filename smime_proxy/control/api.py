"""The JSON API under /api/v1 (described by /api/v1/openapi.json): HTTP Basic with the mail
account, JSON bodies (multipart for uploaded files), the operations of `KeyOperations`.

May import: at_rest, control, aiohttp, stdlib.
"""

from __future__ import annotations

from aiohttp import web

from smime_proxy.at_rest.listing import find_messages, folder_counts
from smime_proxy.at_rest.operations import FolderOperations, Operation
from smime_proxy.control.guard import RequestGuard
from smime_proxy.control.operations import (
    KeyOperations,
    Refusal,
    read_mail_store,
    start_operation,
    summary_json,
)
from smime_proxy.control.requests import (
    form_field,
    form_file,
    read_form,
    read_json,
    remote,
    text,
)

EXPORT_FILENAME = "CertAndKey.pfx"


def pfx_response(data: bytes) -> web.Response:
    return web.Response(body=data, headers={
        "Content-Type": "application/x-pkcs12",
        "Content-Disposition": f'attachment; filename="{EXPORT_FILENAME}"',
    })


class JsonApi:
    def __init__(self, guard: RequestGuard, operations: KeyOperations,
                 stored: FolderOperations) -> None:
        self.guard = guard
        self.ops = operations
        self.stored = stored

    def add_routes(self, router: web.UrlDispatcher) -> None:
        router.add_get("/api/v1/status", self.status)
        router.add_post("/api/v1/unlock", self.unlock)
        router.add_post("/api/v1/lock", self.lock)
        router.add_post("/api/v1/mail-unlock", self.mail_unlock)
        router.add_post("/api/v1/encryption-method", self.encryption_method)
        router.add_post("/api/v1/store-encrypted", self.store_encrypted)
        router.add_post("/api/v1/import", self.import_pkcs12)
        router.add_post("/api/v1/generate", self.generate)
        router.add_post("/api/v1/export", self.export)
        router.add_post("/api/v1/password", self.password)
        router.add_post("/api/v1/remove", self.remove)
        router.add_get("/api/v1/contacts", self.contacts)
        router.add_post("/api/v1/contacts", self.contacts_add)
        router.add_delete("/api/v1/contacts/{address}", self.contacts_remove)
        router.add_get("/api/v1/folders", self.folders)
        router.add_get("/api/v1/folders/messages", self.folder_messages)
        router.add_post("/api/v1/store", self.store_start)
        router.add_get("/api/v1/store/{id}", self.store_get)
        router.add_delete("/api/v1/store/{id}", self.store_cancel)

    # --- stored messages (issue 11) --------------------------------------------------------

    async def folders(self, request: web.Request) -> web.Response:
        """The user's folders with their counts of encrypted and plain messages."""
        await self.guard.basic_user(request)
        found = await read_mail_store(folder_counts(
            self.ops.services.config.upstream.imap, self.guard.basic_login(request),
            self.guard.basic_password(request)))
        return web.json_response({"folders": [f.to_json() for f in found]})

    async def folder_messages(self, request: web.Request) -> web.Response:
        """Messages of a folder found by stored subject and sender (the newest first)."""
        await self.guard.basic_user(request)
        query = request.query
        found = await read_mail_store(find_messages(
            self.ops.services.config.upstream.imap, self.guard.basic_login(request),
            self.guard.basic_password(request), text(query.get("mailbox"), "mailbox"),
            query.get("subject", ""), query.get("from", "")))
        return web.json_response({"messages": [m.to_json() for m in found]})

    async def store_start(self, request: web.Request) -> web.Response:
        """Encrypt or decrypt messages of a folder in place, in the background (202)."""
        user = await self.guard.basic_user(request)
        body = await read_json(request)
        action = text(body.get("action"), "action")
        mailbox = text(body.get("mailbox"), "mailbox")
        uids = body.get("uids")
        if uids is not None and (not isinstance(uids, list) or not all(
                isinstance(u, int) and not isinstance(u, bool) and 0 < u < 2**32
                for u in uids)):
            raise Refusal(400, "uids: expected a list of message UIDs")
        if action not in ("encrypt", "decrypt"):
            raise Refusal(400, "action must be encrypt or decrypt")
        await self.ops.run(self.ops.unlock(user, remote(request),
                                           text(body.get("password"), "password")))
        operation = start_operation(self.stored, user, self.guard.basic_login(request),
                                    self.guard.basic_password(request), action, mailbox, uids)
        return web.json_response(operation.to_json(), status=202)

    def _operation(self, user: str, request: web.Request) -> Operation:
        operation = self.stored.get(user, request.match_info["id"])
        if operation is None:
            raise Refusal(404, "no such operation")
        return operation

    async def store_get(self, request: web.Request) -> web.Response:
        user = await self.guard.basic_user(request)
        return web.json_response(self._operation(user, request).to_json())

    async def store_cancel(self, request: web.Request) -> web.Response:
        """Stop between two rounds (what was done stays done)."""
        user = await self.guard.basic_user(request)
        operation = self._operation(user, request)
        operation.cancel = True
        return web.json_response(operation.to_json())

    async def status(self, request: web.Request) -> web.Response:
        user = await self.guard.basic_user(request)
        return web.json_response(self.ops.status(user))

    async def unlock(self, request: web.Request) -> web.Response:
        user = await self.guard.basic_user(request)
        body = await read_json(request)
        status = await self.ops.run(self.ops.unlock(user, remote(request),
                                                    text(body.get("password"), "password")))
        return web.json_response(status)

    async def mail_unlock(self, request: web.Request) -> web.Response:
        """Turn unlocking by mail login on or off. The mail password to wrap the copy under
        is the one this request logged in with (checked by the upstream just now)."""
        user = await self.guard.basic_user(request)
        body = await read_json(request)
        enable = body.get("enable")
        if not isinstance(enable, bool):
            raise Refusal(400, "enable: expected true or false")
        status = await self.ops.run(self.ops.set_mail_unlock(
            user, remote(request), enable,
            text(body.get("password"), "password") if enable else "",
            self.guard.basic_password(request) if enable else ""))
        return web.json_response(status)

    async def encryption_method(self, request: web.Request) -> web.Response:
        user = await self.guard.basic_user(request)
        body = await read_json(request)
        return web.json_response(self.ops.set_encryption_method(
            user, text(body.get("method"), "method")))

    async def store_encrypted(self, request: web.Request) -> web.Response:
        user = await self.guard.basic_user(request)
        body = await read_json(request)
        enable = body.get("enable")
        if not isinstance(enable, bool):
            raise Refusal(400, "enable: expected true or false")
        return web.json_response(self.ops.set_store_encrypted(user, enable))

    async def lock(self, request: web.Request) -> web.Response:
        user = await self.guard.basic_user(request)
        return web.json_response(self.ops.lock(user))

    async def import_pkcs12(self, request: web.Request) -> web.Response:
        user = await self.guard.basic_user(request)
        form = await read_form(request)
        status = await self.ops.run(self.ops.import_pkcs12(
            user, form_file(form, "file"), form_field(form, "file_password", required=False),
            form_field(form, "password"), form_field(form, "password2")))
        return web.json_response(status, status=201)

    async def generate(self, request: web.Request) -> web.Response:
        user = await self.guard.basic_user(request)
        body = await read_json(request)
        status = await self.ops.run(self.ops.generate(
            user, text(body.get("email"), "email", required=False),
            text(body.get("key_type"), "key_type", required=False) or "rsa2048",
            text(body.get("password"), "password"), text(body.get("password2"), "password2")))
        return web.json_response(status, status=201)

    async def export(self, request: web.Request) -> web.Response:
        user = await self.guard.basic_user(request)
        body = await read_json(request)
        legacy = body.get("legacy", False)
        if not isinstance(legacy, bool):
            raise Refusal(400, "legacy must be true or false")
        data = await self.ops.run(self.ops.export(
            user, remote(request), text(body.get("password"), "password"),
            text(body.get("export_password"), "export_password"),
            text(body.get("export_password2"), "export_password2"), legacy))
        return pfx_response(data)

    async def password(self, request: web.Request) -> web.Response:
        user = await self.guard.basic_user(request)
        body = await read_json(request)
        status = await self.ops.run(self.ops.change_password(
            user, remote(request), text(body.get("old_password"), "old_password"),
            text(body.get("new_password"), "new_password"),
            text(body.get("new_password2"), "new_password2")))
        return web.json_response(status)

    async def remove(self, request: web.Request) -> web.Response:
        user = await self.guard.basic_user(request)
        form = await read_form(request)
        status = await self.ops.run(self.ops.remove(
            user, remote(request), form_file(form, "file"),
            form_field(form, "file_password", required=False)))
        return web.json_response(status)

    async def contacts(self, request: web.Request) -> web.Response:
        user = await self.guard.basic_user(request)
        entries = self.ops.contacts(user)
        return web.json_response({"contacts": [summary_json(s) for s, _ in entries]})

    async def contacts_add(self, request: web.Request) -> web.Response:
        user = await self.guard.basic_user(request)
        if request.content_type.startswith("multipart/"):
            data = form_file(await read_form(request), "file")
        else:
            data = await request.read()
        added = await self.ops.run(self.ops.contacts_add(user, data))
        return web.json_response({"contacts": [summary_json(s) for s in added]}, status=201)

    async def contacts_remove(self, request: web.Request) -> web.Response:
        user = await self.guard.basic_user(request)
        count = self.ops.contacts_remove(user, request.match_info["address"])
        return web.json_response({"removed": count})
