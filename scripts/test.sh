#!/usr/bin/env bash
# The project's test command (README "Run the tests"). On a fresh Debian machine it installs
# everything the tests need: Debian packages (below), a virtualenv with the project and
# its test tools; then runs ruff, mypy (strict) and the whole pytest suite.
# Extra arguments go to pytest, e.g. `scripts/test.sh -k vectors`.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
# shellcheck source=scripts/lib.sh
source "$root/scripts/lib.sh"

# --- Debian packages -------------------------------------------------------------------------
debs=(openssl gpgsm gpg-agent libnss3-tools
      dovecot-imapd dovecot-lmtpd dovecot-submissiond postfix  # real upstream (tests/integration)
      chromium  # browser test of the control page (Playwright, never `playwright install`)
      thunderbird xvfb imagemagick  # a real mail client under its own X server (tests/clients)
      swaks s-nail libnet-ssleay-perl libio-socket-ssl-perl  # SMTP proxy clients (swaks --tls)
      isync  # mbsync pulls a folder through the IMAP front (tests/clients/test_snail_mbsync.py)
      docker-compose  # renders docker-compose.yml (no engine: tests/unit/test_compose.py)
      slapd  # a real OpenLDAP directory of certificates (tests/integration/test_ldap.py)
      postgresql  # the shared key store (tests/support/postgres.py starts its own cluster)
      redis-server  # shared unlock sessions (tests/support/redis.py starts its own server)
      dovecot-dev build-essential autoconf automake libtool pkg-config)  # imaptest (tests/tools/imaptest)
ensure_debs "${debs[@]}"

# --- Python environment ----------------------------------------------------------------------
ensure_venv "$root"
# the native opening core: the tests compare it with its Python twin, so it must build here
ensure_native "$root"

# --- Checks ----------------------------------------------------------------------------------
echo "== ruff"; ruff check smime_proxy tests bench
echo "== mypy"; mypy
echo "== pytest"; exec pytest -q -p no:cacheprovider "$@"
