"""The control endpoint's Prometheus counters (served at `/metrics`).

May import: prometheus_client, stdlib.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter


class ControlMetrics:
    """Requests by route and status, unlock attempts by result, refusals by reason."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "smime_control_requests", "Control endpoint requests",
            ["route", "method", "status"], registry=self.registry,
        )
        self.unlocks = Counter(
            "smime_control_unlocks", "Unlock attempts by result", ["result"],
            registry=self.registry,
        )
        self.failures = Counter(
            "smime_control_failures", "Refused requests by reason", ["reason"],
            registry=self.registry,
        )
