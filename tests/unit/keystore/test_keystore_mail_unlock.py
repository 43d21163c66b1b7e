"""Unlock by mail login (issue 13): a user's opt-in second copy of the key, wrapped under the
mail password; a mail login the upstream accepted unlocks it, a changed mail password is
re-wrapped from the unlocked key; the admin can forbid it. Both key-store backends."""

from __future__ import annotations

import datetime as dt

import pytest

from smime_proxy.errors import KeyLocked, NoSuchKey, UsageError, WrongPassword
from smime_proxy.keystore import pkcs
from smime_proxy.keystore.ports import KeyStore
from smime_proxy.keystore.service import SecureMail
from unit.keystore.keystore_helpers import (
    FAST_ITERATIONS,
    NOW,
    THUNDERBIRD_PASSWORD,
    vector,
)

SMP = b"secure mail password"
MAIL = b"mail password 1"


@pytest.fixture
def enabled(mail: SecureMail) -> SecureMail:
    p12 = vector("thunderbird", "smime", "Alice.p12").read_bytes()
    mail.import_pkcs12("alice", p12, THUNDERBIRD_PASSWORD, SMP)
    mail.enable_mail_unlock("alice", SMP, MAIL, NOW)
    return mail


def test_the_copy_is_pbkdf2_wrapped_under_the_mail_password(enabled: SecureMail,
                                                             key_store: KeyStore) -> None:
    copy = key_store.mail_copy("alice")
    assert copy is not None and MAIL not in copy and SMP not in copy
    assert pkcs.pbes2_parameters(copy).iterations == FAST_ITERATIONS
    assert enabled.mail_unlock_enabled("alice")


def test_a_mail_login_unlocks_then_counts_as_activity(enabled: SecureMail) -> None:
    with pytest.raises(KeyLocked):
        enabled.agent_for("alice", NOW)
    assert enabled.mail_login("alice", MAIL, NOW) == "unlocked"
    agent = enabled.agent_for("alice", NOW)
    assert agent.certificate == enabled.certificate("alice")
    later = NOW + dt.timedelta(seconds=150)
    assert enabled.mail_login("alice", MAIL, later) == "refreshed"  # no KDF: same password
    # activity moved the idle deadline (180 s after `later`, not after NOW)
    assert enabled.agent_for("alice", later + dt.timedelta(seconds=170)) is agent


def test_a_wrong_or_changed_mail_password_leaves_it_locked(enabled: SecureMail) -> None:
    assert enabled.mail_login("alice", b"other", NOW) == "stale"
    with pytest.raises(KeyLocked):
        enabled.agent_for("alice", NOW)


def test_a_changed_mail_password_is_rewrapped_once_unlocked(enabled: SecureMail) -> None:
    new_mail = b"mail password 2"
    assert enabled.mail_login("alice", new_mail, NOW) == "stale"
    enabled.unlock("alice", SMP, NOW)  # the Secure Mail Password, once
    assert enabled.mail_login("alice", new_mail, NOW) == "rewrapped"
    enabled.lock("alice")
    assert enabled.mail_login("alice", new_mail, NOW) == "unlocked"
    enabled.lock("alice")
    assert enabled.mail_login("alice", MAIL, NOW) == "stale"  # the old one no longer


def test_users_who_did_not_choose_it_and_a_forbidding_admin(mail: SecureMail,
                                                             key_store: KeyStore) -> None:
    p12 = vector("thunderbird", "smime", "Alice.p12").read_bytes()
    mail.import_pkcs12("alice", p12, THUNDERBIRD_PASSWORD, SMP)
    assert mail.mail_login("alice", SMP, NOW) == "none"
    assert mail.mail_login("nobody", MAIL, NOW) == "none"
    mail.enable_mail_unlock("alice", SMP, MAIL, NOW)
    forbidding = SecureMail(key_store, kdf_iterations=FAST_ITERATIONS, mail_unlock=False)
    assert forbidding.mail_login("alice", MAIL, NOW) == "none"
    assert not forbidding.mail_unlock_enabled("alice")
    with pytest.raises(UsageError):
        forbidding.enable_mail_unlock("alice", SMP, MAIL, NOW)


def test_enabling_needs_the_secure_mail_password_and_disabling_drops_the_copy(
        enabled: SecureMail, key_store: KeyStore) -> None:
    with pytest.raises(WrongPassword):
        enabled.enable_mail_unlock("alice", b"guess", MAIL, NOW)
    enabled.disable_mail_unlock("alice")
    assert key_store.mail_copy("alice") is None
    assert enabled.mail_login("alice", MAIL, NOW) == "none"
    with pytest.raises(NoSuchKey):
        enabled.disable_mail_unlock("nobody")


def test_the_copy_goes_with_the_key(enabled: SecureMail, key_store: KeyStore) -> None:
    assert key_store.delete("alice")
    assert key_store.mail_copy("alice") is None
    with pytest.raises(NoSuchKey):
        key_store.set_mail_copy("alice", b"x")
