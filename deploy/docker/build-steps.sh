#!/usr/bin/env bash
# The container image's build steps, run by the Dockerfile's builder stage
# and by CI outside any container (.ci/run), so the two cannot drift.
#
#   build-steps.sh toolchain      check cargo and rustc (>= the workspace's rust-version)
#   build-steps.sh build OUT_DIR  release build of the `cassio` binary into OUT_DIR,
#                                 then run it once (--version, a config check)
#   build-steps.sh check          what CI runs: toolchain, lockfile up to date,
#                                 and the build's exact cargo flags type-checked
#                                 (`cargo check` with them: a full release build
#                                 costs CI too much); CASSIO_DOCKER_FULL_BUILD=1
#                                 runs `build` instead
set -euo pipefail
cd "$(dirname "$0")/../.."

# One place for the flags: the image's binary is the `cassio` bin of
# cassio-node with its default features (the native store), locked to
# Cargo.lock.
CARGO_FLAGS=(--locked --release -p cassio-node --bin cassio)

toolchain() {
  command -v cargo >/dev/null || { echo "build-steps: cargo not found" >&2; exit 1; }
  local want have
  want=$(sed -n 's/^rust-version *= *"\([0-9.]*\)".*/\1/p' Cargo.toml | head -n1)
  have=$(rustc --version | awk '{print $2}')
  if [ -n "$want" ] && [ "$(printf '%s\n%s\n' "$want" "$have" | sort -V | head -n1)" != "$want" ]; then
    echo "build-steps: rustc $have is older than the workspace's rust-version $want" >&2
    exit 1
  fi
  echo "build-steps: rustc $have (rust-version $want), $(cargo --version)"
}

smoke() {
  local bin=$1
  "$bin" --version
  # The image's default settings pass the node's validation up to the one
  # refusal they are meant to hit: peer traffic off loopback without TLS
  # (a container must be given certificates). Nothing is bound.
  local dir
  dir=$(mktemp -d)
  local code=0
  CASSIO_CONFIG=deploy/docker/cassio.toml CASSIO_DATA_DIR="$dir/data" \
    "$bin" start >/dev/null 2>"$dir/err" || code=$?
  if [ "$code" != 2 ] || ! grep -q 'needs TLS' "$dir/err"; then
    echo "build-steps: the image's default config was not refused as expected (exit $code):" >&2
    cat "$dir/err" >&2
    exit 1
  fi
  rm -rf "$dir"
  echo "build-steps: $bin runs; the default config refuses plaintext peers off loopback"
}

build() {
  local out=${1:?usage: build-steps.sh build OUT_DIR}
  toolchain
  cargo build "${CARGO_FLAGS[@]}"
  local target=${CARGO_TARGET_DIR:-target}
  install -D -m 0755 "$target/release/cassio" "$out/cassio"
  smoke "$out/cassio"
  echo "build-steps: $out/cassio built"
}

case "${1:-}" in
  toolchain) toolchain ;;
  build) build "${2:-}" ;;
  check)
    if [ "${CASSIO_DOCKER_FULL_BUILD:-0}" = 1 ]; then
      out=$(mktemp -d)
      build "$out"
      rm -rf "$out"
    else
      toolchain
      cargo metadata --locked --format-version 1 >/dev/null
      cargo check "${CARGO_FLAGS[@]}"
      echo "build-steps: check passed (cargo check ${CARGO_FLAGS[*]})"
    fi
    ;;
  *)
    echo "usage: $0 toolchain | build OUT_DIR | check" >&2
    exit 2
    ;;
esac
