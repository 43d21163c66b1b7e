#!/bin/sh
# Entry point of the `dovecot` and `postfix` services of docker-compose.yml: renders the same
# templates the test harness renders (dovecot.conf, main.cf, master.cf in this directory,
# placeholders @@NAME@@ replaced from the environment), then runs the daemon in the foreground.
#
#   entrypoint.sh dovecot   TLS files (first start), users, Dovecot as PID 1
#   entrypoint.sh postfix   Postfix as PID 1 (waits for the TLS files from the dovecot service)
#   entrypoint.sh render    only render the three files into $UPSTREAM_DIR (used by a test)
#
# Environment: UPSTREAM_DIR (state directory; its tls/ is shared with the other containers),
# LISTEN, DOVECOT_HOST, IMAP_PORT, IMAPS_PORT, LMTP_PORT, SASL_PORT, SUBMISSION_PORT;
# DELIVERY_HOST / DELIVERY_PORT: where Postfix delivers (default: Dovecot's LMTP; set them
# to smime-proxy's listeners.lmtp for the Store Encrypted filter).
# PROXY_UID: owner of tls/proxy-key.pem (the smime-proxy container's user).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
DIR=${UPSTREAM_DIR:?UPSTREAM_DIR is not set}
DELIVERY_HOST=${DELIVERY_HOST:-${DOVECOT_HOST:-}}
DELIVERY_PORT=${DELIVERY_PORT:-${LMTP_PORT:-}}
for var in LISTEN DOVECOT_HOST IMAP_PORT IMAPS_PORT LMTP_PORT SASL_PORT SUBMISSION_PORT; do
    eval "value=\${$var:-}"
    [ -n "$value" ] || { echo "entrypoint.sh: $var is not set" >&2; exit 2; }
done

render() {  # render TEMPLATE OUTPUT: write OUTPUT only if its content changes
    tmp="$2.tmp"
    sed -e "s|@@DIR@@|$DIR|g" -e "s|@@LISTEN@@|$LISTEN|g" -e "s|@@DOVECOT_HOST@@|$DOVECOT_HOST|g" \
        -e "s|@@IMAP_PORT@@|$IMAP_PORT|g" -e "s|@@IMAPS_PORT@@|$IMAPS_PORT|g" \
        -e "s|@@LMTP_PORT@@|$LMTP_PORT|g" -e "s|@@SASL_PORT@@|$SASL_PORT|g" \
        -e "s|@@SUBMISSION_PORT@@|$SUBMISSION_PORT|g" -e "s|@@DELIVERY_HOST@@|$DELIVERY_HOST|g" \
        -e "s|@@DELIVERY_PORT@@|$DELIVERY_PORT|g" "$1" > "$tmp"
    if grep -q '@@[A-Z][A-Z0-9_]*@@' "$tmp"; then
        echo "entrypoint.sh: $1: placeholder without a value:" >&2
        grep -o '@@[A-Z][A-Z0-9_]*@@' "$tmp" | sort -u >&2
        rm -f "$tmp"; exit 2
    fi
    if cmp -s "$tmp" "$2"; then rm -f "$tmp"; else
        # Backdated: a just-modified main.cf delays Postfix's start (see harness/render.py).
        touch -d '-10 seconds' "$tmp"; mv "$tmp" "$2"
    fi
}

render_all() {
    mkdir -p "$DIR/postfix/etc"
    render "$here/dovecot.conf" "$DIR/dovecot.conf"
    render "$here/main.cf" "$DIR/postfix/etc/main.cf"
    render "$here/master.cf" "$DIR/postfix/etc/master.cf"
}

make_tls() {  # a throw-away CA, a server certificate (Dovecot, Postfix) and one for the proxy
    tls="$DIR/tls"
    [ -s "$tls/proxy-key.pem" ] && return 0
    mkdir -p "$tls"; cd "$tls"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 825 \
        -subj "/O=smime-proxy test upstream/CN=smime-proxy test upstream CA" \
        -addext "basicConstraints=critical,CA:TRUE,pathlen:0" \
        -addext "keyUsage=critical,keyCertSign,cRLSign" -keyout ca-key.pem -out ca.pem
    for name in server proxy; do
        openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
            -subj "/CN=localhost" -keyout "$name-key.pem" -out "$name.csr"
        printf '%s\n' "basicConstraints=critical,CA:FALSE" "keyUsage=critical,digitalSignature" \
            "extendedKeyUsage=serverAuth" \
            "subjectAltName=DNS:localhost,DNS:mail.example.test,IP:127.0.0.1" > "$name.ext"
        openssl x509 -req -in "$name.csr" -CA ca.pem -CAkey ca-key.pem -CAcreateserial \
            -days 825 -extfile "$name.ext" -out "$name-cert.pem"
        cat ca.pem >> "$name-cert.pem"
        rm -f "$name.csr" "$name.ext"
    done
    rm -f ca-key.pem ca.srl
    chmod 600 server-key.pem proxy-key.pem
    chown "${PROXY_UID:-10001}" proxy-key.pem
    cd /
}

case "${1:-}" in
render)
    render_all ;;
dovecot)
    mkdir -p "$DIR/log" "$DIR/mail"
    make_tls
    render_all
    cp "$here/users" "$DIR/users"; chgrp dovecot "$DIR/users"; chmod 640 "$DIR/users"
    chown 5000:5000 "$DIR/mail"; chmod 700 "$DIR/mail"
    # Logs: $DIR/log/dovecot.log, as in the tests (docker compose exec dovecot cat ...).
    exec dovecot -F -c "$DIR/dovecot.conf" ;;
postfix)
    mkdir -p "$DIR/log" "$DIR/postfix/queue" "$DIR/postfix/data"
    chown postfix "$DIR/postfix/data"
    while [ ! -s "$DIR/tls/server-key.pem" ]; do sleep 1; done
    render_all
    postfix -c "$DIR/postfix/etc" check   # creates the queue directories
    # Logs: $DIR/log/postfix.log.
    exec postfix -c "$DIR/postfix/etc" start-fg ;;
*)
    echo "usage: entrypoint.sh dovecot|postfix|render" >&2; exit 2 ;;
esac
