#!/usr/bin/env bash
# Build the native opening core (native/, docs/native.md) into smime_proxy/ for the Python
# given as $1 (default: python3). Offline, against Debian's packaged crates (native/.cargo/
# config.toml); cargo reuses its last build when nothing changed. The package works
# without it: if this fails, the Python code is used and the reason is printed.
set -euo pipefail
cd "$(dirname "$0")/.."
python=$(realpath "$(command -v "${1:-python3}")")
suffix=$("$python" -c "import sysconfig; print(sysconfig.get_config_var('EXT_SUFFIX'))")
if ! command -v cargo >/dev/null; then
    echo "build-native: no cargo: the Python code is used (scripts/lib.sh ensure_native installs it)" >&2
    exit 1
fi
# cargo reads native/.cargo/config.toml (the Debian registry) from the directory it runs in
(cd native && PYO3_PYTHON=$python cargo build --quiet --release --offline)
install -m 0644 native/target/release/lib_native.so "smime_proxy/_native$suffix"
