"""The project's exception hierarchy (bottom layer: imports nothing from the project).

Rules: crypto outcomes raise, never return a bool; every message is safe to show a user or
write to a log: it never holds a password, key material or message content.
"""

from __future__ import annotations


class SmimeProxyError(Exception):
    """Base of every error this project raises on purpose."""


class UsageError(SmimeProxyError, ValueError):
    """A caller broke a precondition of a project API (a bug in the caller, not bad input)."""


class MissingItem(SmimeProxyError, KeyError):
    """A looked-up item is not there (mapping-like `get`s of the project)."""


class InputError(SmimeProxyError):
    """The input is malformed or unusable (bad file, bad option, garbage message): exit 2."""


# --- S/MIME / CMS -------------------------------------------------------------------------


class CryptoError(SmimeProxyError):
    """A cryptographic operation did not succeed."""


class MalformedMessage(CryptoError, InputError):
    """The message or CMS structure cannot be parsed."""


class UnsupportedAlgorithm(CryptoError):
    """An algorithm we do not implement."""


class ObsoleteAlgorithm(UnsupportedAlgorithm):
    """An algorithm we refuse on purpose (RC2, 40-bit, DES): readable with old tools only."""


class NotEncrypted(CryptoError, InputError):
    """The message is not a whole-message S/MIME encryption (an input error, exit 2)."""


class DecryptionFailed(CryptoError):
    """Cannot decrypt. One generic error: no detail that could act as an oracle."""


class NoMatchingRecipient(DecryptionFailed):
    """None of the message's recipients is our key."""


class NoRecipientCertificate(CryptoError):
    """No usable certificate for one or more recipients."""

    def __init__(self, addresses: list[str], unavailable: bool = False) -> None:
        self.addresses = list(addresses)
        self.unavailable = unavailable  # a certificate directory could not be asked
        super().__init__("no usable certificate for: " + ", ".join(self.addresses))


class DirectoryUnavailable(SmimeProxyError):
    """The LDAP directory could not be reached or refused the query (the message says
    which, never a password)."""


class VerificationError(CryptoError):
    """The message is not validly signed; the subclass says why."""


class NotSigned(VerificationError):
    """The message (as a whole) is not signed."""


class SignatureInvalid(VerificationError):
    """A signature does not verify, or the signed structure breaks a CMS rule."""


class ChainUntrusted(VerificationError):
    """A signer certificate does not chain to a trust root (or is expired, or wrong EKU)."""


class SignerMismatch(VerificationError):
    """The From address is not an address of the signer certificate."""


# --- keys ---------------------------------------------------------------------------------


class KeyStoreError(SmimeProxyError):
    """Key store problem."""


class NoSuchKey(KeyStoreError):
    """The user has no key."""


class KeyExists(KeyStoreError):
    """The user already has a key."""


class KeyLocked(KeyStoreError):
    """The user's key is locked: unlock it with the Secure Mail Password first."""


class KeysUnavailable(KeyLocked):
    """Where unlocks are kept cannot be reached now (the shared sessions' Redis, the key
    agent process): every key counts as locked, and asking again later may work."""


class WrongPassword(KeyStoreError):
    """The password does not open the key (or the file)."""


class KeyMismatch(KeyStoreError):
    """The given key is not the stored one."""


class ImportRejected(KeyStoreError, InputError):
    """A PKCS#12 / PEM file we refuse (garbage, no key, excessive KDF iterations...)."""


# --- protocols ----------------------------------------------------------------------------


class ProtocolError(SmimeProxyError):
    """A protocol rule was broken."""


class PeerProtocolError(ProtocolError):
    """The peer sent something that breaks the protocol."""


class LocalProtocolError(ProtocolError):
    """We tried to send something that breaks the protocol (a bug on our side)."""


class ConfigError(InputError):
    """Bad configuration; the message names the YAML path."""
