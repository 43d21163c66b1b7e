"""Reading what a request sent (JSON bodies, forms, uploaded files, text fields), with a
`Refusal` (400) for anything malformed; shared by the JSON API and the web page.

May import: control.operations, aiohttp, stdlib.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from multidict import MultiDictProxy

from smime_proxy.control.operations import Refusal

Form = MultiDictProxy[str | bytes | bytearray | web.FileField]


def remote(request: web.Request) -> str:
    return request.remote or "unknown"


def text(value: object, name: str, *, required: bool = True) -> str:
    if value is None or value == "":
        if required:
            raise Refusal(400, f"missing field: {name}")
        return ""
    if not isinstance(value, str):
        raise Refusal(400, f"field {name} must be a string")
    return value


def form_field(form: Mapping[str, Any], name: str, *, required: bool = True) -> str:
    return text(form.get(name), name, required=required)


def form_file(form: Mapping[str, Any], name: str) -> bytes:
    value = form.get(name)
    if isinstance(value, web.FileField):
        data = value.file.read()
        return data if isinstance(data, bytes) else bytes(data)
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, bytes | bytearray):
        return bytes(value)
    raise Refusal(400, f"missing field: {name}")


async def read_json(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError, ValueError):
        raise Refusal(400, "the body must be a JSON object") from None
    if not isinstance(body, dict):
        raise Refusal(400, "the body must be a JSON object")
    return body


async def read_form(request: web.Request) -> Form:
    if not request.content_type.startswith(("multipart/form-data",
                                            "application/x-www-form-urlencoded")):
        raise Refusal(400, "the body must be multipart/form-data")
    try:
        return await request.post()
    except web.HTTPException:
        raise
    except (ValueError, UnicodeDecodeError, AssertionError, RuntimeError, LookupError,
            HttpProcessingError):
        raise Refusal(400, "malformed form data") from None
