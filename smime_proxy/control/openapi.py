"""The OpenAPI 3.0 description of the JSON API (`GET /api/v1/openapi.json`), written by hand.

May import: stdlib only.
"""

from __future__ import annotations

from typing import Any

JSON = "application/json"
PKCS12 = "application/x-pkcs12"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json_body(schema: dict[str, Any]) -> dict[str, Any]:
    return {"required": True, "content": {JSON: {"schema": schema}}}


def _multipart(properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    return {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {"type": "object", "properties": properties, "required": required}
            }
        },
    }


def _password(description: str) -> dict[str, Any]:
    return {"type": "string", "format": "password", "description": description}


_FILE = {"type": "string", "format": "binary"}


def _answer(description: str, schema: str = "Status") -> dict[str, Any]:
    return {"description": description, "content": {JSON: {"schema": _ref(schema)}}}


_ERRORS: dict[str, Any] = {
    "400": _answer("bad input (garbage file, passwords differ, empty password)", "Error"),
    "401": {
        "description": "mail user name or password wrong (the same answer for both)",
        "headers": {"WWW-Authenticate": {"schema": {"type": "string"}}},
        "content": {JSON: {"schema": _ref("Error")}},
    },
    "403": _answer("wrong Secure Mail Password, or a foreign Origin / Host", "Error"),
    "413": _answer("upload larger than the configured limit", "Error"),
    "429": {
        "description": "too many failed attempts: wait Retry-After seconds",
        "headers": {"Retry-After": {"schema": {"type": "integer"}}},
        "content": {JSON: {"schema": _ref("Error")}},
    },
    "503": _answer("the upstream IMAP server cannot check the credentials now", "Error"),
}


_OPERATION: dict[str, Any] = {
    "type": "object",
    "properties": {
        "id": {"type": "string"},
        "action": {"type": "string", "enum": ["encrypt", "decrypt"]},
        "mailbox": {"type": "string"},
        "state": {"type": "string", "enum": ["running", "done", "failed", "cancelled"]},
        "total": {"type": "integer"}, "done": {"type": "integer"},
        "skipped": {"type": "integer"},
        "origin": {"type": "string", "enum": ["request", "keyword"]},
        "error": {"type": "string", "nullable": True},
    },
    "required": ["id", "action", "mailbox", "state", "total", "done", "skipped"],
}

_FOLDERS: dict[str, Any] = {
    "type": "object",
    "properties": {"folders": {"type": "array", "items": {
        "type": "object",
        "properties": {"mailbox": {"type": "string"}, "total": {"type": "integer"},
                       "encrypted": {"type": "integer"}, "plain": {"type": "integer"}},
        "required": ["mailbox", "total", "encrypted", "plain"],
    }}},
    "required": ["folders"],
}

_FOUND: dict[str, Any] = {
    "type": "object",
    "properties": {"messages": {"type": "array", "items": {
        "type": "object",
        "properties": {"uid": {"type": "integer"}, "subject": {"type": "string"},
                       "from": {"type": "string"}, "date": {"type": "string"},
                       "encrypted": {"type": "boolean"}},
        "required": ["uid", "subject", "from", "date", "encrypted"],
    }}},
    "required": ["messages"],
}

_MAIL_STORE_ERRORS: dict[str, Any] = {
    "404": _answer("no such folder", "Error"),
    "502": _answer("the mail store cannot be reached or refused the work", "Error"),
}


def _op(
    summary: str,
    responses: dict[str, Any],
    *,
    body: dict[str, Any] | None = None,
    parameters: list[dict[str, Any]] | None = None,
    errors: tuple[str, ...] = ("401", "429", "503"),
    operation_id: str,
) -> dict[str, Any]:
    op: dict[str, Any] = {
        "summary": summary,
        "operationId": operation_id,
        "responses": {**responses, **{code: _ERRORS[code] for code in errors}},
    }
    if body is not None:
        op["requestBody"] = body
    if parameters:
        op["parameters"] = parameters
    return op


_NEW_PASSWORDS = {
    "password": _password("the new Secure Mail Password"),
    "password2": _password("the same again"),
}

_SUMMARY: dict[str, Any] = {
    "type": "object",
    "properties": {
        "subject": {"type": "string"},
        "issuer": {"type": "string"},
        "addresses": {"type": "array", "items": {"type": "string"}},
        "serial": {"type": "string"},
        "not_before": {"type": "string", "format": "date-time"},
        "not_after": {"type": "string", "format": "date-time"},
        "key_type": {"type": "string"},
        "key_size": {"type": "integer"},
        "fingerprint": {"type": "string", "description": "SHA-256, hex"},
    },
    "required": ["subject", "issuer", "addresses", "serial", "not_before", "not_after",
                 "key_type", "key_size", "fingerprint"],
}


def openapi_document(server_url: str | None = None) -> dict[str, Any]:
    """The document; `server_url` (e.g. https://127.0.0.1:8443) becomes `servers[0]`."""
    paths: dict[str, Any] = {
        "/api/v1/status": {
            "get": _op("Key present, locked or unlocked, until when, certificate summary",
                       {"200": _answer("the state")}, operation_id="status"),
        },
        "/api/v1/unlock": {
            "post": _op(
                "Unlock the key with the Secure Mail Password",
                {"200": _answer("unlocked")},
                body=_json_body({
                    "type": "object",
                    "properties": {"password": _password("the Secure Mail Password")},
                    "required": ["password"],
                }),
                errors=("400", "401", "403", "429", "503"),
                operation_id="unlock",
            ),
        },
        "/api/v1/lock": {
            "post": _op("Lock the key now", {"200": _answer("locked")}, operation_id="lock"),
        },
        "/api/v1/import": {
            "post": _op(
                "Import a PKCS#12 file as the key (protected by a new Secure Mail Password)",
                {"201": _answer("imported"), "409": _answer("a key exists already", "Error")},
                body=_multipart(
                    {"file": _FILE, "file_password": _password("the PKCS#12 file's password"),
                     **_NEW_PASSWORDS},
                    ["file", "file_password", "password", "password2"],
                ),
                errors=("400", "401", "403", "413", "429", "503"),
                operation_id="import",
            ),
        },
        "/api/v1/generate": {
            "post": _op(
                "Generate a key and a certificate from the server CA",
                {"201": _answer("generated"),
                 "409": _answer("a key exists already, or there is no server CA", "Error")},
                body=_json_body({
                    "type": "object",
                    "properties": {
                        **_NEW_PASSWORDS,
                        "email": {"type": "string", "description":
                                  "address for the certificate; it must belong to the account "
                                  "(default: the login name if it is an address)"},
                        "key_type": {"type": "string", "enum": ["rsa2048", "rsa3072", "ec-p256",
                                                                "ec-p384"]},
                    },
                    "required": ["password", "password2"],
                }),
                errors=("400", "401", "429", "503"),
                operation_id="generate",
            ),
        },
        "/api/v1/export": {
            "post": _op(
                "Export key and certificate as CertAndKey.pfx under an export password",
                {"200": {"description": "the PKCS#12 file",
                         "content": {PKCS12: {"schema": _FILE}}},
                 "404": _answer("no key", "Error")},
                body=_json_body({
                    "type": "object",
                    "properties": {
                        "password": _password("the Secure Mail Password"),
                        "export_password": _password("password of the exported file"),
                        "export_password2": _password("the same again"),
                        "legacy": {"type": "boolean", "description":
                                   "3DES/SHA-1 PKCS#12 for old software"},
                    },
                    "required": ["password", "export_password", "export_password2"],
                }),
                errors=("400", "401", "403", "429", "503"),
                operation_id="export",
            ),
        },
        "/api/v1/mail-unlock": {
            "post": _op(
                "Turn unlocking by mail login on or off (on: a second copy of the key, "
                "wrapped under the mail password this request logs in with)",
                {"200": _answer("the new setting"), "404": _answer("no key", "Error")},
                body=_json_body({
                    "type": "object",
                    "properties": {
                        "enable": {"type": "boolean"},
                        "password": _password("the Secure Mail Password (to turn it on)"),
                    },
                    "required": ["enable"],
                }),
                errors=("400", "401", "403", "429", "503"),
                operation_id="mail_unlock",
            ),
        },
        "/api/v1/encryption-method": {
            "post": _op(
                "Choose the Encryption Method: the cipher tried first when encrypting "
                "(automatic: the admin policy's order; the policy's list stays the limit)",
                {"200": _answer("the new setting")},
                body=_json_body({
                    "type": "object",
                    "properties": {"method": {"type": "string", "enum": [
                        "automatic", "aes-256-gcm", "aes-256-cbc", "aes-128-cbc"]}},
                    "required": ["method"],
                }),
                errors=("400", "401", "429", "503"),
                operation_id="encryption_method",
            ),
        },
        "/api/v1/store-encrypted": {
            "post": _op(
                "Turn Store Encrypted on or off: incoming plain mail is sealed to the user's "
                "certificate as the mail store receives it (where the LMTP filter runs)",
                {"200": _answer("the new setting")},
                body=_json_body({
                    "type": "object",
                    "properties": {"enable": {"type": "boolean"}},
                    "required": ["enable"],
                }),
                errors=("400", "401", "429", "503"),
                operation_id="store_encrypted",
            ),
        },
        "/api/v1/password": {
            "post": _op(
                "Change the Secure Mail Password",
                {"200": _answer("changed")},
                body=_json_body({
                    "type": "object",
                    "properties": {
                        "old_password": _password("the current Secure Mail Password"),
                        "new_password": _password("the new one"),
                        "new_password2": _password("the new one again"),
                    },
                    "required": ["old_password", "new_password", "new_password2"],
                }),
                errors=("400", "401", "403", "429", "503"),
                operation_id="change_password",
            ),
        },
        "/api/v1/remove": {
            "post": _op(
                "Remove the key: only if the uploaded PKCS#12 holds the same key",
                {"200": _answer("removed"), "404": _answer("no key", "Error"),
                 "409": _answer("the file holds a different key: nothing removed", "Error")},
                body=_multipart(
                    {"file": _FILE, "file_password": _password("the PKCS#12 file's password")},
                    ["file", "file_password"],
                ),
                errors=("400", "401", "403", "413", "429", "503"),
                operation_id="remove",
            ),
        },
        "/api/v1/contacts": {
            "get": _op(
                "The address book",
                {"200": {"description": "entries",
                         "content": {JSON: {"schema": _ref("Contacts")}}}},
                operation_id="contacts_list",
            ),
            "post": _op(
                "Add the certificates of a PEM or DER file",
                {"201": {"description": "added",
                         "content": {JSON: {"schema": _ref("Contacts")}}}},
                body=_multipart({"file": _FILE}, ["file"]),
                errors=("400", "401", "413", "429", "503"),
                operation_id="contacts_add",
            ),
        },
        "/api/v1/contacts/{address}": {
            "delete": _op(
                "Forget an address (certificates left without an address go too)",
                {"200": {"description": "removed",
                         "content": {JSON: {"schema": {
                             "type": "object",
                             "properties": {"removed": {"type": "integer"}},
                         }}}},
                 "404": _answer("no certificate for that address", "Error")},
                parameters=[{"name": "address", "in": "path", "required": True,
                             "schema": {"type": "string"}}],
                errors=("400", "401", "429", "503"),
                operation_id="contacts_remove",
            ),
        },
        "/api/v1/store": {
            "post": _op(
                "Encrypt or decrypt stored messages of a folder in place, in the background "
                "(the key is unlocked with the Secure Mail Password; the mail login of this "
                "request does the IMAP work)",
                {"202": {"description": "started", "content": {JSON: {"schema": _OPERATION}}},
                 "404": _answer("no key", "Error"),
                 "409": _answer("the key cannot do it (it does not open what it seals)",
                                "Error")},
                body=_json_body({
                    "type": "object",
                    "properties": {
                        "action": {"type": "string", "enum": ["encrypt", "decrypt"]},
                        "mailbox": {"type": "string", "minLength": 1},
                        "uids": {"type": "array", "items": {"type": "integer", "minimum": 1}},
                        "password": _password("the Secure Mail Password"),
                    },
                    "required": ["action", "mailbox", "password"],
                }),
                errors=("400", "401", "403", "429", "503"),
                operation_id="store_start",
            ),
        },
        "/api/v1/folders": {
            "get": _op(
                "The user's folders with how many of their messages are encrypted (read "
                "with the mail login of this request)",
                {"200": {"description": "the folders",
                         "content": {JSON: {"schema": _FOLDERS}}}, **_MAIL_STORE_ERRORS},
                operation_id="folders",
            ),
        },
        "/api/v1/folders/messages": {
            "get": _op(
                "The newest 50 messages of a folder whose stored Subject and From contain "
                "the given texts",
                {"200": {"description": "the messages, newest first",
                         "content": {JSON: {"schema": _FOUND}}}, **_MAIL_STORE_ERRORS},
                parameters=[
                    {"name": "mailbox", "in": "query", "required": True,
                     "schema": {"type": "string", "minLength": 1}},
                    {"name": "subject", "in": "query", "required": False,
                     "schema": {"type": "string"}},
                    {"name": "from", "in": "query", "required": False,
                     "schema": {"type": "string"}},
                ],
                errors=("400", "401", "429", "503"),
                operation_id="folder_messages",
            ),
        },
        "/api/v1/store/{id}": {
            "get": _op(
                "How far a folder operation is",
                {"200": {"description": "its state",
                         "content": {JSON: {"schema": _OPERATION}}},
                 "404": _answer("no such operation of this user", "Error")},
                parameters=[{"name": "id", "in": "path", "required": True,
                             "schema": {"type": "string"}}],
                errors=("401", "429", "503"),
                operation_id="store_get",
            ),
            "delete": _op(
                "Cancel a folder operation (it stops between two rounds)",
                {"200": {"description": "its state",
                         "content": {JSON: {"schema": _OPERATION}}},
                 "404": _answer("no such operation of this user", "Error")},
                parameters=[{"name": "id", "in": "path", "required": True,
                             "schema": {"type": "string"}}],
                errors=("401", "429", "503"),
                operation_id="store_cancel",
            ),
        },
    }
    document: dict[str, Any] = {
        "openapi": "3.0.3",
        "info": {
            "title": "smime-proxy Secure Mail control API",
            "version": "1",
            "description": (
                "Every operation authenticates with the user's mail credentials (HTTP Basic), "
                "checked by an IMAP LOGIN to the upstream. State-changing requests from a "
                "browser must come from the control page's own origin."
            ),
        },
        "security": [{"basicAuth": []}],
        "paths": paths,
        "components": {
            "securitySchemes": {"basicAuth": {"type": "http", "scheme": "basic"}},
            "schemas": {
                "Error": {
                    "type": "object",
                    "properties": {"error": {"type": "string"}},
                    "required": ["error"],
                },
                "CertificateSummary": _SUMMARY,
                "Status": {
                    "type": "object",
                    "properties": {
                        "user": {"type": "string"},
                        "key_present": {"type": "boolean"},
                        "locked": {"type": "boolean"},
                        "expires_at": {"type": "string", "format": "date-time",
                                       "nullable": True},
                        "idle_expires_at": {"type": "string", "format": "date-time",
                                            "nullable": True},
                        "absolute_expires_at": {"type": "string", "format": "date-time",
                                                "nullable": True},
                        "seconds_left": {"type": "integer", "nullable": True},
                        "certificate": {"allOf": [_ref("CertificateSummary")],
                                        "nullable": True},
                        "mail_unlock": {
                            "type": "object",
                            "properties": {"allowed": {"type": "boolean"},
                                           "enabled": {"type": "boolean"}},
                            "required": ["allowed", "enabled"],
                        },
                        "message": {"type": "string"},
                        "directory": {"type": "string"},
                        "encryption_method": {"type": "string"},
                        "store_encrypted": {"type": "boolean"},
                    },
                    "required": ["user", "key_present", "locked", "expires_at",
                                 "certificate"],
                },
                "Contacts": {
                    "type": "object",
                    "properties": {"contacts": {"type": "array",
                                                "items": _ref("CertificateSummary")}},
                    "required": ["contacts"],
                },
            },
        },
    }
    if server_url:
        document["servers"] = [{"url": server_url}]
    return document
