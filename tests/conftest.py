"""Top-level pytest configuration: make `tests/support` importable as `support`, and refuse
to test any copy of the package but this checkout's (the editable install points here; a
stale non-editable install in the venv would otherwise be imported silently)."""

from __future__ import annotations

import sys
from pathlib import Path

import smime_proxy

sys.path.insert(0, str(Path(__file__).parent))

_ROOT = Path(__file__).resolve().parent.parent
_IMPORTED = Path(smime_proxy.__file__).resolve().parent
if _IMPORTED != _ROOT / "smime_proxy":
    raise RuntimeError(
        f"pytest imported smime_proxy from {_IMPORTED}, not from this checkout "
        f"({_ROOT / 'smime_proxy'}): reinstall with `pip install -e .[test]`"
    )
