"""Validated chains are reused only while they would validate again (`crypto.certpath`):
inside every certificate's validity period, with the same certificates and trust roots."""

from __future__ import annotations

import datetime as dt

import pytest

from smime_proxy.crypto import certpath
from smime_proxy.crypto.certpath import validate_signer_chain
from smime_proxy.errors import ChainUntrusted
from support.pki import NOW, make_ca, make_user


def _count_validations(monkeypatch: pytest.MonkeyPatch) -> list[dt.datetime]:
    calls: list[dt.datetime] = []
    validate = certpath._validate

    def counted(*args: object) -> object:
        calls.append(args[3])  # type: ignore[arg-type]
        return validate(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(certpath, "_validate", counted)
    return calls


def test_a_chain_is_validated_once_then_reused(monkeypatch: pytest.MonkeyPatch) -> None:
    root = make_ca()
    alice = make_user("alice@example.test", root)
    calls = _count_validations(monkeypatch)
    first = validate_signer_chain(alice.cert, [], [root.cert], NOW)
    again = validate_signer_chain(alice.cert, [], [root.cert], NOW + dt.timedelta(days=1))
    assert first == again == [alice.cert, root.cert]
    assert len(calls) == 1
    other_roots = validate_signer_chain(alice.cert, [], [root.cert, make_ca().cert], NOW)
    assert other_roots == first and len(calls) == 2  # other inputs: validated again


def test_a_kept_chain_is_not_reused_once_an_intermediate_has_expired(
        monkeypatch: pytest.MonkeyPatch) -> None:
    root = make_ca()
    intermediate = make_ca("Short-lived CA", issuer=root,
                           not_after=NOW + dt.timedelta(days=10))
    alice = make_user("alice@example.test", intermediate)
    calls = _count_validations(monkeypatch)
    assert validate_signer_chain(alice.cert, [intermediate.cert], [root.cert], NOW) == [
        alice.cert, intermediate.cert, root.cert]
    with pytest.raises(ChainUntrusted):
        validate_signer_chain(alice.cert, [intermediate.cert], [root.cert],
                              NOW + dt.timedelta(days=11))
    with pytest.raises(ChainUntrusted, match="not yet valid"):
        validate_signer_chain(alice.cert, [intermediate.cert], [root.cert],
                              NOW - dt.timedelta(days=60))
    assert len(calls) == 3


def test_a_failure_is_not_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    root = make_ca()
    alice = make_user("alice@example.test", root, not_before=NOW + dt.timedelta(days=1))
    calls = _count_validations(monkeypatch)
    with pytest.raises(ChainUntrusted, match="not yet valid"):
        validate_signer_chain(alice.cert, [], [root.cert], NOW)
    assert validate_signer_chain(alice.cert, [], [root.cert], NOW + dt.timedelta(days=2))
    assert len(calls) == 2
