"""The Secure Mail control endpoint: web page, JSON API, health and metrics (aiohttp).

May import: control, stdlib.
"""

from __future__ import annotations

from smime_proxy.control.server import ControlFront

__all__ = ["ControlFront"]
