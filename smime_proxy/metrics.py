"""The mail fronts' Prometheus metrics (issue 13, operator view), served at the control
endpoint's `/metrics` beside its own: messages opened and submitted by outcome, the view
cache's hits and misses, refusals by front and reason, upstream errors, and how long
opening and preparing a message take.

Labels are a few fixed words each (never a user, address or subject): the metrics say how
the proxy is doing, not who does what.

May import: prometheus_client, stdlib.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

_SECONDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class MailMetrics:
    """One registry for the IMAP and SMTP fronts of a daemon (thread-safe counters: the
    opening runs in worker threads)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.opened = Counter(
            "smime_imap_messages_opened", "S/MIME messages opened for a client, by outcome "
            "(decrypted, verified, locked, shown_as_stored)", ["outcome"],
            registry=self.registry)
        self.view_cache = Counter(
            "smime_imap_view_cache_lookups", "Lookups of opened views, by result (hit, miss)",
            ["result"], registry=self.registry)
        self.open_seconds = Histogram(
            "smime_imap_open_seconds", "Time to open (decrypt, verify, view) one message",
            buckets=_SECONDS, registry=self.registry)
        self.submitted = Counter(
            "smime_smtp_messages", "Submissions by outcome (signed, encrypted, "
            "signed_encrypted, as_is, refused, failed)", ["outcome"], registry=self.registry)
        self.prepare_seconds = Histogram(
            "smime_smtp_prepare_seconds", "Time to prepare (sign, encrypt) one submission",
            buckets=_SECONDS, registry=self.registry)
        self.refusals = Counter(
            "smime_refusals", "What the fronts refused, by front and reason",
            ["front", "reason"], registry=self.registry)
        self.upstream_errors = Counter(
            "smime_upstream_errors", "Upstream connections refused or lost, by front",
            ["front", "kind"], registry=self.registry)
