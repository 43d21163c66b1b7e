"""Rendering of the upstream config templates in ``config/upstream/``.

Placeholders are ``@@NAME@@`` (the same syntax ``config/upstream/entrypoint.sh`` replaces with
sed for docker-compose). A placeholder without a value is an error, never left in the output.
Files are written only when their content changes, and with a modification time a few seconds
in the past: a freshly modified Postfix main.cf makes the next start ~10x slower
(notes/harness.md, gotcha 5).

May import: errors, stdlib.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Mapping
from pathlib import Path

from smime_proxy.errors import SmimeProxyError

PLACEHOLDER = re.compile(r"@@([A-Z][A-Z0-9_]*)@@")


class TemplateError(SmimeProxyError):
    """A template names a placeholder that was given no value."""


def render(template: str, values: Mapping[str, str], *, name: str = "template") -> str:
    """Replace every ``@@NAME@@`` in ``template`` with ``values[NAME]``."""
    missing = sorted({m for m in PLACEHOLDER.findall(template) if m not in values})
    if missing:
        raise TemplateError(f"{name}: no value for placeholder(s) {', '.join(missing)}")
    return PLACEHOLDER.sub(lambda m: values[m.group(1)], template)


def placeholders(template: str) -> set[str]:
    """The placeholder names used in ``template``."""
    return set(PLACEHOLDER.findall(template))


def write_if_changed(path: Path, content: str | bytes, mode: int = 0o644) -> bool:
    """Write ``content`` to ``path`` unless it already holds exactly that; True if written."""
    data = content.encode() if isinstance(content, str) else content
    try:
        if path.read_bytes() == data:
            if (path.stat().st_mode & 0o7777) != mode:
                os.chmod(path, mode)
            return False
    except OSError:
        pass
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.chmod(tmp, mode)
    # Postfix's master waits ~1.5-2.5 s before serving when main.cf/master.cf were modified
    # within the last seconds (measured: fresh directory 1.5 s to SMTP AUTH, 0.14 s with the
    # mtime set 10 s back). The content is what matters, not the time stamp.
    past = time.time() - 10
    os.utime(tmp, (past, past))
    os.replace(tmp, path)
    return True
