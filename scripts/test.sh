#!/usr/bin/env bash
# The project's test command (README "Run the tests"). On a fresh Debian machine it installs
# everything the tests need: Debian packages (openssl, gpgsm), a virtualenv with the project and
# its test tools; then runs ruff, mypy (strict) and the whole pytest suite.
# Extra arguments go to pytest, e.g. `scripts/test.sh -k vectors`.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

# --- Debian packages -------------------------------------------------------------------------
debs=(openssl gpgsm gpg-agent libnss3-tools
      dovecot-imapd dovecot-lmtpd dovecot-submissiond postfix  # real upstream (tests/integration)
      chromium  # browser test of the control page (Playwright, never `playwright install`)
      swaks s-nail libnet-ssleay-perl libio-socket-ssl-perl)  # SMTP proxy clients (swaks --tls)
missing=()
for pkg in "${debs[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
    echo "test.sh: installing Debian packages: ${missing[*]}"
    SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
    # Postfix asks how to configure itself unless preseeded; the harness brings its own config.
    echo "postfix postfix/main_mailer_type select No configuration" | $SUDO debconf-set-selections
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# --- Python environment ----------------------------------------------------------------------
venv="$root/.venv"
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
stamp="$venv/.installed-$(sha256sum pyproject.toml | cut -c1-16)"
if [ ! -e "$stamp" ]; then
    "$venv/bin/pip" install -q --disable-pip-version-check -e ".[test]"
    touch "$stamp"
fi
export PATH="$venv/bin:$PATH"

# --- Checks ----------------------------------------------------------------------------------
echo "== ruff"; ruff check src tests bench
echo "== mypy"; mypy
echo "== pytest"; exec pytest -q -p no:cacheprovider "$@"
