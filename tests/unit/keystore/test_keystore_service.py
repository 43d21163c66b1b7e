"""`SecureMail`: keys at rest, unlock with an injected clock, password change, import caps,
import of the Thunderbird and RFC 9216 keys, export, remove, generate."""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import warnings
from pathlib import Path

import pytest
from asn1crypto import keys as asn1_keys
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID

from smime_proxy.crypto.keyagent import InProcessKeyAgent
from smime_proxy.errors import (
    ImportRejected,
    InputError,
    KeyExists,
    KeyLocked,
    KeyMismatch,
    KeyStoreError,
    NoSuchKey,
    WrongPassword,
)
from smime_proxy.keystore import pkcs, pkcs12_check
from smime_proxy.keystore.ca import ServerCA
from smime_proxy.keystore.ports import KeyStore, MemoryKeyStore
from smime_proxy.keystore.service import (
    DEFAULT_IDLE_TIMEOUT,
    DEFAULT_MAX_UNLOCK,
    UNLOCK_FAILED,
    SecureMail,
)
from unit.keystore.keystore_helpers import (
    FAST_ITERATIONS,
    NOW,
    THUNDERBIRD_P12,
    THUNDERBIRD_PASSWORD,
    craft_iterations,
    describe_pfx,
    held_key,
    make_p12,
    nest_key_bag,
    vector,
)

PW = b"correct horse battery staple"
SECONDS = dt.timedelta(seconds=1)


def _tb(name: str) -> bytes:
    return vector("thunderbird", "smime", f"{name}.p12").read_bytes()


def _import_alice(mail: SecureMail, user: str = "alice") -> x509.Certificate:
    return mail.import_pkcs12(user, _tb("Alice"), THUNDERBIRD_PASSWORD, PW)


def _spki(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | x509.Certificate) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


# --- keys at rest -----------------------------------------------------------------------------


def _stored_parameters(blob: bytes) -> dict[str, object]:
    """Parse the stored key with asn1crypto, independently of the code under test."""
    info = asn1_keys.EncryptedPrivateKeyInfo.load(blob, strict=True)
    algorithm = info["encryption_algorithm"]
    kdf = algorithm["parameters"]["key_derivation_func"]
    return {
        "scheme": algorithm["algorithm"].native,
        "kdf": kdf["algorithm"].native,
        "prf": kdf["parameters"]["prf"]["algorithm"].native,
        "iterations": kdf["parameters"]["iteration_count"].native,
        "salt_bits": 8 * len(kdf["parameters"]["salt"].native),
        "cipher": algorithm["parameters"]["encryption_scheme"]["algorithm"].native,
        "iv_bits": 8 * len(algorithm["parameters"]["encryption_scheme"]["parameters"].native),
    }


def test_key_at_rest_is_pbes2_aes256_pbkdf2_sha256(mail: SecureMail, key_store: KeyStore) -> None:
    _import_alice(mail)
    record = key_store.get("alice")
    assert record is not None
    assert _stored_parameters(record.encrypted_key) == {
        "scheme": "pbes2",
        "kdf": "pbkdf2",
        "prf": "sha256",
        "iterations": FAST_ITERATIONS,
        "salt_bits": 128,
        "cipher": "aes256_cbc",
        "iv_bits": 128,
    }


def test_default_kdf_cost_is_at_least_600k() -> None:
    assert pkcs.KDF_ITERATIONS >= 600_000
    store = MemoryKeyStore()
    mail = SecureMail(store)  # production defaults
    assert mail.kdf_iterations >= 600_000
    assert mail.import_iteration_cap >= 2 * 600_000
    _import_alice(mail)
    record = store.get("alice")
    assert record is not None
    params = _stored_parameters(record.encrypted_key)
    assert params["iterations"] == pkcs.KDF_ITERATIONS
    assert params["salt_bits"] == 128
    # Each stored key has its own salt.
    mail.change_password("alice", PW, b"another password")
    again = store.get("alice")
    assert again is not None
    salt = asn1_keys.EncryptedPrivateKeyInfo.load(again.encrypted_key)["encryption_algorithm"]
    first = asn1_keys.EncryptedPrivateKeyInfo.load(record.encrypted_key)["encryption_algorithm"]
    assert (
        salt["parameters"]["key_derivation_func"]["parameters"]["salt"].native
        != first["parameters"]["key_derivation_func"]["parameters"]["salt"].native
    )


def test_unlock_upgrades_a_weaker_stored_kdf(key_store: KeyStore) -> None:
    old = SecureMail(key_store, kdf_iterations=FAST_ITERATIONS)
    _import_alice(old)
    stronger = SecureMail(key_store, kdf_iterations=2 * FAST_ITERATIONS)
    stronger.unlock("alice", PW, NOW)
    record = key_store.get("alice")
    assert record is not None
    assert _stored_parameters(record.encrypted_key)["iterations"] == 2 * FAST_ITERATIONS
    # Never downgraded.
    old.unlock("alice", PW, NOW)
    again = key_store.get("alice")
    assert again is not None and again.encrypted_key == record.encrypted_key


def test_stored_key_is_not_the_plain_key(mail: SecureMail, key_store: KeyStore) -> None:
    _import_alice(mail)
    agent = mail.unlock("alice", PW, NOW)
    plain = held_key(agent).private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    record = key_store.get("alice")
    assert record is not None
    assert plain not in record.encrypted_key
    assert plain[-64:] not in record.encrypted_key


def test_weak_stored_key_parameters_are_refused() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    blob = pkcs.wrap_private_key(key, PW, iterations=FAST_ITERATIONS)
    with pytest.raises(KeyStoreError, match="iteration"):
        pkcs.unwrap_private_key(blob, PW, max_iterations=FAST_ITERATIONS - 1)
    with pytest.raises(KeyStoreError, match="corrupt"):
        pkcs.unwrap_private_key(b"garbage", PW)
    with pytest.raises(ValueError, match="empty"):
        pkcs.wrap_private_key(key, b"")


# --- unlock, idle and absolute lock (injected clock) -----------------------------------------


def test_unlock_gives_a_working_agent(mail: SecureMail) -> None:
    certificate = _import_alice(mail)
    agent = mail.unlock("alice", PW, NOW)
    assert isinstance(agent, InProcessKeyAgent)
    assert agent.certificate == certificate
    assert [c.subject.rfc4514_string() for c in agent.chain] == [
        "CN=NSS Test CA (RSA),O=BOGUS NSS,L=Mountain View,ST=California,C=US"
    ]
    digest = hashlib.sha256(b"message").digest()
    signature = agent.sign_digest(digest, "sha256", "pkcs1")
    public = certificate.public_key()
    assert isinstance(public, rsa.RSAPublicKey)
    public.verify(signature, digest, padding.PKCS1v15(), utils.Prehashed(hashes.SHA256()))
    assert mail.agent_for("alice", NOW) is agent


def test_locked_until_unlocked(mail: SecureMail) -> None:
    _import_alice(mail)
    with pytest.raises(KeyLocked):
        mail.agent_for("alice", NOW)
    with pytest.raises(KeyLocked):
        mail.agent_for("nobody", NOW)
    assert not mail.unlock_state("alice", NOW).unlocked


def test_idle_timeout_default_and_refresh(mail: SecureMail) -> None:
    assert dt.timedelta(seconds=180) == DEFAULT_IDLE_TIMEOUT
    assert mail.idle_timeout == DEFAULT_IDLE_TIMEOUT
    _import_alice(mail)
    mail.unlock("alice", PW, NOW)
    t = NOW + 179 * SECONDS
    mail.agent_for("alice", t)  # use refreshes idle
    t += 179 * SECONDS
    mail.agent_for("alice", t)
    state = mail.unlock_state("alice", t)
    assert state.unlocked
    assert state.idle_expires == t + DEFAULT_IDLE_TIMEOUT
    assert state.expires == t + DEFAULT_IDLE_TIMEOUT
    # unlock_state does not refresh.
    assert not mail.unlock_state("alice", t + 180 * SECONDS).unlocked
    with pytest.raises(KeyLocked, match="locked"):
        mail.agent_for("alice", t + 180 * SECONDS)
    # Once expired, it stays locked even if the clock seems to go back.
    with pytest.raises(KeyLocked):
        mail.agent_for("alice", t)


def test_absolute_maximum(key_store: KeyStore) -> None:
    mail = SecureMail(
        key_store,
        kdf_iterations=FAST_ITERATIONS,
        idle_timeout=dt.timedelta(minutes=3),
        max_unlock=dt.timedelta(minutes=10),
    )
    _import_alice(mail)
    mail.unlock("alice", PW, NOW)
    t = NOW
    while t + dt.timedelta(minutes=2) < NOW + dt.timedelta(minutes=10):
        t += dt.timedelta(minutes=2)
        mail.agent_for("alice", t)  # kept busy: never idle
    state = mail.unlock_state("alice", t)
    assert state.absolute_expires == NOW + dt.timedelta(minutes=10)
    assert state.expires == NOW + dt.timedelta(minutes=10)
    with pytest.raises(KeyLocked):
        mail.agent_for("alice", NOW + dt.timedelta(minutes=10))
    assert DEFAULT_MAX_UNLOCK > DEFAULT_IDLE_TIMEOUT


def test_clock_going_back_before_unlock_locks(mail: SecureMail) -> None:
    _import_alice(mail)
    mail.unlock("alice", PW, NOW)
    with pytest.raises(KeyLocked):
        mail.agent_for("alice", NOW - SECONDS)


def test_lock_and_sweep(mail: SecureMail) -> None:
    _import_alice(mail)
    mail.import_pkcs12("bob", _tb("Bob"), THUNDERBIRD_PASSWORD, PW)
    mail.unlock("alice", PW, NOW)
    mail.unlock("bob", PW, NOW + 100 * SECONDS)
    mail.lock("alice")
    with pytest.raises(KeyLocked):
        mail.agent_for("alice", NOW)
    mail.lock("alice")  # idempotent
    assert mail.lock_expired(NOW + 200 * SECONDS) == []
    assert mail.lock_expired(NOW + 280 * SECONDS) == ["bob"]
    with pytest.raises(KeyLocked):
        mail.agent_for("bob", NOW + 150 * SECONDS)


def test_relock_after_unlock_again_restarts_timers(mail: SecureMail) -> None:
    _import_alice(mail)
    mail.unlock("alice", PW, NOW)
    mail.unlock("alice", PW, NOW + 170 * SECONDS)
    mail.agent_for("alice", NOW + 340 * SECONDS)


def test_naive_time_is_refused(mail: SecureMail) -> None:
    _import_alice(mail)
    with pytest.raises(ValueError, match="aware"):
        mail.unlock("alice", PW, NOW.replace(tzinfo=None))


# --- wrong password / missing user: indistinguishable -----------------------------------------


def test_wrong_password_and_missing_user_look_the_same(mail: SecureMail) -> None:
    _import_alice(mail)
    with pytest.raises(WrongPassword) as wrong:
        mail.unlock("alice", b"wrong", NOW)
    with pytest.raises(WrongPassword) as missing:
        mail.unlock("nobody", b"wrong", NOW)
    with pytest.raises(WrongPassword) as empty:
        mail.unlock("alice", b"", NOW)
    assert str(wrong.value) == str(missing.value) == str(empty.value) == UNLOCK_FAILED
    assert type(wrong.value) is type(missing.value)
    assert wrong.value.__cause__ is None and wrong.value.__suppress_context__
    with pytest.raises(KeyLocked):
        mail.agent_for("alice", NOW)
    # The same for the other password-checked operations.
    with pytest.raises(WrongPassword, match=UNLOCK_FAILED):
        mail.export_pkcs12("nobody", b"x", b"y")
    with pytest.raises(WrongPassword, match=UNLOCK_FAILED):
        mail.change_password("nobody", b"x", b"y")


def test_secrets_never_in_repr_errors_or_logs(
    mail: SecureMail, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    secret = b"Sup3r-Secret-Passw0rd"
    mail.import_pkcs12("alice", _tb("Alice"), THUNDERBIRD_PASSWORD, secret)
    agent = mail.unlock("alice", secret, NOW)
    key_der = held_key(agent).private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    texts = [repr(agent), repr(mail), repr(mail.store), str(mail.key_info("alice"))]
    material = pkcs.load_key_file(_tb("Alice"), THUNDERBIRD_PASSWORD)
    texts.append(repr(material))
    texts.append(repr(mail.store.get("alice")))
    for attempt in (lambda: mail.unlock("alice", secret + b"x", NOW),
                    lambda: mail.change_password("alice", secret + b"x", b"new"),
                    lambda: mail.export_pkcs12("alice", secret + b"x", b"e"),
                    lambda: mail.import_pkcs12("x", _tb("Bob"), secret, b"n")):
        with pytest.raises(WrongPassword) as info:
            attempt()
        texts.append(str(info.value))
    texts.append(caplog.text)
    joined = "\n".join(texts)
    assert "Sup3r" not in joined
    assert key_der.hex()[-40:] not in joined
    assert "PRIVATE" not in joined


# --- change password --------------------------------------------------------------------------


def test_change_password_rewraps_the_same_key(mail: SecureMail, key_store: KeyStore) -> None:
    certificate = _import_alice(mail)
    before = key_store.get("alice")
    assert before is not None
    key_before = _spki(held_key(mail.unlock("alice", PW, NOW)))
    mail.change_password("alice", PW, "nouveau mot de passe é")
    after = key_store.get("alice")
    assert after is not None
    assert after.encrypted_key != before.encrypted_key
    assert after.certificate == before.certificate and after.chain == before.chain
    with pytest.raises(WrongPassword):
        mail.unlock("alice", PW, NOW)
    agent = mail.unlock("alice", "nouveau mot de passe é".encode(), NOW)
    assert _spki(held_key(agent)) == key_before == _spki(certificate)


def test_change_password_refusals(mail: SecureMail, key_store: KeyStore) -> None:
    _import_alice(mail)
    with pytest.raises(WrongPassword):
        mail.change_password("alice", b"wrong", b"new")
    with pytest.raises(InputError, match="empty"):
        mail.change_password("alice", PW, b"")
    mail.unlock("alice", PW, NOW)  # unchanged


def test_change_password_loses_a_race_cleanly(key_store: KeyStore) -> None:
    mail = SecureMail(key_store, kdf_iterations=FAST_ITERATIONS)
    _import_alice(mail)
    original_get = key_store.get

    class Racing:
        """A store whose record changes between our read and our write."""

        def __getattr__(self, name: str) -> object:
            return getattr(key_store, name)

        def get(self, user: str) -> object:
            record = original_get(user)
            other = SecureMail(key_store, kdf_iterations=FAST_ITERATIONS)
            if record is not None and not getattr(self, "done", False):
                self.done = True
                other.change_password(user, PW, b"theirs")
            return record

    racing = SecureMail(Racing(), kdf_iterations=FAST_ITERATIONS)  # type: ignore[arg-type]
    with pytest.raises(KeyExists, match="changed meanwhile"):
        racing.change_password("alice", PW, b"mine")
    mail.unlock("alice", b"theirs", NOW)


# --- import -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", THUNDERBIRD_P12)
def test_import_every_thunderbird_p12(mail: SecureMail, name: str) -> None:
    data = _tb(name)
    certificate = mail.import_pkcs12(name.lower(), data, THUNDERBIRD_PASSWORD, PW)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # NSS writes BER
        expected = pkcs12.load_pkcs12(data, THUNDERBIRD_PASSWORD)
    assert expected.cert is not None and expected.key is not None
    assert certificate == expected.cert.certificate
    if name == "Eve":  # rfc822Name SANs win over the subject's emailAddress (Eve@example.com)
        assert mail.addresses("eve") == ("eve@example.net", "eve@example.org", "beve@example.com")
    else:
        assert mail.addresses(name.lower()) == (f"{name}@example.com".lower(),)
    agent = mail.unlock(name.lower(), PW, NOW)
    assert _spki(held_key(agent)) == _spki(expected.key)  # type: ignore[arg-type]
    info = mail.key_info(name.lower())
    assert info.certificate.key_type == ("RSA" if "ec" not in name else "EC secp384r1")
    assert len(info.chain) == (0 if name.startswith("Fran") else 1)


def test_thunderbird_vectors_are_what_we_think(mail: SecureMail) -> None:
    legacy = describe_pfx(_tb("Fran"))
    assert legacy["mac_digest"] == "sha1"
    assert legacy["key_bags"][0]["algorithm"] == "pkcs12_sha1_tripledes_3key"
    modern = describe_pfx(_tb("Alice"))
    assert modern["key_bags"][0]["algorithm"] == "pbes2"


def _rfc9216(key_name: str, cert_name: str) -> bytes:
    return (
        vector("rfc9216", "keys", key_name).read_bytes()
        + vector("rfc9216", "certs", cert_name).read_bytes()
        + vector("rfc9216", "certs", "Sample_LAMPS_RSA_Certification_Authority.selfsigned.pem")
        .read_bytes()
    )


@pytest.mark.parametrize(
    ("key_name", "cert_name", "address"),
    [
        ("lamps-alice.p8.pem", "alice@smime.example.sig.pem", "alice@smime.example"),
        ("lamps-bob.decrypt.p8.pem", "bob@smime.example.enc.pem", "bob@smime.example"),
    ],
)
def test_import_rfc9216_rsa_keys(
    mail: SecureMail, key_name: str, cert_name: str, address: str
) -> None:
    bundle = _rfc9216(key_name, cert_name)
    certificate = mail.import_pkcs12("pem-user", bundle, b"", PW)
    assert mail.addresses("pem-user") == (address,)
    assert [c.subject.rfc4514_string() for c in mail.chain("pem-user")] == [
        "CN=Sample LAMPS RSA Certification Authority,OU=LAMPS WG,O=IETF"
    ]
    agent = mail.unlock("pem-user", PW, NOW)
    assert _spki(held_key(agent)) == _spki(certificate)
    # The same key as PKCS#12 (made by cryptography) imports too.
    key = serialization.load_pem_private_key(vector("rfc9216", "keys", key_name).read_bytes(), None)
    assert isinstance(key, rsa.RSAPrivateKey)
    p12 = make_p12(key, certificate, None, b"file-pw")
    mail.import_pkcs12("p12-user", p12, b"file-pw", PW)
    assert mail.certificate("p12-user") == certificate


def test_import_encrypted_pkcs8_pem(mail: SecureMail) -> None:
    key = serialization.load_pem_private_key(
        vector("rfc9216", "keys", "lamps-alice.p8.pem").read_bytes(), None
    )
    assert isinstance(key, rsa.RSAPrivateKey)
    encrypted = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"pem-pw"),
    )
    certificate = x509.load_pem_x509_certificate(
        vector("rfc9216", "certs", "alice@smime.example.sig.pem").read_bytes()
    )  # (that file also holds the plain key: take the certificate only)
    bundle = encrypted + certificate.public_bytes(serialization.Encoding.PEM)
    with pytest.raises(WrongPassword):
        mail.import_pkcs12("alice", bundle, b"wrong", PW)
    mail.import_pkcs12("alice", bundle, b"pem-pw", PW)
    assert mail.addresses("alice") == ("alice@smime.example",)


@pytest.mark.parametrize(
    ("key_name", "cert_name", "kind"),
    [
        ("lamps-carlos.p8.pem", "carlos@smime.example.sig.pem", "Ed25519"),
        ("lamps-dana.decrypt.p8.pem", "dana@smime.example.enc.pem", "X25519"),
    ],
)
def test_import_rfc9216_edwards_keys_is_refused_clearly(
    mail: SecureMail, key_name: str, cert_name: str, kind: str
) -> None:
    bundle = (
        vector("rfc9216", "keys", key_name).read_bytes()
        + vector("rfc9216", "certs", cert_name).read_bytes()
    )
    with pytest.raises(ImportRejected, match=f"unsupported key type {kind}"):
        mail.import_pkcs12("carlos", bundle, b"", PW)
    assert not mail.has_key("carlos")


def test_import_refusals(mail: SecureMail, server_ca: ServerCA) -> None:
    _import_alice(mail)
    with pytest.raises(KeyExists):
        _import_alice(mail)
    with pytest.raises(WrongPassword):
        mail.import_pkcs12("bob", _tb("Bob"), b"not-nss", PW)
    with pytest.raises(InputError, match="empty"):
        mail.import_pkcs12("bob", _tb("Bob"), THUNDERBIRD_PASSWORD, b"")
    with pytest.raises(ImportRejected, match="not a PKCS#12"):
        mail.import_pkcs12("bob", b"\x30\x03\x02\x01\x03garbage", b"x", PW)
    with pytest.raises(ImportRejected):
        mail.import_pkcs12("bob", b"", b"x", PW)
    with pytest.raises(ImportRejected, match="too large"):
        mail.import_pkcs12("bob", b"\x00" * (pkcs12_check.MAX_KEY_FILE_SIZE + 1), b"x", PW)
    with pytest.raises(ImportRejected, match="exactly one private key"):
        mail.import_pkcs12("bob", b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
                           b"", PW)
    with pytest.raises(InputError, match="user name"):
        mail.import_pkcs12("bad\nuser", _tb("Bob"), THUNDERBIRD_PASSWORD, PW)
    # A key with a certificate for a different key.
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ) + mail.certificate("alice").public_bytes(serialization.Encoding.PEM)
    with pytest.raises(ImportRejected, match="no certificate for its private key"):
        mail.import_pkcs12("bob", pem, b"", PW)
    # No private key at all.
    only_cert = pkcs12.serialize_key_and_certificates(
        b"x", None, server_ca.certificate, None, serialization.BestAvailableEncryption(b"pw")
    )
    with pytest.raises(ImportRejected, match="no private key"):
        mail.import_pkcs12("bob", only_cert, b"pw", PW)
    # Short RSA keys are refused.
    short = rsa.generate_private_key(65537, 1024)  # noqa: S505 - the point of the test
    cert = server_ca.issue_user_certificate("short@example.org", short.public_key(), NOW)
    with pytest.raises(ImportRejected, match="shorter than 2048"):
        mail.import_pkcs12("bob", make_p12(short, cert, None, b"pw"), b"pw", PW)
    assert not mail.has_key("bob")


# --- import caps: checked before any KDF runs -------------------------------------------------


HUGE = 3_000_000_000 // 1000 * 1000  # would take hours


@pytest.mark.parametrize(
    ("vector_name", "where"),
    [
        ("Alice", "mac"),
        ("Alice", "key_bag"),
        ("Alice", "encrypted_safe"),
        ("Fran", "mac"),
        ("Fran", "key_bag"),
        ("Fran", "encrypted_safe"),
    ],
)
def test_import_iteration_cap(mail: SecureMail, vector_name: str, where: str) -> None:
    crafted = craft_iterations(_tb(vector_name), **{where: HUGE})
    with pytest.raises(ImportRejected, match=f"asks for {HUGE} KDF iterations"):
        mail.import_pkcs12("victim", crafted, THUNDERBIRD_PASSWORD, PW)
    mail.import_pkcs12("fran", _tb("Fran"), THUNDERBIRD_PASSWORD, PW)
    with pytest.raises(ImportRejected, match="KDF iterations"):
        mail.remove("fran", crafted, THUNDERBIRD_PASSWORD)  # the same guard on remove
    # Just over the cap is refused too; zero is refused.
    over = craft_iterations(_tb(vector_name), **{where: pkcs12_check.IMPORT_ITERATION_CAP + 1})
    with pytest.raises(ImportRejected, match="KDF iterations"):
        mail.import_pkcs12("victim", over, THUNDERBIRD_PASSWORD, PW)
    zero = craft_iterations(_tb(vector_name), **{where: 0})
    with pytest.raises(ImportRejected, match="invalid KDF iteration count"):
        mail.import_pkcs12("victim", zero, THUNDERBIRD_PASSWORD, PW)


@pytest.mark.parametrize("legacy", [False, True], ids=["pbes2-safe", "3des-safe"])
def test_import_cap_on_key_bag_inside_an_encrypted_safe(mail: SecureMail, legacy: bool) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = mail.ca.issue_user_certificate(  # type: ignore[union-attr]
        "nested@example.org", key.public_key(), NOW
    )
    p12 = make_p12(key, cert, None, b"pw", iterations=FAST_ITERATIONS)
    # The nesting itself is fine when the counts are sane (and it really decrypts).
    sane = nest_key_bag(p12, b"pw", FAST_ITERATIONS, legacy=legacy)
    assert mail.import_pkcs12("nested", sane, b"pw", PW) == cert
    # A huge count hidden inside the encrypted safe is found before anything runs it.
    crafted = nest_key_bag(p12, b"pw", HUGE, legacy=legacy)
    with pytest.raises(ImportRejected, match=f"asks for {HUGE} KDF iterations"):
        mail.import_pkcs12("victim", crafted, b"pw", PW)
    # With a wrong password the safe does not open for inspection; the import still fails.
    with pytest.raises((WrongPassword, ImportRejected)):
        mail.import_pkcs12("victim", sane, b"wrong", PW)


def test_legacy_encrypted_safe_inspection_cap(mail: SecureMail) -> None:
    """Opening a legacy safe for inspection runs a Python KDF: its count has a lower cap."""
    crafted = craft_iterations(_tb("Fran"), encrypted_safe=pkcs12_check.LEGACY_INSPECTION_CAP + 1)
    with pytest.raises(ImportRejected, match="legacy PKCS#12 encryption"):
        mail.import_pkcs12("fran", crafted, THUNDERBIRD_PASSWORD, PW)
    assert pkcs12_check.LEGACY_INSPECTION_CAP >= 50_000  # Java's legacy exports use 50,000


def test_pkcs12_kdf_opens_the_nss_legacy_safe() -> None:
    """Our inspection-only PKCS#12 KDF agrees with NSS (Fran.p12: 3DES encrypted safe)."""
    from asn1crypto import pkcs12 as asn1_pkcs12

    pfx = asn1_pkcs12.Pfx.load(_tb("Fran"))
    safes = asn1_pkcs12.AuthenticatedSafe.load(pfx["auth_safe"]["content"].native)
    encrypted = [s for s in safes if s["content_type"].native == "encrypted_data"]
    assert len(encrypted) == 1
    info = encrypted[0]["content"]["encrypted_content_info"]
    plain = pkcs12_check._decrypt_for_inspection(
        info["content_encryption_algorithm"], info["encrypted_content"].native, b"nss"
    )
    contents = pkcs12_check._parse_safe_contents(plain)
    assert contents is not None
    assert [b["bag_id"].native for b in contents] == ["cert_bag"]
    wrong = pkcs12_check._decrypt_for_inspection(
        info["content_encryption_algorithm"], info["encrypted_content"].native, b"wrong"
    )
    assert pkcs12_check._parse_safe_contents(wrong) is None


def test_import_total_kdf_budget() -> None:
    """Each count is capped, and so are their sum (4 x cap) and the number of KDF runs."""
    crafted = craft_iterations(_tb("Fran"), mac=9_000, key_bag=9_000, encrypted_safe=9_000)
    pkcs12_check.check_pkcs12_iterations(crafted, 9_000, THUNDERBIRD_PASSWORD)
    with pytest.raises(ImportRejected, match="asks for 9000 KDF iterations"):
        pkcs12_check.check_pkcs12_iterations(crafted, 8_999)
    budget = pkcs12_check._Budget(10)
    for _ in range(4):
        budget.spend(10)
    with pytest.raises(ImportRejected, match="too much KDF work"):
        budget.spend(1)
    runs = pkcs12_check._Budget(1_000_000)
    for _ in range(16):
        runs.spend(1)
    with pytest.raises(ImportRejected, match="too much KDF work"):
        runs.spend(1)


def test_import_cap_is_configurable(key_store: KeyStore) -> None:
    mail = SecureMail(key_store, kdf_iterations=FAST_ITERATIONS, import_iteration_cap=5_000)
    with pytest.raises(ImportRejected, match="asks for 10000 KDF iterations; more than 5000"):
        _import_alice(mail)
    mail.import_pkcs12("fran", _tb("Fran"), THUNDERBIRD_PASSWORD, PW)  # 2048 iterations


def test_import_cap_on_encrypted_pem(mail: SecureMail) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    blob = pkcs.wrap_private_key(key, b"pw", iterations=FAST_ITERATIONS)
    info = asn1_keys.EncryptedPrivateKeyInfo.load(blob)
    info["encryption_algorithm"]["parameters"]["key_derivation_func"]["parameters"][
        "iteration_count"
    ] = HUGE
    import base64

    pem = (
        b"-----BEGIN ENCRYPTED PRIVATE KEY-----\n"
        + base64.encodebytes(info.dump(force=True))
        + b"-----END ENCRYPTED PRIVATE KEY-----\n"
    )
    with pytest.raises(ImportRejected, match="KDF iterations"):
        mail.import_pkcs12("x", pem, b"pw", PW)


# --- export -----------------------------------------------------------------------------------


def test_export_modern_reads_back(mail: SecureMail) -> None:
    certificate = _import_alice(mail)
    data = mail.export_pkcs12("alice", PW, b"export-pw")
    shape = describe_pfx(data)
    assert shape["mac_digest"] == "sha256"
    for algorithm in shape["key_bags"] + shape["encrypted_safes"]:
        assert algorithm["algorithm"] == "pbes2"
        kdf = algorithm["parameters"]["key_derivation_func"]
        assert kdf["algorithm"] == "pbkdf2"
        assert kdf["parameters"]["prf"]["algorithm"] == "sha256"
        assert kdf["parameters"]["iteration_count"] == FAST_ITERATIONS
        assert algorithm["parameters"]["encryption_scheme"]["algorithm"] == "aes256_cbc"
    loaded = pkcs12.load_pkcs12(data, b"export-pw")
    assert loaded.cert is not None and loaded.cert.certificate == certificate
    assert loaded.cert.friendly_name == b"alice@example.com"
    assert len(loaded.additional_certs) == 1
    assert loaded.key is not None and _spki(loaded.key) == _spki(certificate)  # type: ignore[arg-type]
    # And it imports again (round trip).
    mail.import_pkcs12("alice2", data, b"export-pw", b"other")
    assert mail.certificate("alice2") == certificate


def test_export_legacy_is_3des_sha1(mail: SecureMail) -> None:
    certificate = _import_alice(mail)
    data = mail.export_pkcs12("alice", PW, b"export-pw", legacy=True)
    shape = describe_pfx(data)
    assert shape["mac_digest"] == "sha1"
    names = {a["algorithm"] for a in shape["key_bags"] + shape["encrypted_safes"]}
    assert names == {"pkcs12_sha1_tripledes_3key"}
    # Our own legacy export imports again (and proves the key for `remove`).
    mail.import_pkcs12("alice-again", data, b"export-pw", PW)
    loaded = pkcs12.load_pkcs12(data, b"export-pw")
    assert loaded.cert is not None and loaded.cert.certificate == certificate


def test_export_refusals(mail: SecureMail) -> None:
    _import_alice(mail)
    with pytest.raises(WrongPassword):
        mail.export_pkcs12("alice", b"wrong", b"export-pw")
    with pytest.raises(InputError, match="empty"):
        mail.export_pkcs12("alice", PW, b"")


# --- remove -----------------------------------------------------------------------------------


def test_remove_only_with_the_same_key(mail: SecureMail) -> None:
    _import_alice(mail)
    mail.unlock("alice", PW, NOW)
    with pytest.raises(KeyMismatch):
        mail.remove("alice", _tb("Bob"), THUNDERBIRD_PASSWORD)
    with pytest.raises(WrongPassword):
        mail.remove("alice", _tb("Alice"), b"wrong")
    with pytest.raises(ImportRejected):
        mail.remove("alice", b"garbage", b"x")
    assert mail.has_key("alice")
    mail.agent_for("alice", NOW)
    # An export of the same key under another password proves it as well.
    exported = mail.export_pkcs12("alice", PW, b"exp")
    mail.remove("alice", exported, b"exp")
    assert not mail.has_key("alice")
    with pytest.raises(KeyLocked):
        mail.agent_for("alice", NOW)
    with pytest.raises(NoSuchKey):
        mail.remove("alice", exported, b"exp")
    with pytest.raises(NoSuchKey):
        mail.key_info("alice")


# --- generate ---------------------------------------------------------------------------------


@pytest.mark.parametrize("key_type", ["rsa2048", "ec-p256"])
def test_generate_issues_an_smime_certificate(
    mail: SecureMail, server_ca: ServerCA, key_type: str
) -> None:
    certificate = mail.generate("dave", "Dave@Example.ORG", PW, NOW, key_type=key_type)
    assert mail.addresses("dave") == ("dave@example.org",)
    assert certificate.issuer == server_ca.certificate.subject
    assert mail.chain("dave") == (server_ca.certificate,)
    eku = certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.EMAIL_PROTECTION]
    usage = certificate.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.digital_signature
    if key_type.startswith("rsa"):
        assert usage.key_encipherment and not usage.key_agreement
    else:
        assert usage.key_agreement and not usage.key_encipherment
    assert certificate.not_valid_after_utc - NOW == dt.timedelta(days=730)
    agent = mail.unlock("dave", PW, NOW)
    assert _spki(held_key(agent)) == _spki(certificate)
    with pytest.raises(KeyExists):
        mail.generate("dave", "dave@example.org", PW, NOW)


def test_generate_needs_a_ca(key_store: KeyStore) -> None:
    mail = SecureMail(key_store, kdf_iterations=FAST_ITERATIONS)
    with pytest.raises(KeyStoreError, match="ca init"):
        mail.generate("dave", "dave@example.org", PW, NOW)
    assert not mail.has_key("dave")


def test_generate_refusals(mail: SecureMail) -> None:
    with pytest.raises(InputError, match="e-mail"):
        mail.generate("dave", "not an address", PW, NOW)
    with pytest.raises(InputError, match="e-mail"):
        mail.generate("dave", "dave@example.org\r\nBcc: x@y", PW, NOW)
    with pytest.raises(InputError, match="empty"):
        mail.generate("dave", "dave@example.org", b"", NOW)
    with pytest.raises(InputError, match="key type"):
        mail.generate("dave", "dave@example.org", PW, NOW, key_type="dsa")
    assert not mail.has_key("dave")


def test_service_settings_are_checked(key_store: KeyStore, tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        SecureMail(key_store, kdf_iterations=0)
    with pytest.raises(ValueError):
        SecureMail(key_store, idle_timeout=dt.timedelta(0))
    with pytest.raises(ValueError):
        SecureMail(key_store, idle_timeout=dt.timedelta(hours=2), max_unlock=dt.timedelta(hours=1))
