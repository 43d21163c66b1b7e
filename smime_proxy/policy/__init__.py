"""The admin policy: when an outgoing message is signed and/or encrypted (pure).

``load_policy(path)`` validates the YAML (``ConfigError`` naming the YAML path);
``decide(policy, sender, recipients, headers)`` returns a ``Decision`` with its reasons.
The format is documented in ``config/policy.yaml``.

May import: policy.decide, policy.model.
"""

from smime_proxy.policy.decide import (
    ENCRYPT_HEADER,
    SIGN_HEADER,
    Decision,
    decide,
    find_subject_tags,
    header_requests,
    store_encrypted,
)
from smime_proxy.policy.model import (
    CIPHERS,
    DEFAULTS,
    CipherName,
    EncryptMode,
    Fallback,
    HeaderProtection,
    Pattern,
    Policy,
    Rule,
    Settings,
    SignMode,
    load_policy,
    parse_policy,
)

__all__ = [
    "CIPHERS",
    "DEFAULTS",
    "ENCRYPT_HEADER",
    "SIGN_HEADER",
    "CipherName",
    "Decision",
    "EncryptMode",
    "Fallback",
    "HeaderProtection",
    "Pattern",
    "Policy",
    "Rule",
    "Settings",
    "SignMode",
    "decide",
    "find_subject_tags",
    "header_requests",
    "load_policy",
    "parse_policy",
    "store_encrypted",
]
