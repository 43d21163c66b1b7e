"""The Secure Mail control endpoint: web page, JSON API, health and metrics (aiohttp).

May import: config, errors, keystore, aiohttp, prometheus_client (and app's types).
"""

from __future__ import annotations

from smime_proxy.control.server import ControlFront

__all__ = ["ControlFront"]
