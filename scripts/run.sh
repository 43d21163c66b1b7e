#!/usr/bin/env bash
# The project's run command (README "Run the main job"). On a fresh Debian machine it installs
# what it needs (Debian's Dovecot and Postfix, the virtualenv), starts the demo upstream
# (real Dovecot + Postfix on 127.0.0.1, state in var/demo/), prints the client settings, and
# stays in the foreground until Ctrl-C (or SIGTERM), then stops everything cleanly.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
# shellcheck source=scripts/lib.sh
source "$root/scripts/lib.sh"
demo="$root/var/demo"

# --- Debian packages ---------------------------------------------------------------------------
debs=(dovecot-imapd dovecot-lmtpd dovecot-submissiond postfix)
ensure_debs "${debs[@]}"

# --- Python environment (the same venv as scripts/test.sh) -------------------------------------
ensure_venv "$root"
ensure_native "$root" || echo "run.sh: the native opening core did not build; opening runs in Python (slower)" >&2

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

# --- Upstream: Dovecot + Postfix (smime_proxy/harness) -------------------------------------
mkdir -p "$demo"
env_file="$demo/upstream.env"
rm -f "$env_file"
# Postfix delivers to the proxy's Store Encrypted filter (LMTP), which delivers to Dovecot.
lmtp_port=$(python -m smime_proxy.demo --workdir "$demo/proxy" --lmtp-port)
python -m smime_proxy.harness --workdir "$demo/upstream" --env-file "$env_file" \
    --delivery-port "$lmtp_port" &
pids+=($!)
while [ ! -s "$env_file" ]; do
    kill -0 "${pids[0]}" 2>/dev/null || { wait "${pids[0]}" || true; echo "run.sh: upstream did not start" >&2; exit 2; }
    sleep 0.1
done
# shellcheck disable=SC1090
source "$env_file"

# --- The proxy -------------------------------------------------------------------------------
# Config, server CA and demo keys (smime_proxy/demo.py); kept across runs in var/demo/proxy.
python -m smime_proxy.demo --workdir "$demo/proxy" --env-file "$env_file"
# shellcheck disable=SC1091
source "$demo/proxy/proxy.env"
smime-proxy serve --config "$demo/proxy/smime-proxy.yaml" &
pids+=($!)
for _ in $(seq 1 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$PROXY_CONTROL_PORT") 2>/dev/null && break
    kill -0 "${pids[1]}" 2>/dev/null || { echo "run.sh: the proxy did not start" >&2; exit 2; }
    sleep 0.1
done

# --- Client settings -------------------------------------------------------------------------
cat <<EOT

smime-proxy is running in front of a real Dovecot + Postfix (state: $demo).

Point a mail client at the PROXY:
  IMAP          127.0.0.1 port $PROXY_IMAP_PORT (STARTTLS; plaintext allowed from loopback)
  SMTP          127.0.0.1 port $PROXY_SMTP_PORT (submission, STARTTLS, AUTH PLAIN/LOGIN)
  TLS CA        $PROXY_TLS_CA_FILE   (self-signed demo certificate for 127.0.0.1/localhost)
  S/MIME CA     $demo/proxy/data/server-ca.pem   (issued the demo users' certificates; import
                it in the mail client, trusted for e-mail, only if it should verify signatures
                itself: with the default "signatures: strip" the proxy has verified them)
  Secure Mail   https://127.0.0.1:$PROXY_CONTROL_PORT/   (unlock your key here)
  Store Encrypted  Postfix delivers through the proxy's filter (LMTP 127.0.0.1 port
                $PROXY_LMTP_PORT): turn it on for yourself on the Secure Mail page, and new
                plain mail to you is stored encrypted

  Users: mail password / Secure Mail Password
EOT
for user in $UPSTREAM_USERS; do
    printf '    %-22s %-12s %s\n' "$user@$UPSTREAM_DOMAIN" "$user-pw" "$user-smime"
done
cat <<EOT

  Unlock from a script (or use the page):
    $root/.venv/bin/smime-proxy unlock alice --config $demo/proxy/smime-proxy.yaml --cafile $PROXY_TLS_CA_FILE \\
        --mail-password-file <(printf alice-pw) --password-file <(printf alice-smime)
  Upstream (direct, for comparison): IMAP $UPSTREAM_HOST:$UPSTREAM_IMAP_PORT, SMTP $UPSTREAM_HOST:$UPSTREAM_SUBMISSION_PORT

Press Ctrl-C to stop.
EOT

wait -n "${pids[@]}"
