#!/usr/bin/env bash
# The project's run command (README "Run the main job"). On a fresh Debian machine it installs
# what it needs (Debian's Dovecot and Postfix, the virtualenv), starts the demo upstream
# (real Dovecot + Postfix on 127.0.0.1, state in var/demo/), prints the client settings, and
# stays in the foreground until Ctrl-C (or SIGTERM), then stops everything cleanly.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
demo="$root/var/demo"

# --- Debian packages (as in scripts/test.sh) --------------------------------------------------
debs=(dovecot-imapd dovecot-lmtpd dovecot-submissiond postfix)
missing=()
for pkg in "${debs[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
    echo "run.sh: installing Debian packages: ${missing[*]}"
    SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
    echo "postfix postfix/main_mailer_type select No configuration" | $SUDO debconf-set-selections
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# --- Python environment (the same venv and stamp as scripts/test.sh) ---------------------------
venv="$root/.venv"
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
stamp="$venv/.installed-$(sha256sum pyproject.toml | cut -c1-16)"
if [ ! -e "$stamp" ]; then
    "$venv/bin/pip" install -q --disable-pip-version-check -e ".[test]"
    touch "$stamp"
fi
export PATH="$venv/bin:$PATH"

# --- Processes: each one started below is added to pids and stopped on exit --------------------
pids=()
cleanup() {
    trap - EXIT INT TERM
    for ((i = ${#pids[@]} - 1; i >= 0; i--)); do kill -TERM "${pids[i]}" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    echo "run.sh: stopped."
}
trap cleanup EXIT
trap 'exit 0' INT TERM

# --- Upstream: Dovecot + Postfix (src/smime_proxy/harness) -------------------------------------
mkdir -p "$demo"
env_file="$demo/upstream.env"
rm -f "$env_file"
python -m smime_proxy.harness --workdir "$demo/upstream" --env-file "$env_file" &
pids+=($!)
while [ ! -s "$env_file" ]; do
    kill -0 "${pids[0]}" 2>/dev/null || { wait "${pids[0]}" || true; echo "run.sh: upstream did not start" >&2; exit 2; }
    sleep 0.1
done
# shellcheck disable=SC1090
source "$env_file"

# --- The proxy -------------------------------------------------------------------------------
# Added here by the daemon's work: write "$demo/smime-proxy.yaml" pointing upstream at the ports
# above, then ONE line starts it and registers it for shutdown, e.g.
#   smime-proxy serve --config "$demo/smime-proxy.yaml" & pids+=($!)

# --- Client settings -------------------------------------------------------------------------
cat <<EOT

smime-proxy demo upstream is running (state: $demo).

  IMAP        $UPSTREAM_HOST port $UPSTREAM_IMAP_PORT (STARTTLS; plain LOGIN allowed on loopback)
  IMAPS       $UPSTREAM_HOST port $UPSTREAM_IMAPS_PORT (TLS)
  SMTP        $UPSTREAM_HOST port $UPSTREAM_SUBMISSION_PORT (submission, STARTTLS, AUTH PLAIN/LOGIN)
  TLS CA      $UPSTREAM_CA_FILE   (trust this; certificate names localhost, 127.0.0.1)
  Mail to     @$UPSTREAM_DOMAIN only; nothing leaves this machine.

  Users (demo passwords, from config/upstream/users):
EOT
sed -n 's/^\([^#:][^:]*\):{PLAIN}\(.*\)$/    \1@'"$UPSTREAM_DOMAIN"'  password: \2/p' config/upstream/users
cat <<EOT

  Try:  curl --cacert $UPSTREAM_CA_FILE --ssl-reqd imap://$UPSTREAM_HOST:$UPSTREAM_IMAP_PORT/ -u bob:bob-pw

Press Ctrl-C to stop.
EOT

wait "${pids[0]}"
