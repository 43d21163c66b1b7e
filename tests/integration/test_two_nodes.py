"""Two nodes, one user (issue 12 part 4): two `smime-proxy serve` daemons sharing one real
PostgreSQL (keys, address books) and one real Redis (unlocks), in front of the same Dovecot
and Postfix. bob unlocks through node A's control endpoint and reads his encrypted mail
through node B's IMAP; alice unlocks through node B and sends signed through node A's SMTP;
bob locks through node B and both nodes refuse his mail."""

from __future__ import annotations

import base64
import imaplib
import os
import secrets
import smtplib
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage

import pytest

from smime_proxy.app import open_stores
from smime_proxy.config import SessionsConfig, StoreConfig
from smime_proxy.harness import Upstream
from smime_proxy.keystore.ca import ServerCA
from smime_proxy.smime import Recipient, encrypt_message
from support import mailbox
from support.demo_proxy import DemoProxy, read_by_subject, start_demo_proxy, start_variant
from support.postgres import PostgresServer, postgres_bin_dir
from support.redis import RedisServer, redis_server_binary
from support.smime_check import smime_type

USERS = ("alice", "bob")


@dataclass
class Cluster:
    a: DemoProxy
    b: DemoProxy
    certificates: dict[str, bytes]


def _require(found: object, what: str) -> None:
    if found is None:
        if os.environ.get("CI"):
            pytest.fail(f"{what} is not installed (scripts/test.sh installs it)")
        pytest.skip(f"{what} is not installed")


@pytest.fixture(scope="module")
def cluster(upstream: Upstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    _require(postgres_bin_dir(), "PostgreSQL")
    _require(redis_server_binary(), "redis-server")
    work = tmp_path_factory.mktemp("cluster")
    postgres, redis = PostgresServer.start(), RedisServer.start()
    demo = start_demo_proxy(upstream, work / "demo", work / "demo.log")
    demo.stop()  # its config, server CA and TLS are the nodes' starting point
    try:
        _, dsn = postgres.fresh_database()
        key_file = work / "cluster.key"
        key_file.write_text(base64.b64encode(secrets.token_bytes(32)).decode() + "\n")
        key_file.chmod(0o600)
        store = {"backend": "postgresql", "dsn": dsn}
        sessions = {"backend": "redis", "url": redis.url(), "cluster_key_file": str(key_file)}
        certificates = _keys_in_postgres(demo, dsn)
        a = start_variant(demo, work / "a", work / "a.log", store=store, sessions=sessions)
        try:
            b = start_variant(demo, work / "b", work / "b.log", store=store,
                              sessions=sessions)
            try:
                yield Cluster(a, b, certificates)
            finally:
                b.stop()
        finally:
            a.stop()
    finally:
        redis.stop()
        postgres.stop()


def _keys_in_postgres(demo: DemoProxy, dsn: str) -> dict[str, bytes]:
    """alice's and bob's keys (issued by the demo's server CA) in the shared key store, each
    in the other's address book; their certificates (DER)."""
    from cryptography.hazmat.primitives.serialization import Encoding

    data = demo.workdir / "data"
    stores = open_stores(data, store=StoreConfig("postgresql", dsn=dsn),
                         ca=ServerCA.load(data), sessions=SessionsConfig())
    try:
        mail, now = stores.secure_mail, datetime.now(UTC)
        for user in USERS:
            mail.generate(user, f"{user}@example.test", demo.smime_password(user), now)
        for user in USERS:
            for other in USERS:
                if other != user:
                    stores.contacts.take_certificate(user, mail.certificate(other))
        return {u: mail.certificate(u).public_bytes(Encoding.DER) for u in USERS}
    finally:
        stores.close()


def _deliver_encrypted(cluster: Cluster, upstream: Upstream, token: str) -> None:
    from cryptography import x509

    certificate = x509.load_der_x509_certificate(cluster.certificates["bob"])
    message = (f"From: dave@example.org\r\nTo: bob@example.test\r\nSubject: nodes {token}\r\n"
               f"MIME-Version: 1.0\r\nContent-Type: text/plain\r\n\r\nsecret {token}\r\n"
               ).encode()
    with imaplib.IMAP4(upstream.host, upstream.imap_port) as imap:
        imap.login("bob", upstream.users["bob"])
        imap.append("INBOX", "", None,
                    encrypt_message(message, [Recipient(certificate, supports_gcm=True)]))


def _read(node: DemoProxy, token: str) -> tuple[str, bytes]:
    """bob reads `nodes <token>` through `node`'s IMAP: (tagged status, body)."""
    return read_by_subject(node, "bob", f"nodes {token}")


def test_unlock_on_a_read_on_b_sign_on_a_lock_on_b(cluster: Cluster,
                                                   upstream: Upstream) -> None:
    token = secrets.token_hex(4)
    _deliver_encrypted(cluster, upstream, token)
    assert _read(cluster.b, token)[0] == "NO"  # locked everywhere to begin with

    cluster.a.unlock("bob")
    status, body = _read(cluster.b, token)
    assert status == "OK" and f"secret {token}".encode() in body, body

    cluster.b.unlock("alice")
    signed = EmailMessage()
    signed["From"], signed["To"] = "alice@example.test", "bob@example.test"
    signed["Subject"] = f"signed on a {token}"
    signed["X-SMIME-Sign"], signed["X-SMIME-Encrypt"] = "yes", "no"
    signed.set_content("from node A\n")
    context = ssl.create_default_context(cafile=str(cluster.a.tls_ca))
    with smtplib.SMTP(cluster.a.host, cluster.a.smtp_port, timeout=60) as smtp:
        smtp.starttls(context=context)
        smtp.login("alice", cluster.a.mail_passwords["alice"])
        smtp.send_message(signed)
    [stored] = mailbox.wait_for(upstream, "bob", f"{token}", count=2)[-1:]
    assert b"multipart/signed" in stored or smime_type(stored) == "signed-data", stored[:600]

    cluster.b.lock("bob")
    for node in (cluster.a, cluster.b):
        status, body = _read(node, token)
        assert status == "NO" and f"secret {token}".encode() not in body


def test_the_nodes_share_no_key_through_redis(cluster: Cluster) -> None:
    """What Redis holds after unlocks on both nodes names neither user nor holds a key in
    clear (docs/cluster-threat-model.md; the unit tests check every form of the key)."""
    cluster.a.unlock("bob")
    cluster.b.unlock("alice")
    # the nodes' configs point at the same Redis: read it as they do
    import redis
    import yaml

    url = yaml.safe_load(cluster.a.config.read_text())["sessions"]["url"]
    client = redis.Redis.from_url(url)
    try:
        pieces: list[bytes] = []
        for key in client.keys("*"):
            pieces.append(_raw(key))
            for name, value in client.hgetall(key).items():
                pieces += [_raw(name), _raw(value)]
        dumped = b"".join(pieces)
    finally:
        client.close()
    assert dumped and b"alice" not in dumped and b"bob" not in dumped
    assert b"BEGIN" not in dumped and b"PRIVATE KEY" not in dumped


def _raw(value: object) -> bytes:
    """What redis-py gave (bytes without decode_responses)."""
    assert isinstance(value, bytes)
    return value
