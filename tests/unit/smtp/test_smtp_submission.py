"""plan_submission: pass-through bytes, policy outcomes (refusals with the right codes),
sign then encrypt checked by openssl, Bcc copies, header protection, cipher choice."""

from __future__ import annotations

from pathlib import Path

import pytest

from smime_proxy.errors import InputError
from smime_proxy.policy import Policy
from smime_proxy.smtp.keys import ServiceKeys
from smime_proxy.smtp.submission import Plan, SubmissionRefused, plan_submission
from support.smime_check import (
    cannot_decrypt,
    decrypt,
    recipient_serial_list,
    recipient_serials,
    smime_type,
    verify,
)
from support.smtp_proxy import UNLOCK_URL, KeyWorld, key_world, people, policy

ALICE = "alice@example.test"
BOB = "bob@example.test"
CAROL = "carol@example.test"
DAVE = "dave@example.test"


def _message(to: str = "Bob <bob@example.test>", extra: str = "",
             body: bytes = b"Hello Bob,\r\n.leading dot\r\n") -> bytes:
    return (f"From: Alice <{ALICE}>\r\nTo: {to}\r\n{extra}Subject: Hello\r\n"
            "Date: Mon, 01 Jun 2026 12:00:00 +0000\r\nMessage-ID: <t1@example.test>\r\n"
            "X-Mailer: tests\r\nMIME-Version: 1.0\r\n"
            "Content-Type: text/plain; charset=utf-8\r\n\r\n").encode() + body


def _world(*, key: bool = True, unlocked: bool = True,
           known: tuple[str, ...] = ("bob",)) -> KeyWorld:
    world = key_world()
    p = people()
    if key:
        world.give_key("alice", p.ids["alice"], unlock=unlocked)
    for name in known:
        world.know("alice", p.ids[name])
    return world


def _plan(message: bytes, world: KeyWorld, the_policy: Policy | None = None,
          recipients: tuple[str, ...] = (BOB,)) -> Plan:
    return plan_submission(message, user="alice", sender=ALICE, recipients=list(recipients),
                           policy=the_policy or Policy(),
                           keys=ServiceKeys(world.secure_mail, world.contacts, world.now),
                           now=world.now,
                           unlock_url=UNLOCK_URL)


def test_passthrough_keeps_every_byte() -> None:
    message = _message(extra="Bcc: dave@example.test\r\n")
    plan = _plan(message, _world(key=False, known=()))
    assert plan.passthrough
    assert plan.copies[0].message == message
    assert plan.copies[0].recipients == (BOB,)


def test_passthrough_only_removes_x_smime_fields() -> None:
    message = _message(extra="X-SMIME-Sign: no\r\nx-smime-whatever: 1\r\n X-SMIME-folded\r\n")
    plan = _plan(message, _world(known=()))
    assert plan.passthrough
    assert plan.copies[0].message == _message()


def test_subject_tags_removed() -> None:
    p = policy('global: {subject_tags: {sign: "[sign]"}}')
    message = _message().replace(b"Subject: Hello", b"Subject: [sign] Hello")
    with pytest.raises(SubmissionRefused) as info:  # a tag asks to sign: no key -> 550
        _plan(message, _world(key=False, known=()), p)
    assert info.value.reply.code == 550
    plan2 = _plan(message, _world(known=()), p)
    assert plan2.signed
    assert b"Subject: Hello\r\n" in plan2.copies[0].message
    assert b"[sign]" not in plan2.copies[0].message


def test_locked_and_sign_required_is_451_with_unlock_url() -> None:
    with pytest.raises(SubmissionRefused) as info:
        _plan(_message(), _world(unlocked=False), policy("global: {sign: required}"))
    reply = info.value.reply
    assert (reply.code, reply.status) == (451, "4.7.0")
    assert UNLOCK_URL in reply.text


def test_locked_if_unlocked_sends_encrypted_unsigned(tmp_path: Path) -> None:
    plan = _plan(_message(), _world(unlocked=False))
    assert plan.encrypted and not plan.signed
    plain = decrypt(plan.copies[0].message, people().ids["bob"], tmp_path)
    assert b"multipart/signed" not in plain
    assert b"Hello Bob" in plain


def test_encrypt_required_missing_certificates_named() -> None:
    with pytest.raises(SubmissionRefused) as info:
        _plan(_message(to=f"{BOB}, {CAROL}"), _world(), policy("global: {encrypt: required}"),
              recipients=(BOB, CAROL, DAVE))
    reply = info.value.reply
    assert (reply.code, reply.status) == (550, "5.7.1")
    assert CAROL in reply.text and DAVE in reply.text and BOB not in reply.text


@pytest.mark.parametrize(("fallback", "signed"), [("signed", True), ("plain", False)])
def test_if_possible_fallback(fallback: str, signed: bool, tmp_path: Path) -> None:
    plan = _plan(_message(), _world(known=()), policy(f"global: {{fallback: {fallback}}}"))
    assert not plan.encrypted
    assert plan.signed == signed
    if signed:
        content = verify(plan.copies[0].message, people().ca, tmp_path)
        assert b"Hello Bob" in content
    else:
        assert plan.copies[0].message == _message()


def test_sign_then_encrypt_openssl_and_self(tmp_path: Path) -> None:
    plan = _plan(_message(), _world())
    assert plan.signed and plan.encrypted
    message = plan.copies[0].message
    p = people()
    assert recipient_serials(message) == {p.ids["bob"].cert.serial_number,
                                          p.ids["alice"].cert.serial_number}
    assert smime_type(message) == "enveloped-data"
    inner = decrypt(message, p.ids["bob"], tmp_path)
    content = verify(inner, p.ca, tmp_path)
    assert b"Hello Bob,\r\n.leading dot" in content
    assert b"X-Mailer: tests" in content  # the whole header travels inside
    decrypt(message, p.ids["alice"], tmp_path)  # the sender can read it too
    head = message.split(b"\r\n\r\n", 1)[0]
    assert b"X-Mailer" not in head and b"Subject: Hello" in head


def test_injected_headers_by_default(tmp_path: Path) -> None:
    """RFC 9788: the whole header first in the signed part, hp="cipher", HP-Outer naming
    what stayed outside; no message/rfc822 wrapper and no Legacy Display Element."""
    plan = _plan(_message(), _world())
    inner = decrypt(plan.copies[0].message, people().ids["bob"], tmp_path)
    content = verify(inner, people().ca, tmp_path)
    head, body = content.split(b"\r\n\r\n", 1)
    assert head.startswith(b"From: Alice <alice@example.test>\r\nTo: Bob <bob@example.test>"
                           b"\r\nSubject: Hello\r\n")
    assert b"X-Mailer: tests\r\n" in head and b"HP-Outer: Subject: Hello\r\n" in head
    assert b"HP-Outer: X-Mailer" not in head  # not outside
    assert b'Content-Type: text/plain; charset=utf-8;\r\n hp="cipher"' in head
    assert b"message/rfc822" not in content
    assert body == b"Hello Bob,\r\n.leading dot\r\n"


def test_signed_only_injected_headers_are_hp_clear(tmp_path: Path) -> None:
    plan = _plan(_message(), _world(known=()))
    assert plan.signed and not plan.encrypted
    message = plan.copies[0].message
    content = verify(message, people().ca, tmp_path)
    assert b'hp="clear"' in content and b"HP-Outer" not in content
    assert b"Subject: Hello\r\n" in content and b"X-Mailer: tests\r\n" in content
    assert b"X-Mailer: tests\r\n" in message.split(b"\r\n\r\n", 1)[0]  # all stay outside


@pytest.mark.parametrize(("protection", "hidden"), [("injected", b"Subject: [...]\r\n"),
                                                     ("wrapped", b"Subject: ...\r\n")])
def test_hide_subject(protection: str, hidden: bytes, tmp_path: Path) -> None:
    plan = _plan(_message(), _world(),
                 policy(f"global: {{hide_subject: true, header_protection: {protection}}}"))
    head = plan.copies[0].message.split(b"\r\n\r\n", 1)[0]
    assert hidden in head and b"Hello" not in head
    inner = decrypt(plan.copies[0].message, people().ids["bob"], tmp_path)
    content = verify(inner, people().ca, tmp_path)
    assert b"Subject: Hello" in content
    if protection == "injected":
        assert b"HP-Outer: Subject: [...]\r\n" in content


def test_wrapped_header_protection_is_message_rfc822(tmp_path: Path) -> None:
    plan = _plan(_message(), _world(), policy("global: {header_protection: wrapped}"))
    inner = decrypt(plan.copies[0].message, people().ids["bob"], tmp_path)
    content = verify(inner, people().ca, tmp_path)
    assert content.startswith(b"Content-Type: message/rfc822; forwarded=no\r\n")
    assert b"hp=" not in content


def test_no_header_protection_keeps_original_entity(tmp_path: Path) -> None:
    plan = _plan(_message(), _world(), policy("global: {header_protection: none}"))
    inner = decrypt(plan.copies[0].message, people().ids["bob"], tmp_path)
    content = verify(inner, people().ca, tmp_path)
    assert b"message/rfc822" not in content and b"hp=" not in content
    assert content.startswith(b"Content-Type: text/plain")


def test_bcc_recipients_get_their_own_copy(tmp_path: Path) -> None:
    p = people()
    world = _world(known=("bob", "carol", "dave"))
    message = _message(extra="Bcc: carol@example.test, dave@example.test\r\n")
    plan = _plan(message, world, recipients=(BOB, CAROL, DAVE))
    assert [c.recipients for c in plan.copies] == [(BOB,), (CAROL,), (DAVE,)]
    main, carol_copy, dave_copy = (c.message for c in plan.copies)
    serial = {n: i.cert.serial_number for n, i in p.ids.items()}
    assert recipient_serials(main) == {serial["bob"], serial["alice"]}
    assert recipient_serials(carol_copy) == {serial["carol"], serial["alice"]}
    assert recipient_serials(dave_copy) == {serial["dave"], serial["alice"]}
    for copy in (main, carol_copy, dave_copy):
        head = copy.split(b"\r\n\r\n", 1)[0].lower()
        assert b"bcc:" not in head
        assert b"carol" not in head
    assert cannot_decrypt(carol_copy, p.ids["bob"], tmp_path)
    inner = decrypt(main, p.ids["bob"], tmp_path)
    shown = verify(inner, p.ca, tmp_path).lower()
    assert b"carol" not in shown and b"bcc:" not in shown
    assert b"Hello Bob" in verify(decrypt(carol_copy, p.ids["carol"], tmp_path), p.ca, tmp_path)


def test_signed_only_with_bcc_is_one_copy_without_bcc_header(tmp_path: Path) -> None:
    plan = _plan(_message(extra="Bcc: carol@example.test\r\n"), _world(known=()),
                 recipients=(BOB, CAROL))
    assert plan.signed and not plan.encrypted
    assert plan.copies[0].recipients == (BOB, CAROL)
    assert b"carol" not in plan.copies[0].message.lower()
    verify(plan.copies[0].message, people().ca, tmp_path)


def test_gcm_only_for_known_readers() -> None:
    world = _world()
    plan = _plan(_message(), world, policy('global: {gcm_recipients: ["*@example.test"]}'))
    assert plan.copies[0].cipher == "aes-256-gcm"
    assert smime_type(plan.copies[0].message) == "authEnveloped-data"
    plan = _plan(_message(), world)
    assert plan.copies[0].cipher == "aes-256-cbc"
    with pytest.raises(SubmissionRefused) as info:
        _plan(_message(), world, policy("global: {ciphers: [aes-256-gcm]}"))
    assert info.value.reply.code == 550 and BOB in info.value.reply.text


def test_policy_refusal_is_550() -> None:
    message = _message(extra="X-SMIME-Encrypt: yes\r\n")
    with pytest.raises(SubmissionRefused) as info:
        _plan(message, _world(), policy("global: {encrypt: never}"))
    assert (info.value.reply.code, info.value.reply.status) == (550, "5.7.1")


def test_encrypt_header_yes_makes_missing_certificate_an_error() -> None:
    with pytest.raises(SubmissionRefused) as info:
        _plan(_message(extra="X-SMIME-Encrypt: yes\r\n"), _world(known=()))
    assert info.value.reply.code == 550 and BOB in info.value.reply.text


def test_eight_bit_and_binary_parts_still_verify(tmp_path: Path) -> None:
    body = (b"--b\r\nContent-Type: text/plain; charset=utf-8\r\n"
            b"Content-Transfer-Encoding: 8bit\r\n\r\nGr\xc3\xbc\xc3\x9fe \xe2\x82\xac\r\n"
            b"--b\r\nContent-Type: application/octet-stream\r\n"
            b"Content-Transfer-Encoding: 8bit\r\n\r\n\x01\x02\xff\xfe data\r\n--b--\r\n")
    message = _message(body=body).replace(
        b"Content-Type: text/plain; charset=utf-8\r\n\r\n",
        b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n', 1)
    plan = _plan(message, _world(known=()))
    assert plan.signed
    content = verify(plan.copies[0].message, people().ca, tmp_path)
    assert b"Gr=C3=BC=C3=9Fe" in content or "Grüße".encode() in content


def test_header_too_large_is_552() -> None:
    message = b"X-Big: " + b"a" * 110_000 + b"\r\n" + _message()
    with pytest.raises(SubmissionRefused) as info:
        _plan(message, _world())
    assert info.value.reply.code == 552


def test_bcc_to_self_and_recipient_case_kept() -> None:
    p = people()
    world = _world(known=("bob",))
    world.know("alice", p.ids["alice"])
    plan = _plan(_message(), world, recipients=("Bob@example.test", "alice@example.test"))
    assert [c.recipients for c in plan.copies] == [("Bob@example.test",),
                                                   ("alice@example.test",)]
    # the sender's own copy names the sender's certificate once
    assert recipient_serial_list(plan.copies[1].message) == [p.ids["alice"].cert.serial_number]


def test_a_user_signs_only_as_one_of_their_addresses() -> None:
    """Security issue, item 2: with the admin's addresses, alice's key never signs mail
    whose From is someone else's (sign required: 553; if-unlocked: sent unsigned)."""
    from smime_proxy.accounts import Accounts

    world = _world(known=())
    keys = ServiceKeys(world.secure_mail, world.contacts, world.now,
                       accounts=Accounts("%Ln", ("example.test",)))
    forged = _message().replace(b"From: Alice <alice@example.test>",
                                b"From: Carol <carol@example.test>")

    def plan(message: bytes, sign: str) -> Plan:
        return plan_submission(message, user="alice", sender=ALICE, recipients=[BOB],
                               policy=policy(f"global: {{sign: {sign}, encrypt: never}}"),
                               keys=keys, now=world.now, unlock_url=UNLOCK_URL)

    with pytest.raises(SubmissionRefused) as info:
        plan(forged, "required")
    assert info.value.reply.code == 553 and "carol@example.test" in info.value.reply.text
    unsigned = plan(forged, "if-unlocked")
    assert not unsigned.signed
    assert any("not one of the sender's addresses" in r for r in unsigned.reasons)
    assert plan(_message(), "required").signed  # her own address


def _client_signed() -> bytes:
    """What Thunderbird submits when its user signs with S/MIME (alice's own key)."""
    from smime_proxy.crypto.keyagent import InProcessKeyAgent
    from smime_proxy.smime import sign_message

    ident = people().ids["alice"]
    agent = InProcessKeyAgent(ident.key, ident.cert, tuple(ident.chain))
    return sign_message(_message(), agent, now=key_world().now)


def test_a_message_the_client_signed_is_relayed_unchanged(tmp_path: Path) -> None:
    signed = _client_signed()
    plan = _plan(b"X-SMIME-Sign: yes\r\n" + signed, _world())
    assert plan.passthrough and plan.copies[0].message == signed  # not signed twice
    assert "already signed by the client: relayed unchanged" in plan.reasons
    assert b"Hello Bob" in verify(plan.copies[0].message, people().ca, tmp_path)


@pytest.mark.parametrize("rules", ["{encrypt: required, sign: required}", "{}"])
def test_a_message_the_client_encrypted_is_relayed_unchanged(rules: str) -> None:
    from smime_proxy.smime import Recipient, encrypt_message

    encrypted = encrypt_message(_message(), [Recipient(people().ids["bob"].cert)])
    plan = _plan(encrypted, _world(), policy(f"global: {rules}"))
    assert plan.passthrough and plan.copies[0].message == encrypted


def test_required_encryption_encrypts_the_clients_signature_as_it_is(tmp_path: Path) -> None:
    signed = _client_signed()
    plan = _plan(signed, _world(), policy("global: {encrypt: required}"))
    assert plan.encrypted and not plan.signed
    p = people()
    inner = decrypt(plan.copies[0].message, p.ids["bob"], tmp_path)
    assert inner.count(b"multipart/signed") == 1  # one signature: the client's
    signed_entity = signed.split(b"Content-Type: multipart/signed", 1)[1]
    assert signed_entity in inner
    assert b"Hello Bob" in verify(inner, p.ca, tmp_path)


def test_gcm_for_a_recipient_who_announced_it() -> None:
    """Issue 14 (capabilities): bob's verified signed mail said he reads AES-256-GCM."""
    world = _world()
    bob = people().ids["bob"]
    world.contacts.take_certificate("alice", bob.cert, ("2.16.840.1.101.3.4.1.46",))
    plan = _plan(_message(), world)
    assert plan.copies[0].cipher == "aes-256-gcm"
    assert smime_type(plan.copies[0].message) == "authEnveloped-data"
    # the policy's cipher list still decides what may be used at all
    plan = _plan(_message(), world, policy("global: {ciphers: [aes-256-cbc]}"))
    assert plan.copies[0].cipher == "aes-256-cbc"


def test_the_senders_encryption_method_comes_first_within_the_policy() -> None:
    world = _world()
    both = policy("global: {ciphers: [aes-256-cbc, aes-128-cbc]}")
    assert _plan(_message(), world, both).copies[0].cipher == "aes-256-cbc"
    world.secure_mail.set_encryption_method("alice", "aes-128-cbc")
    plan = _plan(_message(), world, both)
    assert plan.copies[0].cipher == "aes-128-cbc"
    assert "ciphers: the sender's Encryption Method aes-128-cbc first" in plan.reasons
    plan = _plan(_message(), world)  # the default list has no AES-128: the policy limits
    assert plan.copies[0].cipher == "aes-256-cbc"
    assert any("Encryption Method aes-128-cbc is not among the policy's ciphers" in r
               for r in plan.reasons)
    world.secure_mail.set_encryption_method("alice", "aes-256-gcm")  # bob never said he can
    assert _plan(_message(), world, both).copies[0].cipher == "aes-256-cbc"
    with pytest.raises(InputError):
        world.secure_mail.set_encryption_method("alice", "des-ede3-cbc")
