"""The certificate a signer wants mail encrypted to (RFC 8551 2.5.3 SMIMEEncryptionKeyPreference,
issue 14): read from the signed attributes, found among the message's certificates, and
only if it chains to a trust root."""

from __future__ import annotations

from cryptography import x509

from smime_proxy.crypto.keyagent import InProcessKeyAgent
from smime_proxy.smime import _preferred_certificate, inspect_signature, sign_message
from support.pki import NOW, Identity, make_ca, make_user, simple_message


def _ski(certificate: x509.Certificate) -> bytes:
    return certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest


def test_our_own_signature_names_the_signers_certificate(root: Identity,
                                                        alice: Identity) -> None:
    agent = InProcessKeyAgent(alice.key, alice.cert, tuple(alice.chain))
    report = inspect_signature(sign_message(simple_message(), agent, now=NOW), [root.cert],
                               now=NOW)
    assert report.valid and report.signers[0].encryption_certificate == alice.cert


def test_a_named_certificate_is_found_and_must_chain(root: Identity, alice: Identity) -> None:
    encryption = make_user("alice@example.test", root)  # alice's second certificate
    stranger = make_user("alice@example.test", make_ca())
    candidates = [alice.cert, encryption.cert, stranger.cert]
    by_serial = ("issuer-serial", (encryption.cert.issuer.public_bytes(),
                                   encryption.cert.serial_number))
    assert _preferred_certificate(by_serial, candidates, [], [root.cert], NOW) \
        == encryption.cert
    assert _preferred_certificate(("key-id", _ski(encryption.cert)), candidates, [],
                                  [root.cert], NOW) == encryption.cert
    untrusted = ("issuer-serial", (stranger.cert.issuer.public_bytes(),
                                   stranger.cert.serial_number))
    assert _preferred_certificate(untrusted, candidates, [], [root.cert], NOW) is None
    assert _preferred_certificate(("key-id", b"\x00" * 20), candidates, [], [root.cert],
                                  NOW) is None
    assert _preferred_certificate(None, candidates, [], [root.cert], NOW) is None
