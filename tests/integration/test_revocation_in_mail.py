"""Revocation where mail is read and sent, against a real `openssl ocsp` responder and CRLs
over HTTP (support/revocation_pki.py): the X-SMIME-Status of a signed message whose signer
is good, revoked, or of unknown status (soft-fail and hard-fail), as the IMAP front's worker
opens it; the SMTP front's choice of a recipient certificate; `policy explain`."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from smime_proxy.crypto.keyagent import InProcessKeyAgent
from smime_proxy.display import open_message
from smime_proxy.errors import NoRecipientCertificate
from smime_proxy.revocation import RevocationChecker, check_chain
from smime_proxy.smime import SignerReport, sign_message
from smime_proxy.smtp.keys import ServiceKeys
from support.pki import Identity, simple_message
from support.revocation_pki import RevocationPki, free_port, real_now, revocation_pki
from support.smtp_proxy import key_world


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RevocationPki]:
    with revocation_pki(tmp_path_factory.mktemp("revocation-mail")) as it:
        yield it


def _signed(who: Identity) -> bytes:
    message = simple_message().replace(b"alice@example.test", who.email.encode())
    agent = InProcessKeyAgent(who.key, who.cert, tuple(who.chain))
    return sign_message(message, agent, now=real_now())


def _status(pki: RevocationPki, message: bytes, *, hard_fail: bool = False) -> str:
    checker = RevocationChecker(timeout=3)
    now = real_now()

    def check(signer: SignerReport) -> str:  # what imap.opening gives open_message
        return check_chain(checker, signer.chain, now).status

    opened = open_message(message, None, [pki.ca.cert], now=now, revocation=check,
                          revocation_hard_fail=hard_fail)
    return opened.status


def test_a_good_signer(pki: RevocationPki) -> None:
    port = free_port()
    signer = pki.user("good@example.test", ocsp_port=port)
    with pki.ocsp_responder(port):
        status = _status(pki, _signed(signer))
    assert "signature=valid; signer=good@example.test; revocation=good" in status


def test_a_revoked_signer(pki: RevocationPki) -> None:
    port = free_port()
    signer = pki.user("revoked@example.test", ocsp_port=port, index="R")
    with pki.ocsp_responder(port):
        status = _status(pki, _signed(signer))
    assert "signature=revoked; signer=revoked@example.test" in status
    assert "revocation=" not in status and "headers=" not in status


def test_a_revoked_signer_from_the_crl_when_the_responder_is_down(pki: RevocationPki) -> None:
    signer = pki.user("crl-revoked@example.test", ocsp_port=free_port(), index="R",
                      crl_path="fresh.crl")
    pki.publish("fresh.crl", pki.crl())
    assert "signature=revoked" in _status(pki, _signed(signer))


@pytest.mark.parametrize("hard_fail", [False, True])
def test_unknown_status_soft_and_hard(pki: RevocationPki, hard_fail: bool) -> None:
    signer = pki.user("unknown@example.test", ocsp_port=free_port(), crl_path=None)
    status = _status(pki, _signed(signer), hard_fail=hard_fail)
    if hard_fail:
        assert "signature=revocation-unknown; signer=unknown@example.test" in status
    else:
        assert "signature=valid; signer=unknown@example.test; revocation=unknown" in status


def test_a_stale_crl_is_no_answer(pki: RevocationPki) -> None:
    signer = pki.user("stale@example.test", crl_path="stale.crl")
    old = real_now() - dt.timedelta(days=10)
    pki.publish("stale.crl", pki.crl(this_update=old, next_update=old + dt.timedelta(days=1)))
    assert "signature=revocation-unknown" in _status(pki, _signed(signer), hard_fail=True)


# --- sending: the recipient's certificate --------------------------------------------------


def _keys(pki: RevocationPki, mode: str, *known: Identity) -> ServiceKeys:
    world = key_world(now=real_now())
    for identity in known:
        world.know("alice", identity)
    return ServiceKeys(world.secure_mail, world.contacts, world.now,
                       revocation=RevocationChecker(timeout=3),
                       revocation_mode=mode,  # type: ignore[arg-type]
                       issuers=(pki.ca.cert,))


def test_a_revoked_recipient_certificate_is_not_used(pki: RevocationPki) -> None:
    port = free_port()
    good = pki.user("rcpt-good@example.test", ocsp_port=port)
    revoked = pki.user("rcpt-revoked@example.test", ocsp_port=port, index="R")
    with pki.ocsp_responder(port):
        keys = _keys(pki, "soft-fail", good, revoked)
        located = keys.locate("alice", good.email)
        assert (located.source, located.revocation and located.revocation.status) == (
            "address book", "good")
        with pytest.raises(NoRecipientCertificate) as info:
            keys.recipient_certificate("alice", revoked.email)
        assert info.value.addresses == [revoked.email]


def test_hard_fail_needs_an_answer_for_the_recipient(pki: RevocationPki) -> None:
    unknown = pki.user("rcpt-unknown@example.test", ocsp_port=free_port(), crl_path=None)
    soft = _keys(pki, "soft-fail", unknown).locate("alice", unknown.email)
    assert soft.revocation is not None and soft.revocation.status == "unknown"
    with pytest.raises(NoRecipientCertificate):
        _keys(pki, "hard-fail", unknown).locate("alice", unknown.email)


def test_policy_explain_shows_source_and_revocation(pki: RevocationPki, tmp_path: Path) -> None:
    from smime_proxy.app import stores_of
    from support.control import Upstreamish, control_config

    port = free_port()
    bob = pki.user("explain-bob@example.test", ocsp_port=port)
    data_dir = tmp_path / "data"
    with stores_of(data_dir) as stores:
        stores.contacts.add("alice", bob.cert_pem())
    roots = tmp_path / "roots.pem"
    roots.write_bytes(pki.ca.cert_pem())
    config = control_config(tmp_path, Upstreamish("127.0.0.1", 1, tls="none"))
    config.update({"revocation": "soft-fail", "trust_roots": [str(roots)],
                   "data_dir": str(data_dir)})
    import yaml

    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    with pki.ocsp_responder(port):
        res = subprocess.run(
            [sys.executable, "-m", "smime_proxy", "--data-dir", str(data_dir), "policy",
             "explain", "--from", "alice@example.test", "--to", bob.email, "--user", "alice",
             "--config", str(tmp_path / "config.yaml")],
            capture_output=True, text=True, timeout=60, check=False)
    assert res.returncode == 0, res.stderr
    assert "certificates (user alice; revocation: soft-fail):" in res.stdout
    assert f"  - {bob.email}: address book, SHA-256 " in res.stdout
    assert f"; revocation: good (OCSP: good (responder http://127.0.0.1:{port}/))" in res.stdout


def test_the_imap_workers_check_per_the_config(pki: RevocationPki, tmp_path: Path) -> None:
    """`imap.opening.open_for_client`, as the IMAP front's worker threads run it, with the
    daemon's services built from a config saying `revocation: hard-fail`."""
    import yaml

    from smime_proxy.app import build_services
    from smime_proxy.config import parse_config
    from smime_proxy.imap.opening import open_for_client
    from support.control import Upstreamish, control_config

    port = free_port()
    revoked = pki.user("imap-revoked@example.test", ocsp_port=port, index="R")
    unknown = pki.user("imap-unknown@example.test", ocsp_port=free_port(), crl_path=None)
    roots = tmp_path / "roots.pem"
    roots.write_bytes(pki.ca.cert_pem())
    data = control_config(tmp_path, Upstreamish("127.0.0.1", 1, tls="none"))
    data.update({"revocation": "hard-fail", "trust_roots": [str(roots)]})
    services = build_services(parse_config(yaml.safe_load(yaml.safe_dump(data)),
                                           base_dir=tmp_path), kdf_iterations=1000)
    with pki.ocsp_responder(port):
        first = open_for_client(services, "bob", _signed(revoked), 1).content
    second = open_for_client(services, "bob", _signed(unknown), 2).content
    assert first is not None and second is not None
    assert b"signature=revoked; signer=imap-revoked@example.test" in first.split(b"\r\n")[0]
    assert b"signature=revocation-unknown" in second.split(b"\r\n")[0]
