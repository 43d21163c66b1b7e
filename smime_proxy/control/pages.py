"""Server-rendered HTML of the "Secure Mail" page (string templates, `html.escape` on every
value). Panels follow the CommuniGate Pro WebUser "Secure Mail" page: Import, Generate Key And
Certificate, the certificate, Secure Mail is Locked / unlocked with the time left, Modify Secure
Mail Password, Export, Remove, and the address book.

May import: keystore.certs, stdlib.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from datetime import datetime
from html import escape
from typing import Any

from smime_proxy.keystore.certs import CertificateSummary

_STYLE = """
body{font-family:sans-serif;max-width:52em;margin:1em auto;padding:0 1em;color:#222}
fieldset{margin:1em 0;border:1px solid #999;padding:.5em 1em}
legend{font-weight:bold}
label{display:block;margin:.3em 0}
label span{display:inline-block;min-width:16em}
table{border-collapse:collapse}td,th{padding:.2em .6em;text-align:left;vertical-align:top}
.error{color:#a00}.ok{color:#060}.locked{background:#fee}.unlocked{background:#efe}
"""

_ids = itertools.count(1)

COUNTDOWN_SCRIPT = (
    "(function(){var el=document.getElementById('seconds-left');if(!el)return;"
    "var left=parseInt(el.getAttribute('data-seconds'),10);"
    "var t=setInterval(function(){left-=1;if(left<=0){clearInterval(t);location.reload();"
    "return;}el.textContent=String(left);},1000);})();"
)
_COUNTDOWN = f"<script>{COUNTDOWN_SCRIPT}</script>"


def _e(value: object) -> str:
    return escape(str(value), quote=True)


def _page(title: str, body: str) -> str:
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>{_e(title)}</title><style>{_STYLE}</style></head>"
        f"<body>{body}</body></html>\n"
    )


def _csrf(token: str) -> str:
    return f'<input type="hidden" name="csrf" value="{_e(token)}">'


def _field(name: str, label: str, kind: str = "password", value: str = "",
           required: bool = True, autocomplete: str | None = None) -> str:
    ident = f"f-{name}-{next(_ids)}"
    attrs = ' required' if required else ''
    if value:
        attrs += f' value="{_e(value)}"'
    if autocomplete:
        attrs += f' autocomplete="{_e(autocomplete)}"'
    return (f'<label for="{_e(ident)}"><span>{_e(label)}</span>'
            f'<input id="{_e(ident)}" type="{_e(kind)}" name="{_e(name)}"{attrs}></label>')


def _form(action: str, csrf: str, legend: str, inner: str, button: str, *,
          multipart: bool = False, form_id: str = "") -> str:
    enctype = ' enctype="multipart/form-data"' if multipart else ""
    ident = f' id="{_e(form_id)}"' if form_id else ""
    return (
        f'<form method="post" action="{_e(action)}"{enctype}{ident}><fieldset>'
        f"<legend>{_e(legend)}</legend>{_csrf(csrf)}{inner}"
        f'<button type="submit">{_e(button)}</button></fieldset></form>'
    )


def _messages(flash: list[tuple[str, str]]) -> str:
    return "".join(
        f'<p class="{"error" if kind == "error" else "ok"}" role="status">{_e(text)}</p>'
        for kind, text in flash
    )


def login_page(csrf: str, error: str | None = None, user: str = "") -> str:
    message = f'<p class="error" role="alert">{_e(error)}</p>' if error else ""
    form = (
        '<form method="post" action="/login"><fieldset><legend>Log in</legend>'
        f"{_csrf(csrf)}"
        + _field("user", "Mail user name", "text", user, autocomplete="username")
        + _field("password", "Mail password", autocomplete="current-password")
        + _field("domain", "Mail domain (for your address, optional)", "text",
                 required=False)
        + '<button type="submit">Log in</button></fieldset></form>'
    )
    body = (
        "<h1>Secure Mail</h1><p>Log in with your ordinary mail user name and password.</p>"
        f"{message}{form}"
    )
    return _page("Secure Mail - log in", body)


@dataclass(frozen=True)
class PageState:
    user: str
    csrf: str
    certificate: CertificateSummary | None
    unlocked: bool
    expires_at: datetime | None
    seconds_left: int | None
    absolute_expires_at: datetime | None
    default_email: str
    contacts: list[tuple[CertificateSummary, bool]]
    flash: list[tuple[str, str]]
    can_generate: bool
    mail_unlock: bool | None = None  # None: the admin does not allow it
    encryption_method: str = "automatic"
    store_encrypted: bool = False
    operations: list[dict[str, Any]] = field(default_factory=list)
    folders: list[dict[str, Any]] = field(default_factory=list)
    found: dict[str, Any] | None = None  # {"mailbox": ..., "messages": [...]}


def _operation_row(operation: dict[str, Any]) -> str:
    skipped = int(operation["skipped"])
    count = f"{int(operation['done'])} of {int(operation['total'])}"
    if skipped:
        count += f" ({skipped} skipped)"
    return (f"<tr><td>{_e(str(operation['action']))}</td><td>{_e(str(operation['mailbox']))}"
            f"</td><td>{_e(str(operation['state']))}</td><td>{_e(count)}</td></tr>")


def _folder_operations(state: PageState) -> str:
    """Encrypt or decrypt a folder in place, and how far the user's operations are."""
    rows = "".join(_operation_row(o) for o in state.operations)
    table = ("<table id=\"store-operations\"><tr><th>Action</th><th>Folder</th><th>State</th>"
             f"<th>Messages</th></tr>{rows}</table>") if rows else ""
    return _form(
        "/store", state.csrf, "Encrypt Or Decrypt A Folder",
        "<p>Replace every plain message of a folder by one encrypted to you, or every "
        "encrypted one by its plaintext, on the server (flags and dates kept).</p>"
        + _field("mailbox", "Folder", "text", "INBOX")
        + _ACTION_CHOICE + _store_passwords(),
        "Start", form_id="store-form") + table + _folders(state) + _found(state)


_ACTION_CHOICE = ('<label>Action <select name="action"><option value="encrypt">Encrypt'
                  '</option><option value="decrypt">Decrypt</option></select></label>')


def _store_passwords() -> str:
    """Both passwords of a folder operation (fresh field ids each time: one label, one
    input)."""
    return (_field("password", "Secure Mail Password", autocomplete="current-password")
            + _field("mail_password", "Mail password", autocomplete="current-password"))


def _folders(state: PageState) -> str:
    """The user's folders with their counts, once asked for."""
    rows = "".join(
        f"<tr><td>{_e(f['mailbox'])}</td><td>{int(f['total'])}</td>"
        f"<td>{int(f['encrypted'])}</td><td>{int(f['plain'])}</td></tr>"
        for f in state.folders)
    table = ('<table id="folder-counts"><tr><th>Folder</th><th>Messages</th>'
             f"<th>Encrypted</th><th>Plain</th></tr>{rows}</table>") if rows else ""
    return _form("/folders", state.csrf, "Your Folders",
                 _field("mail_password", "Mail password", autocomplete="current-password"),
                 "Show Folders", form_id="folders-form") + table + _form(
        "/find", state.csrf, "Find Messages",
        "<p>By the subject or sender stored on the server (an encrypted message may show "
        "\"...\" there).</p>"
        + _field("mailbox", "Folder", "text", "INBOX")
        + _field("subject", "Subject contains", "text", required=False)
        + _field("sender", "From contains", "text", required=False)
        + _field("mail_password", "Mail password", autocomplete="current-password"),
        "Find", form_id="find-form")


def _found(state: PageState) -> str:
    """The messages found, to encrypt or decrypt the ones ticked."""
    if state.found is None:
        return ""
    messages = state.found["messages"]
    if not messages:
        return f'<p id="found-none">No message found in {_e(state.found["mailbox"])}.</p>'
    rows = "".join(
        f'<tr><td><input type="checkbox" name="uids" value="{int(m["uid"])}" '
        f'aria-label="message {int(m["uid"])}"></td><td>{_e(m["subject"])}</td>'
        f'<td>{_e(m["from"])}</td><td>{_e(m["date"])}</td>'
        f'<td>{"encrypted" if m["encrypted"] else "plain"}</td></tr>' for m in messages)
    return _form(
        "/store", state.csrf, f"Messages Found In {state.found['mailbox']}",
        f'<input type="hidden" name="mailbox" value="{_e(state.found["mailbox"])}">'
        '<input type="hidden" name="scope" value="chosen">'
        '<table id="found-messages"><tr><th></th><th>Subject</th><th>From</th><th>Date</th>'
        f"<th>Stored</th></tr>{rows}</table>" + _ACTION_CHOICE + _store_passwords(),
        "Start", form_id="found-form")


def _store_encrypted(state: PageState) -> str:
    """The user's Store Encrypted switch."""
    if state.store_encrypted:
        return _form("/store-encrypted", state.csrf, "Store Encrypted",
                     "<p>On: new plain mail is stored encrypted to your certificate.</p>"
                     '<input type="hidden" name="enable" value="0">', "Turn off",
                     form_id="store-encrypted-form")
    return _form("/store-encrypted", state.csrf, "Store Encrypted",
                 "<p>Keep new incoming mail encrypted on the server, readable only with your "
                 "key (where the administrator runs the delivery filter).</p>"
                 '<input type="hidden" name="enable" value="1">', "Turn on",
                 form_id="store-encrypted-form")


_METHODS = (("automatic", "Automatic (the administrator's order)"),
            ("aes-256-gcm", "AES-256-GCM (recipients whose mail says they read it)"),
            ("aes-256-cbc", "AES-256-CBC"), ("aes-128-cbc", "AES-128-CBC"))


def _encryption_method(state: PageState) -> str:
    """The cipher tried first when the proxy encrypts the user's mail."""
    options = "".join(
        f'<option value="{value}"{" selected" if value == state.encryption_method else ""}>'
        f"{_e(label)}</option>" for value, label in _METHODS)
    return _form("/encryption-method", state.csrf, "Encryption Method",
                 "<p>The cipher your mail is encrypted with, when the administrator's policy "
                 "allows it for the recipients.</p>"
                 f'<label>Encryption Method <select name="method">{options}</select></label>',
                 "Save", form_id="encryption-method-form")


def _mail_unlock(state: PageState) -> str:
    """The user's choice to unlock by mail login, with its price in one sentence."""
    if state.mail_unlock is None:
        return ""
    price = ("<p>Your mail program's login then unlocks Secure Mail, and keeps it unlocked "
             "while you use it: convenient, but your key is then only as safe as your mail "
             "password.</p>")
    if state.mail_unlock:
        return _form("/mail-unlock", state.csrf, "Unlock With My Mail Login",
                     "<p>On: your mail login unlocks Secure Mail.</p>"
                     '<input type="hidden" name="enable" value="0">', "Turn off",
                     form_id="mail-unlock-form")
    return _form("/mail-unlock", state.csrf, "Unlock With My Mail Login",
                 price + '<input type="hidden" name="enable" value="1">'
                 + _field("password", "Secure Mail Password", autocomplete="current-password")
                 + _field("mail_password", "Mail password", autocomplete="current-password"),
                 "Turn on", form_id="mail-unlock-form")


def _certificate(summary: CertificateSummary) -> str:
    rows = [
        ("Subject", summary.subject),
        ("E-mail addresses", ", ".join(summary.addresses) or "(none)"),
        ("Issuer", summary.issuer),
        ("Serial number", summary.serial),
        ("Valid from", summary.not_before.strftime("%Y-%m-%d %H:%M:%S UTC")),
        ("Valid until", summary.not_after.strftime("%Y-%m-%d %H:%M:%S UTC")),
        ("Key", f"{summary.key_type} {summary.key_size} bits"),
        ("SHA-256 fingerprint", summary.fingerprint),
    ]
    cells = "".join(f"<tr><th scope=\"row\">{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in rows)
    return (f'<section id="certificate"><h2>Certificate</h2>'
            f'<table id="certificate-data">{cells}</table></section>')


def _lock_panel(state: PageState) -> str:
    if not state.unlocked:
        inner = _field("password", "Secure Mail Password", autocomplete="current-password")
        return (
            '<section id="locked" class="locked"><h2>Secure Mail is Locked</h2>'
            "<p>Enter your Secure Mail Password to sign and decrypt messages.</p>"
            + _form("/unlock", state.csrf, "Unlock", inner, "Unlock") + "</section>"
        )
    left = state.seconds_left or 0
    until = state.expires_at.strftime("%H:%M:%S UTC") if state.expires_at else ""
    latest = (state.absolute_expires_at.strftime("%Y-%m-%d %H:%M:%S UTC")
              if state.absolute_expires_at else "")
    return (
        '<section id="unlocked" class="unlocked"><h2>Secure Mail is Unlocked</h2>'
        f'<p>It locks automatically in <span id="seconds-left" data-seconds="{left}">'
        f"{left}</span> seconds (at {_e(until)}) unless it is used, and at "
        f"{_e(latest)} in any case.</p>"
        + _form("/lock", state.csrf, "Lock", "", "Lock now") + "</section>"
    )


def _contacts(state: PageState) -> str:
    rows = []
    for summary, usable in state.contacts:
        marker = ('<span class="cert-marker" title="holds a certificate usable for '
                  'encryption">[certificate]</span>' if usable else
                  '<span class="cert-marker" title="holds a certificate that cannot be used '
                  'now (expired or unsuitable)">[certificate, unusable]</span>')
        for address in summary.addresses or ("(no address)",):
            remove = (
                f'<form method="post" action="/contacts/remove">{_csrf(state.csrf)}'
                f'<input type="hidden" name="address" value="{_e(address)}">'
                f'<button type="submit" aria-label="Remove {_e(address)}">Remove</button>'
                "</form>"
            )
            rows.append(
                f"<tr><td>{_e(address)}</td><td>{marker}</td><td>{_e(summary.subject)}</td>"
                f"<td>{_e(summary.not_after.strftime('%Y-%m-%d'))}</td><td>{remove}</td></tr>"
            )
    table = (
        '<table id="contacts"><thead><tr><th>Address</th><th>Certificate</th><th>Subject</th>'
        "<th>Valid until</th><th></th></tr></thead><tbody>" + "".join(rows) + "</tbody></table>"
        if rows else "<p>The address book is empty.</p>"
    )
    add = _form("/contacts/add", state.csrf, "Add certificates",
                _field("file", "Certificate file (PEM or DER)", "file"), "Add",
                multipart=True)
    return f'<section id="address-book"><h2>Address Book</h2>{table}{add}</section>'


def main_page(state: PageState) -> str:
    head = (
        f"<h1>Secure Mail</h1><p>Logged in as <strong>{_e(state.user)}</strong>.</p>"
        + f'<form method="post" action="/logout">{_csrf(state.csrf)}'
        '<button type="submit">Log out (locks the key)</button></form>'
        + _messages(state.flash)
    )
    parts = [head]
    if state.certificate is None:
        parts.append("<p>You have no Secure Mail key yet: import one or generate one.</p>")
        parts.append(_form(
            "/import", state.csrf, "Import",
            _field("file", "PFX file", "file")
            + _field("file_password", "File password", autocomplete="off")
            + _field("password", "New Secure Mail Password", autocomplete="new-password")
            + _field("password2", "New Secure Mail Password again",
                     autocomplete="new-password"),
            "Import", multipart=True, form_id="import-form",
        ))
        if state.can_generate:
            parts.append(_form(
                "/generate", state.csrf, "Generate Key And Certificate",
                _field("email", "E-mail address", "email", state.default_email)
                + '<label for="f-key-type"><span>Key</span><select id="f-key-type" '
                'name="key_type"><option value="rsa2048">RSA 2048</option>'
                '<option value="rsa3072">RSA 3072</option>'
                '<option value="ec-p256">EC P-256</option></select></label>'
                + _field("password", "New Secure Mail Password", autocomplete="new-password")
                + _field("password2", "New Secure Mail Password again",
                         autocomplete="new-password"),
                "Generate", form_id="generate-form",
            ))
        else:
            parts.append("<p>This server has no certificate authority to generate keys.</p>")
    else:
        parts.append(_certificate(state.certificate))
        parts.append(_lock_panel(state))
        parts.append(_mail_unlock(state))
        parts.append(_encryption_method(state))
        parts.append(_store_encrypted(state))
        parts.append(_folder_operations(state))
        parts.append(_form(
            "/password", state.csrf, "Modify Secure Mail Password",
            _field("old_password", "Current Secure Mail Password",
                   autocomplete="current-password")
            + _field("new_password", "New Secure Mail Password", autocomplete="new-password")
            + _field("new_password2", "New Secure Mail Password again",
                     autocomplete="new-password"),
            "Modify", form_id="password-form",
        ))
        parts.append(_form(
            "/export", state.csrf, "Export",
            _field("password", "Secure Mail Password", autocomplete="current-password")
            + _field("export_password", "Export file password", autocomplete="new-password")
            + _field("export_password2", "Export file password again",
                     autocomplete="new-password")
            + '<label for="f-legacy"><span>Legacy format (3DES, for old software)</span>'
            '<input id="f-legacy" type="checkbox" name="legacy" value="1"></label>',
            "Export", form_id="export-form",
        ))
        parts.append(_form(
            "/remove", state.csrf, "Remove",
            "<p>Upload a PFX file with the same key to compare; the key is deleted only if "
            "it matches.</p>"
            + _field("file", "PFX file", "file")
            + _field("file_password", "File password", autocomplete="off"),
            "Compare and Delete", multipart=True, form_id="remove-form",
        ))
    parts.append(_contacts(state))
    if state.can_generate:
        parts.append('<p id="server-ca">Mail programs that should check signatures themselves'
                     ' need this server\'s certificate authority: <a href="/server-ca.pem"'
                     ' download>server-ca.pem</a>.</p>')
    script = _COUNTDOWN if state.unlocked else ""
    return _page("Secure Mail", "".join(parts) + script)


def error_page(status: int, text: str) -> str:
    return _page(f"Secure Mail - {status}",
                 f'<h1>Secure Mail</h1><p class="error" role="alert">{_e(text)}</p>'
                 '<p><a href="/">Back</a></p>')
