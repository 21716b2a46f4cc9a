#!/usr/bin/env bash
# Installs the real clients that cassio-node/tests/real_clients.rs drives,
# into caches kept between runs (rebuilt when their pins change):
#   $HOME/.cache/cassio-ci/clients-venv   redis-py (tests/clients/requirements.txt)
#   $HOME/.cache/cassio-ci/node-clients   ioredis and node-redis (package-lock.json)
# redis-cli and redis-benchmark come from Debian's redis-tools (.ci/run).
# It also validates the HTTP API's OpenAPI document
# (cassio-node/src/gateway/http/openapi.json) with openapi-spec-validator.
# Idempotent and quiet; run by .ci/run before the tests, and by hand:
#   bash .ci/clients.sh
set -euo pipefail
cd "$(dirname "$0")/.."
CLIENTS=cassio-node/tests/clients
CACHE=$HOME/.cache/cassio-ci  # where tests/real_clients.rs looks
VENV=$CACHE/clients-venv
NODE_DIR=$CACHE/node-clients
SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"

apt_install() {
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "$@"
}

if [ ! -x "$VENV/bin/python" ] || ! cmp -s "$CLIENTS/requirements.txt" "$VENV/requirements.txt"; then
  rm -rf "$VENV"
  mkdir -p "$CACHE"
  if ! python3 -m venv "$VENV" 2>/dev/null; then
    apt_install python3-venv
    rm -rf "$VENV"
    python3 -m venv "$VENV"
  fi
  "$VENV/bin/pip" install -q --disable-pip-version-check -r "$CLIENTS/requirements.txt"
  cp "$CLIENTS/requirements.txt" "$VENV/requirements.txt"
fi

if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  apt_install nodejs npm
fi
if [ ! -d "$NODE_DIR/node_modules" ] || ! cmp -s "$CLIENTS/package-lock.json" "$NODE_DIR/package-lock.json"; then
  rm -rf "$NODE_DIR"
  mkdir -p "$NODE_DIR"
  cp "$CLIENTS/package.json" "$CLIENTS/package-lock.json" "$NODE_DIR/"
  (cd "$NODE_DIR" && npm ci --silent --no-audit --no-fund >/dev/null)
fi
"$VENV/bin/openapi-spec-validator" cassio-node/src/gateway/http/openapi.json
echo "real clients: $("$VENV/bin/python" -c 'import redis; print("redis-py", redis.__version__)'), node $(node --version), $(cd "$NODE_DIR" && node -p '"ioredis " + require("ioredis/package.json").version + ", redis " + require("redis/package.json").version')"
