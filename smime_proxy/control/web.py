"""The "Secure Mail" web page: login form (mail credentials), a session cookie (HttpOnly,
SameSite=Strict, Secure and `__Host-` under TLS), a CSRF token in every form, and one POST
route per action of `KeyOperations`, each answered by a redirect to the page with a message.

May import: at_rest, errors, keystore, control, aiohttp, stdlib.
"""

from __future__ import annotations

import hmac
import logging
import secrets
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from aiohttp import web

from smime_proxy.at_rest.listing import find_messages, folder_counts
from smime_proxy.at_rest.operations import FolderOperations
from smime_proxy.control import pages
from smime_proxy.control.api import pfx_response
from smime_proxy.control.auth import Session, Sessions
from smime_proxy.control.guard import RequestGuard
from smime_proxy.control.operations import (
    KeyOperations,
    Refusal,
    read_mail_store,
    start_operation,
)
from smime_proxy.control.requests import Form, form_field, form_file, read_form, remote
from smime_proxy.errors import InputError
from smime_proxy.keystore.certs import normalize_address

log = logging.getLogger("smime_proxy.control")

Action = Callable[[web.Request, Session, Mapping[str, Any]], Awaitable[str]]
CSRF_FAILED = "the form is stale or forged (CSRF check failed): reload the page"


def _redirect(location: str = "/") -> web.Response:
    return web.Response(status=303, headers={"Location": location})


class WebPage:
    def __init__(self, guard: RequestGuard, operations: KeyOperations, *, tls: bool,
                 stored: FolderOperations | None = None) -> None:
        self.guard = guard
        self.ops = operations
        self.stored = stored
        self.services = operations.services
        self.tls = tls
        self.sessions = Sessions(self.services.now)
        self.cookie_name = "__Host-smime-session" if tls else "smime-session"
        self.pre_cookie = "__Host-smime-pre" if tls else "smime-pre"

    def add_routes(self, router: web.UrlDispatcher) -> None:
        router.add_get("/", self.index)
        router.add_post("/login", self.login)
        router.add_post("/logout", self.logout)
        for path, action in (
            ("/unlock", self._unlock), ("/lock", self._lock),
            ("/mail-unlock", self._mail_unlock),
            ("/encryption-method", self._encryption_method),
            ("/store-encrypted", self._store_encrypted),
            ("/store", self._store), ("/folders", self._folders), ("/find", self._find),
            ("/import", self._import), ("/generate", self._generate),
            ("/password", self._password), ("/remove", self._remove),
            ("/contacts/add", self._contacts_add),
            ("/contacts/remove", self._contacts_remove),
        ):
            router.add_post(path, self._action(action))
        router.add_post("/export", self.export)

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
        status = self.ops.status(user)
        mail = self.services.secure_mail
        certificate = mail.key_info(user).certificate if status["key_present"] else None
        unlock = mail.unlock_state(user, self.services.now())
        domain = session.domain or self.ops.mail_domain
        default_email = user if "@" in user else (f"{user}@{domain}" if domain else "")
        flash, session.flash = session.flash, []
        state = pages.PageState(
            user=user, csrf=session.csrf, certificate=certificate,
            unlocked=not status["locked"], expires_at=unlock.expires,
            seconds_left=status["seconds_left"], absolute_expires_at=unlock.absolute_expires,
            default_email=default_email,
            contacts=self.ops.contacts(user), flash=flash,
            can_generate=mail.ca is not None,
            mail_unlock=(status["mail_unlock"]["enabled"] if status["mail_unlock"]["allowed"]
                         else None),
            encryption_method=status["encryption_method"],
            store_encrypted=status["store_encrypted"],
            operations=[o.to_json() for o in self.stored.of_user(user)] if self.stored else [],
            folders=session.folders, found=session.found,
        )
        return web.Response(text=pages.main_page(state), content_type="text/html")

    async def index(self, request: web.Request) -> web.Response:
        session = self._session(request)
        if session is None:
            return self._login_response(request)
        return self._render(session)

    async def login(self, request: web.Request) -> web.Response:
        form = await read_form(request)
        token = request.cookies.get(self.pre_cookie, "")
        sent = form.get("csrf")
        if not token or not isinstance(sent, str) or not hmac.compare_digest(
                sent.encode("utf-8"), token.encode("utf-8")):
            self.guard.metrics.failures.labels("csrf").inc()
            raise Refusal(403, CSRF_FAILED)
        user = form_field(form, "user", required=False)
        password = form_field(form, "password", required=False)
        domain = form_field(form, "domain", required=False).strip().lower() or None
        if domain is not None:
            try:
                normalize_address(f"x@{domain}")
            except InputError:
                return self._login_response(request, "that mail domain is not valid", 400,
                                            user)
        try:
            await self.guard.check_credentials(user, password, remote(request))
        except Refusal as exc:
            return self._login_response(request, exc.message, exc.status, user)
        session = self.sessions.create(self.guard.accounts.user(user), domain)
        log.info("web login", extra={"user": user, "remote": remote(request)})
        response = _redirect()
        response.set_cookie(self.cookie_name, session.id, **self._cookie_args())
        response.del_cookie(self.pre_cookie, path="/")
        return response

    async def _form(self, request: web.Request) -> tuple[Session, Form]:
        session = self._session(request)
        form = await read_form(request)
        sent = form.get("csrf")
        if session is None:
            raise Refusal(403, "you are not logged in (or the session expired): log in again")
        if not isinstance(sent, str) or not hmac.compare_digest(
                sent.encode("utf-8"), session.csrf.encode("utf-8")):
            self.guard.metrics.failures.labels("csrf").inc()
            raise Refusal(403, CSRF_FAILED)
        return session, form

    async def logout(self, request: web.Request) -> web.Response:
        session, _ = await self._form(request)
        self.services.secure_mail.lock(session.user)
        self.sessions.drop(session.id)
        log.info("web logout", extra={"user": session.user})
        response = _redirect()
        response.del_cookie(self.cookie_name, path="/")
        return response

    def _action(self, action: Action) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def handler(request: web.Request) -> web.Response:
            session, form = await self._form(request)
            try:
                message = await self.ops.run(action(request, session, form))
                session.flash.append(("ok", message))
            except Refusal as exc:
                if exc.status >= 500:
                    raise
                session.flash.append(("error", exc.message))
            return _redirect()
        return handler

    async def _unlock(self, request: web.Request, session: Session,
                      form: Mapping[str, Any]) -> str:
        await self.ops.unlock(session.user, remote(request), form_field(form, "password"))
        return "Secure Mail is unlocked."

    async def _mail_unlock(self, request: web.Request, session: Session,
                           form: Mapping[str, Any]) -> str:
        if form_field(form, "enable", required=False) != "1":
            await self.ops.set_mail_unlock(session.user, remote(request), False, "", "")
            return "Your mail login no longer unlocks Secure Mail."
        mail_password = form_field(form, "mail_password")
        # the copy must open at the next mail login: the upstream checks the password now
        await self.guard.check_credentials(session.user, mail_password, remote(request))
        await self.ops.set_mail_unlock(session.user, remote(request), True,
                                       form_field(form, "password"), mail_password)
        return "Your mail login now unlocks Secure Mail."

    async def _lock(self, request: web.Request, session: Session,
                    form: Mapping[str, Any]) -> str:
        self.ops.lock(session.user)
        return "Secure Mail is locked."

    async def _encryption_method(self, request: web.Request, session: Session,
                                 form: Mapping[str, Any]) -> str:
        status = self.ops.set_encryption_method(session.user, form_field(form, "method"))
        return f"Encryption Method: {status['encryption_method']}."

    async def _store_encrypted(self, request: web.Request, session: Session,
                               form: Mapping[str, Any]) -> str:
        wanted = form_field(form, "enable") == "1"
        self.ops.set_store_encrypted(session.user, wanted)
        return ("New plain mail will be stored encrypted." if wanted
                else "New mail is stored as it arrives.")

    async def _store(self, request: web.Request, session: Session,
                     form: Mapping[str, Any]) -> str:
        """Encrypt or decrypt a folder in place (issue 11): the mail password does the IMAP
        work and is checked first; the Secure Mail Password unlocks the key."""
        if self.stored is None:
            raise Refusal(404, "folder operations are not available here")
        mailbox, action = form_field(form, "mailbox"), form_field(form, "action")
        uids = _uids(form)
        mail_password = form_field(form, "mail_password")
        await self.guard.check_credentials(session.user, mail_password, remote(request))
        await self.ops.unlock(session.user, remote(request), form_field(form, "password"))
        start_operation(self.stored, session.user, session.user, mail_password, action,
                        mailbox, uids)
        if uids is not None:
            return f"Started: {action} {len(uids)} message(s) of {mailbox}."
        return f"Started: {action} every message of {mailbox}."

    async def _folders(self, request: web.Request, session: Session,
                       form: Mapping[str, Any]) -> str:
        """Count the user's folders (the mail password reads them)."""
        mail_password = form_field(form, "mail_password")
        await self.guard.check_credentials(session.user, mail_password, remote(request))
        found = await read_mail_store(folder_counts(
            self.services.config.upstream.imap, session.user, mail_password))
        session.folders = [f.to_json() for f in found]
        return f"{len(found)} folder(s)."

    async def _find(self, request: web.Request, session: Session,
                    form: Mapping[str, Any]) -> str:
        """Find messages of a folder by stored subject and sender."""
        mailbox, mail_password = form_field(form, "mailbox"), form_field(form, "mail_password")
        await self.guard.check_credentials(session.user, mail_password, remote(request))
        found = await read_mail_store(find_messages(
            self.services.config.upstream.imap, session.user, mail_password, mailbox,
            form_field(form, "subject", required=False),
            form_field(form, "sender", required=False)))
        session.found = {"mailbox": mailbox, "messages": [m.to_json() for m in found]}
        return f"{len(found)} message(s) found."

    async def _import(self, request: web.Request, session: Session,
                      form: Mapping[str, Any]) -> str:
        status = await self.ops.import_pkcs12(session.user, form_file(form, "file"),
                                              form_field(form, "file_password", required=False),
                                              form_field(form, "password"),
                                              form_field(form, "password2"))
        return _with_directory("The key and certificate were imported.", status)

    async def _generate(self, request: web.Request, session: Session,
                        form: Mapping[str, Any]) -> str:
        status = await self.ops.generate(
            session.user, form_field(form, "email", required=False),
            form_field(form, "key_type", required=False) or "rsa2048",
            form_field(form, "password"), form_field(form, "password2"), session.domain)
        return _with_directory("A new key and certificate were generated.", status)

    async def _password(self, request: web.Request, session: Session,
                        form: Mapping[str, Any]) -> str:
        await self.ops.change_password(session.user, remote(request),
                                       form_field(form, "old_password"),
                                       form_field(form, "new_password"),
                                       form_field(form, "new_password2"))
        return "The Secure Mail Password was changed."

    async def _remove(self, request: web.Request, session: Session,
                      form: Mapping[str, Any]) -> str:
        await self.ops.remove(session.user, remote(request), form_file(form, "file"),
                              form_field(form, "file_password", required=False))
        return "The key and certificate were removed."

    async def _contacts_add(self, request: web.Request, session: Session,
                            form: Mapping[str, Any]) -> str:
        added = await self.ops.contacts_add(session.user, form_file(form, "file"))
        return f"{len(added)} certificate(s) added to the address book."

    async def _contacts_remove(self, request: web.Request, session: Session,
                               form: Mapping[str, Any]) -> str:
        address = form_field(form, "address")
        self.ops.contacts_remove(session.user, address)
        return f"{address} was removed from the address book."

    async def export(self, request: web.Request) -> web.Response:
        session, form = await self._form(request)
        try:
            data = await self.ops.run(self.ops.export(
                session.user, remote(request), form_field(form, "password"),
                form_field(form, "export_password"), form_field(form, "export_password2"),
                form.get("legacy") == "1"))
        except Refusal as exc:
            if exc.status >= 500:
                raise
            session.flash.append(("error", exc.message))
            return _redirect()
        return pfx_response(data)


def _uids(form: Mapping[str, Any]) -> list[int] | None:
    """The ticked messages of the found list (None: the whole folder)."""
    getall = getattr(form, "getall", None)
    values = getall("uids", []) if getall is not None else []
    if not values:
        if form.get("scope") == "chosen":  # the found list, nothing ticked: not the folder
            raise Refusal(400, "tick the messages to encrypt or decrypt")
        return None
    if not all(isinstance(v, str) and v.isdigit() and 0 < int(v) < 2**32 for v in values):
        raise Refusal(400, "uids: expected message UIDs")
    return [int(v) for v in values]


def _with_directory(message: str, status: Mapping[str, Any]) -> str:
    """The page's message, and what the LDAP directory said (`ldap.publish`)."""
    said = status.get("directory")
    return f"{message} Directory: {said}." if isinstance(said, str) else message
