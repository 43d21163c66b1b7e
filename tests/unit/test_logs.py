"""The daemon's log lines (issue 13, operator view): one line per event, the extra fields
(user, command, reason) after the message in text format, never a secret."""

from __future__ import annotations

import json
import logging

from smime_proxy.logs import JsonFormatter, TextFormatter


def record(message: str, **extra: object) -> logging.LogRecord:
    made = logging.LogRecord("smime_proxy.smtp.session", logging.INFO, __file__, 1, message,
                             None, None)
    for key, value in extra.items():
        setattr(made, key, value)
    return made


def test_text_lines_carry_the_extra_fields() -> None:
    line = TextFormatter().format(record("message refused", user="bob", code=550,
                                         reason="no usable S/MIME certificate for: x@y"))
    assert line.endswith(" INFO smime_proxy.smtp.session: message refused user=bob code=550"
                         ' reason="no usable S/MIME certificate for: x@y"')


def test_a_value_with_a_line_break_stays_on_one_line() -> None:
    line = TextFormatter().format(record("IMAP login refused by the upstream",
                                         user="eve\r\n2026 INFO forged", reason=""))
    assert "\n" not in line and 'user="eve\\r\\n2026 INFO forged" reason=""' in line


def test_secrets_are_masked_in_both_formats() -> None:
    made = record("AUTH PLAIN AGJvYgBzZWNyZXQ=", line="a1 LOGIN bob hunter2")
    for text in (TextFormatter().format(made), JsonFormatter().format(made)):
        assert "AGJvYgBzZWNyZXQ=" not in text and "hunter2" not in text
    entry = json.loads(JsonFormatter().format(record("x", user="bob", code=535)))
    assert entry["user"] == "bob" and entry["code"] == 535
