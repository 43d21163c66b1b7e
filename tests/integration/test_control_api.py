"""The control endpoint's JSON API (and the page's CSRF/cookie rules) against a running daemon,
with the real Dovecot of the `upstream` fixture as the credential check."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import subprocess
import sys
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.serialization import Encoding, pkcs12

from smime_proxy.harness import Upstream
from smime_proxy.throttle import Throttle
from support.control import (
    AsyncClient,
    Client,
    RunningControl,
    Upstreamish,
    control_running,
    free_port,
)
from support.pki import Identity, make_ca, make_user

ALICE = ("alice", "alice-pw")
SMP = "secure-mail-pw-1"  # a Secure Mail Password
FILE_PW = b"file-pw"


async def run(*args: Any, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    """`subprocess.run` in a worker thread: the daemon answering it runs on this loop."""
    return await asyncio.to_thread(subprocess.run, *args, **kwargs)


def imap_of(upstream: Upstream) -> Upstreamish:
    return Upstreamish(host=upstream.host, port=upstream.imap_port, tls="starttls",
                       ca_file=upstream.ca_file)


@pytest.fixture(scope="module")
def pki() -> Identity:
    return make_ca("Control Test CA")


@pytest.fixture(scope="module")
def alice_id(pki: Identity) -> Identity:
    return make_user("alice@example.test", pki)


@pytest.fixture
async def control(tmp_path: Path, upstream: Upstream) -> AsyncIterator[RunningControl]:
    async with control_running(tmp_path, imap_of(upstream),
                         front_options={"client_max_size": 64 * 1024}) as running:
        yield running


@pytest.fixture
def alice(control: RunningControl) -> AsyncClient:
    return control.async_client(*ALICE)  # closed with the daemon


def p12(identity: Identity, password: bytes = FILE_PW) -> bytes:
    return pkcs12.serialize_key_and_certificates(
        b"test", identity.key, identity.cert, identity.chain or None,
        serialization.BestAvailableEncryption(password),
    )


async def import_alice(client: AsyncClient, identity: Identity) -> None:
    res = await client.post("/api/v1/import", form={
        "file": ("alice.p12", p12(identity)), "file_password": FILE_PW.decode(),
        "password": SMP, "password2": SMP})
    assert res.status == 201, res.text


# --- basics -----------------------------------------------------------------------------------


async def test_health_metrics_and_openapi(control: RunningControl, alice: AsyncClient) -> None:
    assert (await alice.get("/health")).json() == {"status": "ok"}
    doc = (await alice.get("/api/v1/openapi.json")).json()
    assert doc["openapi"].startswith("3.0")
    assert {"/api/v1/status", "/api/v1/unlock", "/api/v1/import", "/api/v1/export",
            "/api/v1/remove", "/api/v1/generate", "/api/v1/password",
            "/api/v1/contacts", "/api/v1/mail-unlock"} <= set(doc["paths"])
    await alice.get("/api/v1/status")
    metrics = await alice.get("/metrics")
    assert metrics.status == 200
    assert "text/plain" in (metrics.header("Content-Type") or "")
    assert 'smime_control_requests_total{method="GET",route="/api/v1/status",status="200"}' \
        in metrics.text
    # the mail fronts' metrics are on the same page (issue 13, operator view)
    control.services.metrics.opened.labels("decrypted").inc()
    control.services.metrics.refusals.labels("imap", "login").inc()
    text = (await alice.get("/metrics")).text
    assert 'smime_imap_messages_opened_total{outcome="decrypted"} 1.0' in text
    assert 'smime_refusals_total{front="imap",reason="login"} 1.0' in text
    assert "smime_imap_open_seconds_bucket" in text and "smime_smtp_prepare_seconds" in text


async def test_status_without_key(alice: AsyncClient) -> None:
    res = await alice.get("/api/v1/status")
    assert res.status == 200
    body = res.json()
    assert body["user"] == "alice"
    assert body["key_present"] is False
    assert body["locked"] is True
    assert body["expires_at"] is None and body["certificate"] is None


async def test_wrong_mail_password_and_unknown_user_look_the_same(control: RunningControl) -> None:
    wrong_pw = await control.async_client("alice", "not-the-password").get("/api/v1/status")
    no_user = await control.async_client("nobody-here", "alice-pw").get("/api/v1/status")
    assert wrong_pw.status == no_user.status == 401
    assert wrong_pw.body == no_user.body
    assert "Basic" in (wrong_pw.header("WWW-Authenticate") or "")
    assert (await control.async_client().get("/api/v1/status")).status == 401


async def test_import_unlock_lock_export_remove(control: RunningControl, alice: AsyncClient,
                                          alice_id: Identity, pki: Identity) -> None:
    await import_alice(alice, alice_id)
    status = (await alice.get("/api/v1/status")).json()
    assert status["key_present"] is True and status["locked"] is True
    assert status["certificate"]["addresses"] == ["alice@example.test"]
    assert status["certificate"]["key_size"] == 2048

    again = await alice.post("/api/v1/import", form={
        "file": ("a.p12", p12(alice_id)), "file_password": "file-pw", "password": SMP,
        "password2": SMP})
    assert again.status == 409

    assert (await alice.post("/api/v1/unlock", json_body={"password": "wrong"})).status == 403
    res = await alice.post("/api/v1/unlock", json_body={"password": SMP})
    assert res.status == 200, res.text
    unlocked = res.json()
    assert unlocked["locked"] is False
    assert unlocked["seconds_left"] == 180
    assert unlocked["expires_at"] is not None
    control.services.secure_mail.agent_for("alice", control.clock())  # usable now

    assert (await alice.post("/api/v1/lock")).json()["locked"] is True

    export = await alice.post("/api/v1/export", json_body={
        "password": SMP, "export_password": "exp-pw", "export_password2": "exp-pw"})
    assert export.status == 200
    assert 'filename="CertAndKey.pfx"' in (export.header("Content-Disposition") or "")
    key, cert, _chain = pkcs12.load_key_and_certificates(export.body, b"exp-pw")
    assert cert is not None and key is not None
    assert cert.fingerprint(hashes.SHA256()) == alice_id.cert.fingerprint(hashes.SHA256())

    differ = await alice.post("/api/v1/export", json_body={
        "password": SMP, "export_password": "a", "export_password2": "b"})
    assert differ.status == 400
    wrong = await alice.post("/api/v1/export", json_body={
        "password": "nope", "export_password": "a", "export_password2": "a"})
    assert wrong.status == 403

    other = make_user("alice@example.test", pki)
    mismatch = await alice.post("/api/v1/remove", form={
        "file": ("other.p12", p12(other)), "file_password": "file-pw"})
    assert mismatch.status == 409
    assert (await alice.get("/api/v1/status")).json()["key_present"] is True

    removed = await alice.post("/api/v1/remove", form={
        "file": ("CertAndKey.pfx", export.body), "file_password": "exp-pw"})
    assert removed.status == 200, removed.text
    assert removed.json()["key_present"] is False
    assert (await alice.post("/api/v1/remove", form={
        "file": ("CertAndKey.pfx", export.body), "file_password": "exp-pw"})).status == 404

    # the exported file imports again
    back = await alice.post("/api/v1/import", form={
        "file": ("CertAndKey.pfx", export.body), "file_password": "exp-pw",
        "password": "second", "password2": "second"})
    assert back.status == 201
    assert (await alice.post("/api/v1/unlock", json_body={"password": "second"})).status == 200


async def test_mail_unlock_on_then_a_mail_login_unlocks_then_off(
        control: RunningControl, alice: AsyncClient, alice_id: Identity) -> None:
    """Issue 13: the user's choice; the copy is wrapped under the password of the request's
    own login (ALICE), so the next mail login with it unlocks the key."""
    assert (await alice.post("/api/v1/mail-unlock", json_body={"enable": True,
                                                               "password": SMP})).status == 404
    await import_alice(alice, alice_id)
    status = (await alice.get("/api/v1/status")).json()
    assert status["mail_unlock"] == {"allowed": True, "enabled": False}
    wrong = await alice.post("/api/v1/mail-unlock", json_body={"enable": True,
                                                               "password": "guess"})
    assert wrong.status == 403
    bad = await alice.post("/api/v1/mail-unlock", json_body={"enable": "yes"})
    assert bad.status == 400
    res = await alice.post("/api/v1/mail-unlock", json_body={"enable": True, "password": SMP})
    assert res.status == 200, res.text
    assert res.json()["mail_unlock"] == {"allowed": True, "enabled": True}
    assert res.json()["locked"] is True  # turning it on unlocks nothing
    mail = control.services.secure_mail
    assert mail.mail_login("alice", ALICE[1], control.clock()) == "unlocked"
    assert (await alice.get("/api/v1/status")).json()["locked"] is False
    res = await alice.post("/api/v1/mail-unlock", json_body={"enable": False})
    assert res.json()["mail_unlock"]["enabled"] is False
    mail.lock("alice")
    assert mail.mail_login("alice", ALICE[1], control.clock()) == "none"


async def test_import_refusals(alice: AsyncClient, alice_id: Identity) -> None:
    garbage = await alice.post("/api/v1/import", form={
        "file": ("x.p12", os.urandom(2000)), "file_password": "x", "password": SMP,
        "password2": SMP})
    assert garbage.status == 400
    assert "error" in garbage.json()
    wrong_file_pw = await alice.post("/api/v1/import", form={
        "file": ("a.p12", p12(alice_id)), "file_password": "not-it", "password": SMP,
        "password2": SMP})
    assert wrong_file_pw.status == 403
    differ = await alice.post("/api/v1/import", form={
        "file": ("a.p12", p12(alice_id)), "file_password": "file-pw", "password": SMP,
        "password2": SMP + "x"})
    assert differ.status == 400
    missing = await alice.post("/api/v1/import", form={"file_password": "file-pw",
                                                 "password": SMP, "password2": SMP})
    assert missing.status == 400
    not_multipart = await alice.post("/api/v1/import", json_body={"file": "x"})
    assert not_multipart.status == 400
    assert (await alice.get("/api/v1/status")).json()["key_present"] is False


async def test_oversized_upload_is_413(alice: AsyncClient) -> None:
    res = await alice.post("/api/v1/import", form={
        "file": ("big.p12", b"\x30" * (100 * 1024)), "file_password": "x",
        "password": SMP, "password2": SMP})
    assert res.status == 413
    assert "larger" in res.json()["error"]


async def test_generate_for_the_account_address(control: RunningControl,
                                               alice: AsyncClient) -> None:
    no_address = await alice.post("/api/v1/generate", json_body={"password": SMP, "password2": SMP})
    assert no_address.status == 400
    foreign = await alice.post("/api/v1/generate", json_body={
        "password": SMP, "password2": SMP, "email": "bob@example.test"})
    assert foreign.status == 400
    bad_type = await alice.post("/api/v1/generate", json_body={
        "password": SMP, "password2": SMP, "email": "alice@example.test", "key_type": "dsa"})
    assert bad_type.status == 400
    res = await alice.post("/api/v1/generate", json_body={
        "password": SMP, "password2": SMP, "email": "Alice@Example.Test",
        "key_type": "ec-p256"})
    assert res.status == 201, res.text
    cert = res.json()["certificate"]
    assert cert["addresses"] == ["alice@example.test"]
    assert cert["key_type"].startswith("EC")
    assert control.services.ca is not None
    assert cert["issuer"] == control.services.ca.certificate.subject.rfc4514_string()
    assert (await alice.post("/api/v1/generate", json_body={
        "password": SMP, "password2": SMP, "email": "alice@example.test"})).status == 409
    assert (await alice.post("/api/v1/unlock", json_body={"password": SMP})).status == 200


async def test_the_server_ca_certificate_is_offered(control: RunningControl,
                                                   alice: AsyncClient) -> None:
    """Issue 14: what an admin gives mail clients to trust, from the page (no login)."""
    res = await alice.get("/server-ca.pem")
    assert res.status == 200
    assert control.services.ca is not None
    pem = control.services.ca.certificate.public_bytes(Encoding.PEM)
    assert res.text.encode() == pem


async def test_generate_without_server_ca_is_409(tmp_path: Path, upstream: Upstream) -> None:
    async with control_running(tmp_path, imap_of(upstream), with_ca=False) as running:
        res = await running.async_client(*ALICE).post("/api/v1/generate", json_body={
            "password": SMP, "password2": SMP, "email": "alice@example.test"})
        assert res.status == 409
        assert (await running.async_client(*ALICE).get("/server-ca.pem")).status == 404


async def test_change_password(alice: AsyncClient, alice_id: Identity) -> None:
    await import_alice(alice, alice_id)
    assert (await alice.post("/api/v1/password", json_body={
        "old_password": "wrong", "new_password": "n", "new_password2": "n"})).status == 403
    assert (await alice.post("/api/v1/password", json_body={
        "old_password": SMP, "new_password": "n1", "new_password2": "n2"})).status == 400
    assert (await alice.post("/api/v1/password", json_body={
        "old_password": SMP, "new_password": "", "new_password2": ""})).status == 400
    ok = await alice.post("/api/v1/password", json_body={
        "old_password": SMP, "new_password": "new-smp", "new_password2": "new-smp"})
    assert ok.status == 200, ok.text
    assert (await alice.post("/api/v1/unlock", json_body={"password": SMP})).status == 403
    assert (await alice.post("/api/v1/unlock", json_body={"password": "new-smp"})).status == 200


async def test_contacts(alice: AsyncClient, pki: Identity) -> None:
    bob = make_user("bob@example.test", pki)
    carol = make_user("carol@example.test", pki)
    assert (await alice.get("/api/v1/contacts")).json() == {"contacts": []}
    pem = await alice.post("/api/v1/contacts", form={"file": ("bob.pem", bob.cert_pem())})
    assert pem.status == 201, pem.text
    der = await alice.post("/api/v1/contacts",
                     body=carol.cert.public_bytes(serialization.Encoding.DER),
                     content_type="application/pkix-cert")
    assert der.status == 201, der.text
    listed = (await alice.get("/api/v1/contacts")).json()["contacts"]
    assert [c["addresses"] for c in listed] == [["bob@example.test"], ["carol@example.test"]]
    res = await alice.post("/api/v1/contacts", form={"file": ("x.pem", b"garbage")})
    assert res.status == 400
    assert (await alice.post("/api/v1/contacts",
                      form={"file": ("ca.pem", pki.cert_pem())})).status == 400  # a CA: refused
    gone = await alice.request("DELETE", "/api/v1/contacts/bob@example.test")
    assert gone.status == 200 and gone.json() == {"removed": 1}
    assert (await alice.request("DELETE", "/api/v1/contacts/bob@example.test")).status == 404
    assert (await alice.request("DELETE", "/api/v1/contacts/not-an-address")).status == 400
    left = (await alice.get("/api/v1/contacts")).json()["contacts"]
    assert [c["addresses"] for c in left] == [["carol@example.test"]]


async def test_malformed_json_bodies_are_400(alice: AsyncClient) -> None:
    assert (await alice.post("/api/v1/unlock", body=b"{not json", content_type="application/json"
                      )).status == 400
    assert (await alice.post("/api/v1/unlock", json_body=["a"])).status == 400
    assert (await alice.post("/api/v1/unlock", json_body={"password": 5})).status == 400
    assert (await alice.post("/api/v1/unlock", json_body={})).status == 400


# --- Host, Origin, CSRF, cookies -----------------------------------------------------------


async def test_wrong_host_is_refused(control: RunningControl, alice: AsyncClient) -> None:
    port = control.port
    res = await alice.get("/api/v1/status", headers={"Host": f"evil.example:{port}"})
    assert res.status == 403
    assert (await alice.get("/api/v1/status", headers={"Host": "127.0.0.1:1"})).status == 403
    assert (await alice.get("/", headers={"Host": "rebound.example"})).status == 403
    assert (await alice.get("/", headers={"Host": f"mail.example.test:{port}"})).status == 403
    assert (await alice.get("/", headers={"Host": ""})).status == 403
    assert (await alice.get("/", headers={"Host": f"[::1]:{port}"})).status == 200
    # an IP literal cannot be a rebound name: reached by address, it is this server
    assert (await alice.get("/api/v1/status", headers={"Host": f"192.0.2.7:{port}"})).status == 200
    assert (await alice.get("/api/v1/status", headers={"Host": f"localhost:{port}"})).status == 200
    assert (await alice.get("/api/v1/status", headers={"Host": f"127.0.0.1:{port}"})).status == 200


async def test_foreign_origin_is_refused(control: RunningControl, alice: AsyncClient) -> None:
    own = f"http://127.0.0.1:{control.port}"
    res = await alice.post("/api/v1/lock", headers={"Origin": "http://evil.example"})
    assert res.status == 403
    assert (await alice.post("/api/v1/lock", headers={"Origin": "null"})).status == 403
    assert (await alice.post("/api/v1/lock", headers={
        "Origin": f"https://127.0.0.1:{control.port}"})).status == 403  # wrong scheme
    assert (await alice.post("/api/v1/lock", headers={
        "Origin": f"http://localhost.evil.example:{control.port}"})).status == 403
    res = await alice.post("/api/v1/lock", headers={"Sec-Fetch-Site": "cross-site"})
    assert res.status == 403
    assert (await alice.post("/api/v1/lock", headers={"Origin": own})).status == 200
    assert (await alice.post("/api/v1/lock")).status == 200  # a script (no Origin) with Basic auth
    # a GET from anywhere is harmless: it changes nothing
    res = await alice.get("/api/v1/status", headers={"Origin": "http://evil.example"})
    assert res.status == 200


async def test_web_login_session_and_csrf(control: RunningControl, alice_id: Identity) -> None:
    web = control.async_client()
    page = await web.get("/")
    assert page.status == 200 and "Log in" in page.text
    # the login form itself carries a token (login CSRF)
    forged = await web.post("/login", urlencoded={"user": "alice", "password": "alice-pw"})
    assert forged.status == 403
    wrong = await web.web_login("alice", "wrong-pw")
    assert wrong.status == 401 and "wrong user name or password" in wrong.text
    res = await web.web_login("alice", "alice-pw", domain="example.test")
    assert res.status == 303, res.text
    cookie = next(c for c in res.set_cookies() if c.startswith("smime-session="))
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/" in cookie
    assert "Secure" not in cookie  # plain HTTP on loopback
    main = await web.get("/")
    assert "Logged in as" in main.text and "Import" in main.text
    assert 'value="alice@example.test"' in main.text  # generate panel: user@domain of login
    token = web.csrf(main.text)

    assert (await web.post("/lock", urlencoded={})).status == 403
    assert (await web.post("/lock", urlencoded={"csrf": "x" * 43})).status == 403
    assert (await web.post("/import", form={"file": ("a.p12", p12(alice_id)),
                                     "file_password": "file-pw", "password": SMP,
                                     "password2": SMP})).status == 403
    assert control.services.secure_mail.has_key("alice") is False

    imported = await web.post("/import", form={"csrf": token, "file": ("a.p12", p12(alice_id)),
                                         "file_password": "file-pw", "password": SMP,
                                         "password2": SMP})
    assert imported.status == 303
    assert control.services.secure_mail.has_key("alice") is True
    assert "were imported" in (await web.get("/")).text
    unlocked = await web.post("/unlock", urlencoded={"csrf": token, "password": SMP})
    assert unlocked.status == 303
    html = (await web.get("/")).text
    assert "Secure Mail is Unlocked" in html and 'data-seconds="180"' in html
    # the other forms: change of password (a wrong one is shown, not a crash), contacts
    bad = await web.post("/password", urlencoded={"csrf": token, "old_password": "nope",
                                             "new_password": "n", "new_password2": "n"})
    assert bad.status == 303
    assert "wrong user name or Secure Mail Password" in (await web.get("/")).text
    changed = await web.post("/password", urlencoded={"csrf": token, "old_password": SMP,
                                                 "new_password": "web-smp",
                                                 "new_password2": "web-smp"})
    assert changed.status == 303 and "was changed" in (await web.get("/")).text
    bob = make_user("bob@example.test", make_ca("Web CA"))
    await web.post("/contacts/add", form={"csrf": token, "file": ("bob.pem", bob.cert_pem())})
    book = (await web.get("/")).text
    assert "bob@example.test" in book and "[certificate]" in book
    await web.post("/contacts/remove", urlencoded={"csrf": token, "address": "bob@example.test"})
    assert "The address book is empty." in (await web.get("/")).text
    # a valid token with a foreign origin is still refused
    assert (await web.post("/lock", urlencoded={"csrf": token},
                    headers={"Origin": "http://evil.example"})).status == 403
    # logout locks the key and ends the session
    assert (await web.post("/logout", urlencoded={"csrf": token})).status == 303
    assert control.services.secure_mail.unlock_state("alice", control.clock()).unlocked is False
    assert "Log in" in (await web.get("/")).text
    res = await web.post("/unlock", urlencoded={"csrf": token, "password": "web-smp"})
    assert res.status == 403


async def test_tls_listener_cookie_is_secure_host_prefixed(tmp_path: Path,
                                                     upstream: Upstream) -> None:
    tls = upstream.workdir / "tls"
    async with control_running(tmp_path, imap_of(upstream), tls_cert=tls / "server-cert.pem",
                         tls_key=tls / "server-key.pem", tls_ca=upstream.ca_file) as running:
        assert running.url.startswith("https://")
        web = running.async_client()
        res = await web.web_login("alice", "alice-pw")
        assert res.status == 303, res.text
        cookie = next(c for c in res.set_cookies() if c.startswith("__Host-smime-session="))
        assert "Secure" in cookie and "HttpOnly" in cookie and "SameSite=Strict" in cookie
        api = running.async_client(*ALICE)
        assert (await api.get("/api/v1/status")).status == 200
        own = f"https://127.0.0.1:{running.port}"
        assert (await api.post("/api/v1/lock", headers={"Origin": own})).status == 200
        # names in the listener's certificate are its own; others are not
        named = f"mail.example.test:{running.port}"
        assert (await api.get("/api/v1/status", headers={"Host": named})).status == 200
        assert (await api.post("/api/v1/lock", headers={"Host": named,
                                                 "Origin": f"https://{named}"})).status == 200
        assert (await api.get("/api/v1/status", headers={
            "Host": f"evil.example:{running.port}"})).status == 403
        assert (await api.post("/api/v1/lock", headers={
            "Origin": f"https://evil.example:{running.port}"})).status == 403
        assert (await api.post("/api/v1/lock", headers={
            "Origin": f"http://127.0.0.1:{running.port}"})).status == 403


# --- throttling and auto-lock --------------------------------------------------------------


async def test_unlock_throttled_per_user_with_growing_delays(control: RunningControl,
                                                       alice: AsyncClient,
                                                       alice_id: Identity) -> None:
    await import_alice(alice, alice_id)
    for _ in range(3):
        assert (await alice.post("/api/v1/unlock", json_body={"password": "guess"})).status == 403
    first = await alice.post("/api/v1/unlock", json_body={"password": SMP})
    assert first.status == 429  # even the right password must wait
    assert first.header("Retry-After") == "1"
    control.clock.advance(1)
    assert (await alice.post("/api/v1/unlock", json_body={"password": "guess"})).status == 403
    second = await alice.post("/api/v1/unlock", json_body={"password": "guess"})
    assert second.status == 429 and second.header("Retry-After") == "2"
    control.clock.advance(2)
    assert (await alice.post("/api/v1/unlock", json_body={"password": "guess"})).status == 403
    third = await alice.post("/api/v1/unlock", json_body={"password": "guess"})
    assert third.status == 429 and third.header("Retry-After") == "4"
    # export and change of password count too (they check the same password)
    assert (await alice.post("/api/v1/export", json_body={
        "password": SMP, "export_password": "e", "export_password2": "e"})).status == 429
    control.clock.advance(4)
    assert (await alice.post("/api/v1/unlock", json_body={"password": SMP})).status == 200
    # a success starts the count again
    assert (await alice.post("/api/v1/unlock", json_body={"password": "guess"})).status == 403
    assert (await alice.post("/api/v1/unlock", json_body={"password": SMP})).status == 200
    metrics = (await alice.get("/metrics")).text
    assert 'smime_control_unlocks_total{result="throttled"}' in metrics
    assert 'smime_control_unlocks_total{result="wrong_password"} 6.0' in metrics


async def test_unlock_throttled_per_source_address(tmp_path: Path, upstream: Upstream) -> None:
    async with control_running(
        tmp_path, imap_of(upstream),
        throttle=lambda clock: Throttle(clock, free_user=3, free_address=4),
    ) as running:
        alice = running.async_client(*ALICE)
        bob = running.async_client("bob", upstream.users["bob"])
        carol = running.async_client("carol", upstream.users["carol"])
        for client in (alice, alice, bob, bob):  # users without a key: the same 403
            assert (await client.post("/api/v1/unlock", json_body={"password": "x"})).status == 403
        res = await carol.post("/api/v1/unlock", json_body={"password": "x"})
        assert res.status == 429  # carol's first attempt, but from the same address


async def test_auto_lock_idle_and_absolute(tmp_path: Path, upstream: Upstream,
                                     alice_id: Identity) -> None:
    async with control_running(tmp_path, imap_of(upstream), idle_timeout=180,
                         max_unlock=400) as running:
        alice = running.async_client(*ALICE)
        await import_alice(alice, alice_id)
        assert (await alice.post("/api/v1/unlock", json_body={"password": SMP})).status == 200
        running.clock.advance(179)
        status = (await alice.get("/api/v1/status")).json()
        assert status["locked"] is False and status["seconds_left"] == 1
        running.clock.advance(1)
        assert (await alice.get("/api/v1/status")).json()["locked"] is True

        # in use every 150 s: the idle timer never runs out, the absolute maximum does
        assert (await alice.post("/api/v1/unlock", json_body={"password": SMP})).status == 200
        mail = running.services.secure_mail
        for _ in range(2):
            running.clock.advance(150)
            mail.agent_for("alice", running.clock())
        status = (await alice.get("/api/v1/status")).json()
        assert status["locked"] is False and status["seconds_left"] == 100
        running.clock.advance(100)
        assert (await alice.get("/api/v1/status")).json()["locked"] is True
        # the credential cache is 5 minutes at most: past it, Dovecot is asked again (still ok)
        running.clock.advance(301)
        assert (await alice.get("/api/v1/status")).status == 200


# --- the upstream is down ------------------------------------------------------------------


async def test_upstream_refusing_connections_is_503(tmp_path: Path) -> None:
    closed = free_port()
    async with control_running(tmp_path, Upstreamish("127.0.0.1", closed, tls="none")) as running:
        res = await running.async_client(*ALICE).get("/api/v1/status")
        assert res.status == 503
        assert "cannot check your password" in res.json()["error"]
        assert res.header("Retry-After") is not None
        page = await running.async_client().web_login("alice", "alice-pw")
        assert page.status == 503


async def test_upstream_silent_is_503_not_a_hang(tmp_path: Path) -> None:
    """A server that accepts and never greets: the check gives up at its time limit."""
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        silent.settimeout(0.2)
        while not stop.is_set():
            try:
                accepted.append(silent.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        async with control_running(tmp_path, Upstreamish("127.0.0.1", silent.getsockname()[1],
                                                   tls="starttls"),
                             front_options={"imap_timeout": 1.0}) as running:
            client = running.async_client(*ALICE)
            client.timeout = 30.0  # far above the check's limit: a hang would fail here
            res = await client.get("/api/v1/status")
            assert res.status == 503
            assert len(accepted) >= 1  # it really did connect
    finally:
        stop.set()
        thread.join(5)
        for conn in accepted:
            conn.close()
        silent.close()


async def test_unverifiable_upstream_certificate_is_503(tmp_path: Path, upstream: Upstream) -> None:
    """`verify: true` against the system store: Dovecot's test CA is unknown there."""
    imap = Upstreamish(upstream.host, upstream.imaps_port, tls="implicit", ca_file=None)
    async with control_running(tmp_path, imap) as running:
        assert (await running.async_client(*ALICE).get("/api/v1/status")).status == 503
    insecure = Upstreamish(upstream.host, upstream.imaps_port, tls="implicit", verify=False)
    async with control_running(tmp_path / "b", insecure) as running:
        assert (await running.async_client(*ALICE).get("/api/v1/status")).status == 200


# --- logs and CLI --------------------------------------------------------------------------


async def test_no_password_in_logs(control: RunningControl, alice: AsyncClient, alice_id: Identity,
                             caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    await import_alice(alice, alice_id)
    await alice.post("/api/v1/unlock", json_body={"password": "wrong-guess-xyz"})
    await alice.post("/api/v1/unlock", json_body={"password": SMP})
    await control.async_client("alice", "bad-mail-pw-xyz").get("/api/v1/status")
    text = caplog.text
    assert "unlocked" in text  # events are logged ...
    for secret in (SMP, "wrong-guess-xyz", "bad-mail-pw-xyz", "alice-pw", "file-pw"):
        assert secret not in text  # ... secrets are not


async def test_cli_unlock_and_lock(control: RunningControl, alice: AsyncClient, alice_id: Identity,
                             tmp_path: Path) -> None:
    await import_alice(alice, alice_id)
    mail_pw = tmp_path / "mail-pw"
    mail_pw.write_text("alice-pw\n")
    smp = tmp_path / "smp"
    smp.write_text(SMP + "\n")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])}
    base = [sys.executable, "-m", "smime_proxy"]
    res = await run(
        [*base, "unlock", "alice", "--url", control.url, "--password-file", str(smp),
         "--mail-password-file", str(mail_pw)],
        capture_output=True, text=True, env=env, timeout=60, check=False)
    assert res.returncode == 0, res.stderr
    assert "unlocked" in res.stdout
    assert control.services.secure_mail.unlock_state("alice", control.clock()).unlocked
    wrong = tmp_path / "wrong"
    wrong.write_text("nope\n")
    res = await run(
        [*base, "unlock", "alice", "--url", control.url, "--password-file", str(wrong),
         "--mail-password-file", str(mail_pw)],
        capture_output=True, text=True, env=env, timeout=60, check=False)
    assert res.returncode == 1
    assert "nope" not in res.stderr + res.stdout
    # both passwords from stdin: the mail password first, then the Secure Mail Password
    res = await run(
        [*base, "lock", "alice", "--url", control.url, "--mail-password-file", "-"],
        input="alice-pw\n", capture_output=True, text=True, env=env, timeout=60, check=False)
    assert res.returncode == 0, res.stderr
    assert not control.services.secure_mail.unlock_state("alice", control.clock()).unlocked
    res = await run(
        [*base, "lock", "alice", "--url", control.url, "--mail-password-file", str(wrong)],
        capture_output=True, text=True, env=env, timeout=60, check=False)
    assert res.returncode == 1
    # the URL from the daemon's config file; both passwords on stdin, mail password first
    import yaml

    from support.control import control_config

    config = tmp_path / "daemon.yaml"
    config.write_text(yaml.safe_dump(control_config(
        tmp_path, Upstreamish("127.0.0.1", 1), port=control.port)))
    res = await run(
        [*base, "unlock", "alice", "--config", str(config), "--mail-password-file", "-",
         "--password-file", "-"],
        input=f"alice-pw\n{SMP}\n", capture_output=True, text=True, env=env, timeout=60,
        check=False)
    assert res.returncode == 0, res.stderr
    assert control.services.secure_mail.unlock_state("alice", control.clock()).unlocked
    # no terminal and no file: a clear usage error, not a hang
    res = await run([*base, "lock", "alice", "--url", control.url],
                         stdin=subprocess.DEVNULL, capture_output=True, text=True, env=env,
                         timeout=60, check=False)
    assert res.returncode == 2 and "--mail-password-file" in res.stderr
    # the daemon is not there
    res = await run(
        [*base, "lock", "alice", "--url", f"http://127.0.0.1:{free_port()}",
         "--mail-password-file", str(mail_pw)],
        capture_output=True, text=True, env=env, timeout=60, check=False)
    assert res.returncode == 2 and "cannot reach the daemon" in res.stderr


# --- the credential check itself -----------------------------------------------------------


async def test_odd_credentials_are_a_plain_401(control: RunningControl) -> None:
    """Quotes, backslashes and non-ASCII (sent as an IMAP literal) reach Dovecot as such."""
    for user, password in (("alice", 'pw "quoted" \\ back'), ("alice", "pässwörd"),
                           ("ålice", "alice-pw"), ("alice", "a\r\nb1 LOGOUT")):
        res = await control.async_client(user, password).get("/api/v1/status")
        assert res.status == 401, (user, res.text)


async def test_plain_imap_upstream_on_loopback(tmp_path: Path, upstream: Upstream) -> None:
    imap = Upstreamish(upstream.host, upstream.imap_port, tls="none")
    async with control_running(tmp_path, imap) as running:
        assert (await running.async_client(*ALICE).get("/api/v1/status")).status == 200


async def test_login_attempts_throttled(control: RunningControl) -> None:
    for name in ("bob", "Bob", "bob@example.test"):  # spellings of one account: one count
        assert (await control.async_client(name, "wrong").get("/api/v1/status")).status == 401
    res = await control.async_client("bob", "bob-pw").get("/api/v1/status")
    assert res.status == 429 and res.header("Retry-After") == "1"
    control.clock.advance(1)
    assert (await control.async_client("bob", "bob-pw").get("/api/v1/status")).status == 200
    # the cached success does not let a wrong password through
    assert (await control.async_client("bob", "wrong").get("/api/v1/status")).status == 401


def _fake_imap(script: bytes) -> tuple[socket.socket, threading.Thread, list[bytes]]:
    """A one-connection server: sends a greeting, then `script` in one write after the
    client's STARTTLS command; records what the client sent."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    received: list[bytes] = []

    def serve() -> None:
        server.settimeout(20)
        try:
            conn, _ = server.accept()
        except OSError:
            return
        with conn:
            conn.settimeout(5)
            conn.sendall(b"* OK fake IMAP ready\r\n")
            try:
                received.append(conn.recv(4096))
                conn.sendall(script)
                received.append(conn.recv(4096))
            except OSError:
                pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return server, thread, received


async def test_response_injected_before_starttls_handshake_is_refused(tmp_path: Path) -> None:
    """notes/security.md item 7: bytes after the STARTTLS OK, before the handshake."""
    server, thread, received = _fake_imap(b"~spx0 OK begin TLS\r\na1 OK LOGIN done\r\n")
    try:
        imap = Upstreamish("127.0.0.1", server.getsockname()[1], tls="starttls")
        async with control_running(tmp_path, imap, front_options={"imap_timeout": 5.0}) as running:
            res = await running.async_client(*ALICE).get("/api/v1/status")
            assert res.status == 503
        thread.join(10)
        assert received[0] == b"~spx0 STARTTLS\r\n"
        # refused before any handshake: no TLS ClientHello (0x16) was sent
        assert received[1:] == [b""]
    finally:
        server.close()


async def test_starttls_refused_is_503_and_no_plaintext_login(tmp_path: Path) -> None:
    server, thread, received = _fake_imap(b"~spx0 NO no TLS here\r\n")
    try:
        imap = Upstreamish("127.0.0.1", server.getsockname()[1], tls="starttls")
        async with control_running(tmp_path, imap, front_options={"imap_timeout": 5.0}) as running:
            assert (await running.async_client(*ALICE).get("/api/v1/status")).status == 503
        thread.join(10)
        assert b"LOGIN" not in b"".join(received)
    finally:
        server.close()


def test_serve_subprocess_serves_the_control_endpoint(tmp_path: Path,
                                                      upstream: Upstream) -> None:
    """`smime-proxy serve --config` starts the control front and stops on SIGTERM."""
    import yaml

    from support.control import control_config

    data = control_config(tmp_path, imap_of(upstream))
    config = tmp_path / "smime-proxy.yaml"
    config.write_text(yaml.safe_dump(data))
    port = data["listeners"]["control"]["port"]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])}
    proc = subprocess.Popen([sys.executable, "-m", "smime_proxy", "serve", "--config",
                             str(config)], env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        client = Client(f"http://127.0.0.1:{port}", auth=ALICE)
        for _ in range(300):
            try:
                if client.get("/health").status == 200:
                    break
            except OSError:
                pass
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else b""
            threading.Event().wait(0.05)
        assert client.get("/api/v1/status").json()["user"] == "alice"
        assert client.post("/api/v1/unlock", json_body={"password": "x"}).status == 403
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert b"alice-pw" not in err


def _open_sockets() -> int:
    fds = Path("/proc/self/fd")
    count = 0
    for fd in fds.iterdir():
        with contextlib.suppress(OSError):
            count += os.readlink(fd).startswith("socket:")
    return count


async def test_the_login_check_leaves_no_connection_behind(upstream: Upstream) -> None:
    """The check's TLS connection is closed before check_login returns (a TLS close is
    asynchronous: left pending, its socket outlived the check)."""
    from smime_proxy.config import UpstreamEndpoint
    from smime_proxy.control.imapcheck import check_login

    endpoint = UpstreamEndpoint(upstream.host, upstream.imap_port, "starttls", verify=True,
                                ca_file=upstream.ca_file)
    before = _open_sockets()
    assert await check_login(endpoint, "alice", "alice-pw") is True
    assert await check_login(endpoint, "alice", "wrong") is False
    assert _open_sockets() == before


async def test_one_identity_per_user(tmp_path: Path, upstream: Upstream) -> None:
    """Security issue, item 2: the upstream (Dovecot, %Ln) takes `alice`, `Alice` and
    `alice@partner.example` as one account; so does the proxy, and the server CA issues only
    for the addresses the admin gave alice."""
    users = {"username_format": "%Ln", "local_domains": ["example.test"]}
    async with control_running(tmp_path, imap_of(upstream), users=users) as running:
        partner = running.async_client("alice@partner.example", "alice-pw")
        res = await partner.post("/api/v1/generate", json_body={
            "password": SMP, "password2": SMP, "email": "alice@partner.example"})
        assert res.status == 400 and "alice@example.test" in res.json()["error"]
        res = await partner.post("/api/v1/generate", json_body={"password": SMP,
                                                                "password2": SMP})
        assert res.status == 201, res.text
        assert res.json()["user"] == "alice"
        assert res.json()["certificate"]["addresses"] == ["alice@example.test"]
        for login in ("alice", "Alice", "alice@example.test"):
            status = (await running.async_client(login, "alice-pw").get("/api/v1/status")).json()
            assert status["user"] == "alice" and status["key_present"] is True, login


async def test_import_only_for_the_users_own_addresses(tmp_path: Path, upstream: Upstream,
                                                       pki: Identity,
                                                       alice_id: Identity) -> None:
    """Security issue, item 2: with the admin's addresses known, a key is imported only with
    a certificate for one of them (the override: list the address in users.addresses)."""
    users = {"username_format": "%Ln", "local_domains": ["example.test"],
             "addresses": {"bob": ["bob@example.test", "bob@partner.example"]}}
    async with control_running(tmp_path, imap_of(upstream), users=users) as running:
        alice = running.async_client(*ALICE)
        foreign = make_user("bob@example.test", pki)
        res = await alice.post("/api/v1/import", form={
            "file": ("b.p12", p12(foreign)), "file_password": FILE_PW.decode(),
            "password": SMP, "password2": SMP})
        assert res.status == 400 and "not for one of your addresses" in res.json()["error"]
        await import_alice(alice, alice_id)
        bob = running.async_client("bob", upstream.users["bob"])
        res = await bob.post("/api/v1/import", form={
            "file": ("p.p12", p12(make_user("bob@partner.example", pki))),
            "file_password": FILE_PW.decode(), "password": SMP, "password2": SMP})
        assert res.status == 201, res.text


async def test_encryption_method_is_kept_per_user(control: RunningControl,
                                                  alice: AsyncClient) -> None:
    assert (await alice.get("/api/v1/status")).json()["encryption_method"] == "automatic"
    bad = await alice.post("/api/v1/encryption-method", json_body={"method": "3des"})
    assert bad.status == 400
    assert "automatic, aes-256-gcm, aes-256-cbc, aes-128-cbc" in bad.json()["error"]
    res = await alice.post("/api/v1/encryption-method", json_body={"method": "aes-128-cbc"})
    assert res.status == 200, res.text
    assert res.json()["encryption_method"] == "aes-128-cbc"
    assert control.services.secure_mail.encryption_method("alice") == "aes-128-cbc"
    res = await alice.post("/api/v1/encryption-method", json_body={"method": "automatic"})
    assert res.json()["encryption_method"] == "automatic"
    assert control.services.secure_mail.encryption_method("alice") is None


async def test_store_encrypted_switch(control: RunningControl, alice: AsyncClient) -> None:
    assert (await alice.get("/api/v1/status")).json()["store_encrypted"] is False
    bad = await alice.post("/api/v1/store-encrypted", json_body={"enable": "yes"})
    assert bad.status == 400
    res = await alice.post("/api/v1/store-encrypted", json_body={"enable": True})
    assert res.status == 200 and res.json()["store_encrypted"] is True
    assert control.services.secure_mail.store_encrypted_choice("alice")
    await alice.post("/api/v1/store-encrypted", json_body={"enable": False})
    assert not control.services.secure_mail.store_encrypted_choice("alice")


async def test_a_folder_encrypted_through_the_api(control: RunningControl, alice: AsyncClient,
                                                  alice_id: Identity,
                                                  upstream: Upstream) -> None:
    import imaplib

    from smime_proxy.smime_forms import is_encrypted

    mailbox = f"ApiStore{free_port()}"
    with imaplib.IMAP4(upstream.host, upstream.imap_port) as imap:
        imap.login("alice", upstream.users["alice"])
        imap.create(mailbox)
        for n in range(2):
            imap.append(mailbox, "(\\Seen)", None,
                        f"Subject: api {n}\r\nFrom: d@example.org\r\n\r\nbody {n}\r\n".encode())
    await import_alice(alice, alice_id)
    body = {"action": "encrypt", "mailbox": mailbox, "password": SMP}
    assert (await alice.post("/api/v1/store", json_body={**body, "password": "wrong"})
            ).status == 403
    assert (await alice.post("/api/v1/store", json_body={**body, "action": "shred"})
            ).status == 400
    started = await alice.post("/api/v1/store", json_body=body)
    assert started.status == 202, started.text
    ident = started.json()["id"]
    for _ in range(200):
        state = (await alice.get(f"/api/v1/store/{ident}")).json()
        if state["state"] != "running":
            break
        await asyncio.sleep(0.05)
    assert (state["state"], state["done"], state["total"]) == ("done", 2, 2), state
    assert (await alice.get("/api/v1/store/nope")).status == 404
    with imaplib.IMAP4(upstream.host, upstream.imap_port) as imap:
        imap.login("alice", upstream.users["alice"])
        imap.select(mailbox, readonly=True)
        _, data = imap.fetch("1:*", "(BODY.PEEK[])")
    stored = [item[1] for item in data if isinstance(item, tuple)]
    assert len(stored) == 2 and all(is_encrypted(m) for m in stored)


async def test_folders_and_found_messages_through_the_api(control: RunningControl,
                                                          alice: AsyncClient,
                                                          upstream: Upstream) -> None:
    import imaplib

    mailbox = f"ApiList{free_port()}"
    with imaplib.IMAP4(upstream.host, upstream.imap_port) as imap:
        imap.login("alice", upstream.users["alice"])
        imap.create(mailbox)
        for subject in ("invoice 1", "holiday", "invoice 2"):
            imap.append(mailbox, "", None,
                        f"Subject: {subject}\r\nFrom: d@example.org\r\n\r\nbody\r\n".encode())
    folders = await alice.get("/api/v1/folders")
    assert folders.status == 200, folders.text
    counts = {f["mailbox"]: f for f in folders.json()["folders"]}
    assert counts[mailbox] == {"mailbox": mailbox, "total": 3, "encrypted": 0, "plain": 3}
    found = await alice.get(f"/api/v1/folders/messages?mailbox={mailbox}&subject=invoice")
    assert found.status == 200, found.text
    assert [m["subject"] for m in found.json()["messages"]] == ["invoice 2", "invoice 1"]
    assert (await alice.get("/api/v1/folders/messages?mailbox=NoSuchFolder")).status == 404
    assert (await alice.get("/api/v1/folders/messages")).status == 400
