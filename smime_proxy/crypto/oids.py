"""Object identifiers used by the CMS layer (RFC 5652, 5083, 5084, 5753, 8017, 3565, 8551)."""

from __future__ import annotations

# Content types (RFC 5652 section 4-9, RFC 5083)
DATA = "1.2.840.113549.1.7.1"
SIGNED_DATA = "1.2.840.113549.1.7.2"
ENVELOPED_DATA = "1.2.840.113549.1.7.3"
AUTH_ENVELOPED_DATA = "1.2.840.113549.1.9.16.1.23"

# Attributes
CONTENT_TYPE = "1.2.840.113549.1.9.3"
MESSAGE_DIGEST = "1.2.840.113549.1.9.4"
SIGNING_TIME = "1.2.840.113549.1.9.5"
SMIME_CAPABILITIES = "1.2.840.113549.1.9.15"
ENCRYPTION_KEY_PREFERENCE = "1.2.840.113549.1.9.16.2.11"

# Digests
DIGESTS = {
    "1.3.14.3.2.26": "sha1",
    "2.16.840.1.101.3.4.2.4": "sha224",
    "2.16.840.1.101.3.4.2.1": "sha256",
    "2.16.840.1.101.3.4.2.2": "sha384",
    "2.16.840.1.101.3.4.2.3": "sha512",
}
DIGEST_OID = {name: dotted for dotted, name in DIGESTS.items()}
MD5 = "1.2.840.113549.2.5"

# Signature algorithms
RSA_ENCRYPTION = "1.2.840.113549.1.1.1"
RSASSA_PSS = "1.2.840.113549.1.1.10"
MGF1 = "1.2.840.113549.1.1.8"
RSA_WITH = {
    "1.2.840.113549.1.1.5": "sha1",
    "1.2.840.113549.1.1.14": "sha224",
    "1.2.840.113549.1.1.11": "sha256",
    "1.2.840.113549.1.1.12": "sha384",
    "1.2.840.113549.1.1.13": "sha512",
}
ECDSA_WITH = {
    "1.2.840.10045.4.1": "sha1",
    "1.2.840.10045.4.3.1": "sha224",
    "1.2.840.10045.4.3.2": "sha256",
    "1.2.840.10045.4.3.3": "sha384",
    "1.2.840.10045.4.3.4": "sha512",
}
ECDSA_OID = {name: dotted for dotted, name in ECDSA_WITH.items()}
EC_PUBLIC_KEY = "1.2.840.10045.2.1"
# DSA signature OIDs -> their hash (None: id-dsa, the SignerInfo's digest applies)
DSA_FAMILY: dict[str, str | None] = {
    "1.2.840.10040.4.1": None,
    "1.2.840.10040.4.3": "sha1",
    "2.16.840.1.101.3.4.3.1": "sha224",
    "2.16.840.1.101.3.4.3.2": "sha256",
}

# Key transport
RSAES_OAEP = "1.2.840.113549.1.1.7"
P_SPECIFIED = "1.2.840.113549.1.1.9"

# Key agreement (RFC 5753 section 7.1.4; SEC 1)
ECDH_SCHEMES = {
    "1.3.133.16.840.63.0.2": "sha1",  # dhSinglePass-stdDH-sha1kdf-scheme
    "1.3.132.1.11.0": "sha224",
    "1.3.132.1.11.1": "sha256",
    "1.3.132.1.11.2": "sha384",
    "1.3.132.1.11.3": "sha512",
    # cofactor variants: the cofactor of every NIST prime curve is 1, so the same computation
    "1.3.133.16.840.63.0.3": "sha1",
    "1.3.132.1.14.0": "sha224",
    "1.3.132.1.14.1": "sha256",
    "1.3.132.1.14.2": "sha384",
    "1.3.132.1.14.3": "sha512",
}
ECDH_STD_SCHEME = {
    "sha256": "1.3.132.1.11.1",
    "sha384": "1.3.132.1.11.2",
    "sha512": "1.3.132.1.11.3",
}

# Key wrap (RFC 3394 / RFC 3565)
AES_WRAP = {
    "2.16.840.1.101.3.4.1.5": 16,
    "2.16.840.1.101.3.4.1.25": 24,
    "2.16.840.1.101.3.4.1.45": 32,
}
AES_WRAP_OID = {size: dotted for dotted, size in AES_WRAP.items()}

# Content encryption
AES_CBC = {
    "2.16.840.1.101.3.4.1.2": 16,
    "2.16.840.1.101.3.4.1.22": 24,
    "2.16.840.1.101.3.4.1.42": 32,
}
AES_GCM = {
    "2.16.840.1.101.3.4.1.6": 16,
    "2.16.840.1.101.3.4.1.26": 24,
    "2.16.840.1.101.3.4.1.46": 32,
}
AES_CBC_OID = {size: dotted for dotted, size in AES_CBC.items()}
AES_GCM_OID = {size: dotted for dotted, size in AES_GCM.items()}
DES_EDE3_CBC = "1.2.840.113549.3.7"
OBSOLETE_CIPHERS = {
    "1.2.840.113549.3.2": "RC2",
    "1.3.14.3.2.7": "single DES",
    "1.2.840.113549.3.4": "RC4",
}
CHACHA20_POLY1305 = "1.2.840.113549.1.9.16.3.18"
