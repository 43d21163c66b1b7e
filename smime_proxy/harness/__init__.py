"""The real upstream for tests and the demo: Debian's Dovecot and Postfix on 127.0.0.1.

``start_upstream(workdir)`` renders ``config/upstream/`` (the same templates docker-compose
uses), creates a throw-away CA and server certificate, starts Dovecot (IMAP + STARTTLS, IMAPS,
LMTP, SASL over TCP) and Postfix (submission with AUTH through Dovecot, delivery to Dovecot
LMTP, everything else refused) on free high ports, and returns an ``Upstream`` once an IMAP
LOGIN and an SMTP AUTH actually work. ``Upstream.stop()`` ends both process groups.

Users (``config/upstream/users``): alice, bob, carol in example.test with passwords
``alice-pw``, ``bob-pw``, ``carol-pw``; ``bob`` and ``bob@example.test`` are the same login.

Imports only the standard library, ``cryptography`` and ``smime_proxy.errors``.

May import: harness.
"""

from smime_proxy.harness.upstream import (
    DOMAIN,
    Upstream,
    UpstreamError,
    default_config_dir,
    read_users_file,
    start_upstream,
)

__all__ = [
    "DOMAIN",
    "Upstream",
    "UpstreamError",
    "default_config_dir",
    "read_users_file",
    "start_upstream",
]
