# Shared by scripts/test.sh and scripts/run.sh (sourced, not run): install what the project
# needs on a fresh Debian machine. Idempotent and quiet when everything is there.

# ensure_debs PKG...: install the Debian packages that are missing.
ensure_debs() {
    local missing=() pkg
    for pkg in "$@"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
    done
    ((${#missing[@]})) || return 0
    echo "$(basename "$0"): installing Debian packages: ${missing[*]}"
    local sudo=""
    [ "$(id -u)" = 0 ] || sudo="sudo"
    # Postfix asks how to configure itself unless preseeded; the harness brings its own config.
    echo "postfix postfix/main_mailer_type select No configuration" | $sudo debconf-set-selections
    # slapd likewise: the tests start their own with a generated config, never the system one
    echo "slapd slapd/no_configuration boolean true" | $sudo debconf-set-selections
    # PostgreSQL likewise: no system "main" cluster (created and started by the package
    # otherwise); the tests run their own with initdb/pg_ctl in a temporary directory
    if [[ " ${missing[*]} " == *" postgresql "* ]]; then
        $sudo mkdir -p /etc/postgresql-common/createcluster.d
        echo "create_main_cluster = false" |
            $sudo tee /etc/postgresql-common/createcluster.d/smime-proxy-tests.conf >/dev/null
    fi
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    # Redis: the package starts a system redis-server on 127.0.0.1:6379 (where an init system
    # runs); the tests run their own on a free port, so the system one is stopped and disabled
    if [[ " ${missing[*]} " == *" redis-server "* ]]; then
        if [ -d /run/systemd/system ]; then
            $sudo systemctl disable --now redis-server.service >/dev/null 2>&1 || true
        elif [ -x /etc/init.d/redis-server ]; then
            $sudo /etc/init.d/redis-server stop >/dev/null 2>&1 || true
        fi
    fi
}

# ensure_venv ROOT: the project's virtualenv in ROOT/.venv with the project and its test
# extra installed (reinstalled when pyproject.toml changes); puts it first on PATH.
ensure_venv() {
    local root=$1 venv="$1/.venv"
    [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
    local stamp
    stamp="$venv/.installed-$(sha256sum "$root/pyproject.toml" | cut -c1-16)"
    if [ ! -e "$stamp" ]; then
        "$venv/bin/pip" install -q --disable-pip-version-check -e "$root[test]"
        touch "$stamp"
    fi
    export PATH="$venv/bin:$PATH"
}

# ensure_native ROOT: build the native opening core (native/, docs/native.md) into the
# package for ROOT/.venv's Python: Debian's packaged crates it compiles against, and
# Debian's Rust toolchain when there is no cargo on PATH. Returns non-zero when it cannot be
# built (the package then runs its Python twin: scripts/run.sh goes on, scripts/test.sh not).
ensure_native() {
    local root=$1
    ensure_debs librust-pyo3-dev librust-memchr-dev librust-openssl-dev libssl-dev pkg-config
    command -v cargo >/dev/null || ensure_debs cargo rustc
    "$root/scripts/build-native.sh" "$root/.venv/bin/python"
}
