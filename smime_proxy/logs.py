"""Logging set-up for the daemon: text or JSON lines on standard error.

Rule for every module: log events and identifiers (user name, client address, message size,
outcome), never a password, key, AUTH exchange or message body. As a second line of defence
the formatter masks anything that looks like an SMTP/IMAP AUTH or LOGIN argument.

May import: stdlib only.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import UTC, datetime

_SECRET_PATTERNS = (
    re.compile(r"(?i)(\bAUTH\s+(?:PLAIN|LOGIN|XOAUTH2)\s+)\S+"),
    re.compile(r"(?i)(\bLOGIN\s+\S+\s+)\S+"),
    re.compile(r"(?i)(password\W{1,3})\S+"),
)


def scrub(text: str) -> str:
    for pattern in _SECRET_PATTERNS:
        text = pattern.sub(r"\1***", text)
    return text


_STANDARD = frozenset(vars(logging.makeLogRecord({})).keys()) | {"message", "asctime"}
_UNSAFE = re.compile(r"[\s\"=\\]")


def extra_fields(record: logging.LogRecord) -> dict[str, object]:
    """The `extra` fields of a record (user, command, reason, ...), in the order given."""
    return {key: value for key, value in vars(record).items()
            if key not in _STANDARD and not key.startswith("_")}


class TextFormatter(logging.Formatter):
    """`time LEVEL logger: message key=value ...`: the extra fields follow the message (a
    value with spaces, quotes or line breaks is quoted, so one event stays one line)."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        pairs = []
        for key, value in extra_fields(record).items():
            text = str(value)
            if not text or _UNSAFE.search(text):
                text = json.dumps(text, ensure_ascii=False)
            pairs.append(f"{key}={text}")
        return scrub(" ".join([line, *pairs]))


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, and `extra` fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": scrub(record.getMessage()),
        }
        for key, value in extra_fields(record).items():
            entry[key] = value if isinstance(value, int | float | bool) else scrub(str(value))
        if record.exc_info and record.exc_info[0] is not None:
            entry["error"] = record.exc_info[0].__name__
        return json.dumps(entry, ensure_ascii=False)


def setup_logging(fmt: str = "text", level: str = "info") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # Third-party access logs would print request lines with query strings: keep them quiet.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    logging.getLogger("mail.log").setLevel(logging.WARNING)
