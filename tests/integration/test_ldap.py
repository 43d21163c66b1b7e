"""Recipients' certificates from a real OpenLDAP (`slapd`, started here on 127.0.0.1 with a
generated config): lookup over StartTLS and ldaps://, what is not used (expired, no
emailProtection, another address, garbage), the cache, a directory that is down (the SMTP
front refuses with 451 or falls back per policy, saying why), and publishing a user's own
certificate from the control operations."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import aiosmtplib
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs7
from cryptography.x509.oid import ExtendedKeyUsageOID

from smime_proxy.config import LdapConfig
from smime_proxy.errors import DirectoryUnavailable, InputError
from smime_proxy.harness.tls import ensure_tls
from smime_proxy.keystore.ldap import LdapDirectory
from support import pki
from support.fake_smtp import FakeUpstream
from support.slapd import ADMIN_DN, ADMIN_PASSWORD, BASE, PEOPLE, Slapd, slapd_binary
from support.smime_check import decrypt, smime_type
from support.smtp_proxy import async_client, key_world, make_front, people, plain_upstream, policy

pytestmark = pytest.mark.skipif(slapd_binary() is None, reason="slapd is not installed")

NOW = pki.NOW
ALICE, BOB, CAROL = "alice@example.test", "bob@example.test", "carol@example.test"


@pytest.fixture(scope="module")
def slapd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Slapd]:
    server = Slapd.start(tmp_path_factory.mktemp("slapd"))
    try:
        _fill(server)
        yield server
    finally:
        server.stop()


def _fill(server: Slapd) -> None:
    p = people()
    ca = p.ca
    expired = pki.make_user("erin@example.test", ca, not_after=NOW - dt.timedelta(days=1))
    tls_only = pki.make_user("frank@example.test", ca, eku=[ExtendedKeyUsageOID.SERVER_AUTH])
    stranger = pki.make_user("mallory@example.test", ca)
    server.add_person("bob", BOB, (p.ids["bob"].cert,))
    blob = pkcs7.serialize_certificates([p.ids["carol"].cert], serialization.Encoding.DER)
    # slapd checks userCertificate's syntax, not userSMIMECertificate's: garbage goes there
    server.add_person("carol", CAROL, smime_blobs=(b"\x30\x03garbage", blob))
    server.add_person("erin", "erin@example.test", (expired.cert,))
    server.add_person("frank", "frank@example.test", (tls_only.cert,))
    server.add_person("grace", "grace@example.test", (stranger.cert,))  # not grace's
    server.add_person("alice", ALICE)


def _config(server: Slapd, **changes: object) -> LdapConfig:
    values: dict[str, object] = {
        "url": server.ldap_url, "base": PEOPLE, "ca_file": server.tls.ca_cert,
        "timeout": 3, "cache_seconds": 60}
    values.update(changes)
    return LdapConfig(**values)  # type: ignore[arg-type]


def test_lookup_over_starttls_and_ldaps(slapd: Slapd) -> None:
    bob = people().ids["bob"].cert
    for config in (_config(slapd), _config(slapd, url=slapd.ldaps_url, starttls=False)):
        directory = LdapDirectory(config)
        assert directory.choose("Bob@Example.test", NOW) == bob
        assert directory.choose("nobody@example.test", NOW) is None


def test_smime_certificate_attribute_and_garbage_skipped(slapd: Slapd) -> None:
    directory = LdapDirectory(_config(slapd))
    assert directory.choose(CAROL, NOW) == people().ids["carol"].cert


@pytest.mark.parametrize("address", ["erin@example.test", "frank@example.test",
                                     "grace@example.test", "alice@example.test"])
def test_unusable_certificates_are_not_used(slapd: Slapd, address: str) -> None:
    """Expired; EKU without emailProtection; a certificate for another address; none."""
    directory = LdapDirectory(_config(slapd))
    assert directory.certificates(address) or address == ALICE
    assert directory.choose(address, NOW) is None


def test_filter_input_is_escaped(slapd: Slapd) -> None:
    directory = LdapDirectory(_config(slapd))
    assert directory.certificates("*@example.test") == ()  # not every entry with a mail
    with pytest.raises(InputError):
        directory.certificates("*)(mail=*@example.test")


def test_the_server_certificate_is_verified(slapd: Slapd, tmp_path: Path) -> None:
    other_ca = ensure_tls(tmp_path / "other").ca_cert
    for url, starttls in ((slapd.ldap_url, True), (slapd.ldaps_url, False)):
        directory = LdapDirectory(_config(slapd, url=url, starttls=starttls, ca_file=other_ca))
        with pytest.raises(DirectoryUnavailable, match="cannot be used"):
            directory.certificates(BOB)


def test_answers_are_cached_and_a_dead_directory_is_asked_once(slapd: Slapd) -> None:
    clock = [0.0]
    directory = LdapDirectory(_config(slapd), clock=lambda: clock[0])
    assert directory.choose(BOB, NOW) is not None
    dead = LdapDirectory(_config(slapd, url="ldap://127.0.0.1:1"), clock=lambda: clock[0])
    with pytest.raises(DirectoryUnavailable, match="cannot be used"):
        dead.certificates(BOB)
    with pytest.raises(DirectoryUnavailable, match="asked again shortly"):
        dead.certificates(BOB)
    clock[0] += 31
    with pytest.raises(DirectoryUnavailable, match="cannot be used"):
        dead.certificates(BOB)
    # the live one answers from its cache without asking (its URL no longer matters)
    directory._search = None  # type: ignore[assignment,method-assign]
    assert directory.choose(BOB, NOW) is not None


def test_publish_adds_the_certificate_once(slapd: Slapd) -> None:
    directory = LdapDirectory(_config(slapd, bind_dn=ADMIN_DN, publish=True),
                              password=ADMIN_PASSWORD)
    dave = pki.make_user(ALICE, people().ca).cert
    assert directory.publish(ALICE, dave) == f"published to the directory entry of {ALICE}"
    assert directory.publish(ALICE, dave) == f"already in the directory entry of {ALICE}"
    held = slapd.certificates_of(f"uid=alice,{PEOPLE}")
    assert held == [dave.public_bytes(serialization.Encoding.DER)]
    assert directory.choose(ALICE, NOW) == dave  # the cache was dropped for that address
    assert directory.publish("nobody@example.test", dave).startswith("not published: ")


def test_publish_refused_without_write_access(slapd: Slapd) -> None:
    anonymous = LdapDirectory(_config(slapd, publish=True))
    with pytest.raises(DirectoryUnavailable, match="publish"):
        anonymous.publish(BOB, people().ids["dave"].cert)


# --- the SMTP front ----------------------------------------------------------------------------


def _message(to: str) -> bytes:
    return (f"From: {ALICE}\r\nTo: {to}\r\nSubject: directory\r\n"
            "Message-ID: <ldap1@example.test>\r\n\r\nhello from the directory test\r\n").encode()


async def _send(front_port: int, to: str) -> None:
    async with async_client(front_port, login=("alice", "alice-pw")) as client:
        await client.sendmail(ALICE, [to], _message(to))


async def test_smtp_encrypts_to_a_certificate_from_the_directory(slapd: Slapd,
                                                                 tmp_path: Path) -> None:
    world = key_world()
    world.give_key("alice", people().ids["alice"], unlock=True)
    fake = FakeUpstream()
    await fake.start()
    front = make_front(world, plain_upstream(fake.port),
                       the_policy=policy("global: {encrypt: required, sign: never}"))
    front.ldap = LdapDirectory(_config(slapd))
    await front.start()
    try:
        await _send(front.port, BOB)
    finally:
        await front.stop(1.0)
        await fake.stop()
    [delivery] = fake.delivered
    assert smime_type(delivery.data) == "enveloped-data"
    assert b"hello from the directory test" in decrypt(delivery.data, people().ids["bob"],
                                                       tmp_path)


@pytest.mark.parametrize("rules", ["global: {encrypt: required, sign: never}",
                                   "global: {encrypt: if-possible, sign: never, "
                                   "fallback: plain}"])
async def test_smtp_with_the_directory_down(rules: str) -> None:
    """Required: 451 (the client retries later), naming the directory. If possible: sent
    per the fallback."""
    down = LdapDirectory(LdapConfig(url="ldap://127.0.0.1:1", base=BASE, timeout=1))
    world = key_world()
    world.give_key("alice", people().ids["alice"], unlock=True)
    fake = FakeUpstream()
    await fake.start()
    front = make_front(world, plain_upstream(fake.port), the_policy=policy(rules))
    front.ldap = down
    await front.start()
    try:
        if "required" in rules:
            with pytest.raises(aiosmtplib.SMTPDataError) as info:
                await _send(front.port, BOB)
            assert info.value.code == 451
            assert "certificate directory cannot be reached" in info.value.message
            assert fake.delivered == []
        else:
            await _send(front.port, BOB)
            [delivery] = fake.delivered
            assert smime_type(delivery.data) is None
    finally:
        await front.stop(1.0)
        await fake.stop()


# --- publishing from the Secure Mail operations ------------------------------------------------


async def test_a_generated_key_is_published_from_the_config(slapd: Slapd, tmp_path: Path) -> None:
    from smime_proxy.accounts import Accounts
    from smime_proxy.app import build_services
    from smime_proxy.config import parse_config
    from smime_proxy.control.metrics import ControlMetrics
    from smime_proxy.control.operations import KeyOperations
    from smime_proxy.keystore.ca import ServerCA
    from support.control import Upstreamish, control_config

    secret = tmp_path / "ldap-password"
    secret.write_text(ADMIN_PASSWORD + "\n")
    slapd.add_person("henry", "henry@example.test")
    data = control_config(tmp_path, Upstreamish("127.0.0.1", 1, tls="none"))
    data["ldap"] = {"url": slapd.ldap_url, "base": PEOPLE, "ca_file": str(slapd.tls.ca_cert),
                    "bind_dn": ADMIN_DN, "bind_password_file": str(secret), "publish": True}
    config = parse_config(data, base_dir=tmp_path)
    ServerCA.init(config.data_dir, dt.datetime.now(dt.UTC), key_type="ec-p256")
    services = build_services(config, kdf_iterations=1000)
    operations = KeyOperations(services, ControlMetrics(), accounts=Accounts())
    status = await operations.generate("henry", "henry@example.test", "ec-p256",
                                       "pw-henry-1", "pw-henry-1")
    assert status["directory"] == "published to the directory entry of henry@example.test"
    certificate = services.secure_mail.certificate("henry")
    assert slapd.certificates_of(f"uid=henry,{PEOPLE}") == [
        certificate.public_bytes(serialization.Encoding.DER)]
