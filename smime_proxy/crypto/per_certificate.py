"""Answers about a certificate kept for the certificate object itself (`per_certificate`).

A certificate object is immutable, and the same objects come back with every message a
correspondent signs (`crypto.signer_info.load_certificate` keeps them by their DER). An
lru_cache keyed by the certificate saves little: cryptography hashes the certificate's DER
at each call (4.6 µs), as long as the answers themselves take to make. These are kept by
identity instead, as the chain cache (`crypto.certpath`) does, with the object held so that
its id cannot be reused while its answer is kept.

May import: cryptography, stdlib.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Generic, TypeVar

from cryptography import x509

R = TypeVar("R")

KEPT = 512  # answers per function; the certificates of the mail being read come back at once


class PerCertificate(Generic[R]):
    """`func(certificate)`, made once per certificate object (an exception is not kept)."""

    def __init__(self, func: Callable[[x509.Certificate], R]) -> None:
        self._func = func
        self._kept: dict[int, tuple[x509.Certificate, R]] = {}
        functools.update_wrapper(self, func)
        self.__wrapped__ = func  # the function itself, answering anew

    def __call__(self, certificate: x509.Certificate) -> R:
        kept = self._kept.get(id(certificate))
        if kept is not None and kept[0] is certificate:
            return kept[1]
        answer = self._func(certificate)
        if len(self._kept) >= KEPT:
            self._kept.clear()
        self._kept[id(certificate)] = (certificate, answer)
        return answer

    def __len__(self) -> int:
        """How many answers are kept now."""
        return len(self._kept)


def per_certificate(func: Callable[[x509.Certificate], R]) -> PerCertificate[R]:
    """Decorate a pure function of one certificate: its answer kept per certificate object."""
    return PerCertificate(func)
