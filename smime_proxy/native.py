"""The native opening core, `smime_proxy._native` (issue 10; docs/native.md), or None.

It is built from `native/` by scripts/build-native.sh (the test and run scripts call it) and
is optional: every function in it has a Python twin in the package, which is its reference
and which is used when the module is not built, is built for another interface version, or
is turned off with `SMIME_PROXY_NATIVE=0` (the tests that compare the two, and A/B runs).

May import: _native (when built), stdlib.
"""

from __future__ import annotations

import os
from types import ModuleType

# the interface this Python code expects; native/src/lib.rs says which one it implements
INTERFACE = 13


def _load() -> ModuleType | None:
    if os.environ.get("SMIME_PROXY_NATIVE", "1") == "0":
        return None
    try:
        from smime_proxy import _native
    except ImportError:
        return None
    if getattr(_native, "INTERFACE", None) != INTERFACE:
        return None  # built from other sources: the Python code is used until it is rebuilt
    return _native


native = _load()
