#!/usr/bin/env bash
# Static checks of deploy/ (no cluster or container engine on CI machines),
# run by .ci/run:
#   1. systemd-analyze verify on deploy/systemd/cassio.service (any warning fails)
#   2. hadolint and checkov on deploy/docker/Dockerfile
#   3. checkov on deploy/kubernetes and on the Helm chart rendered by Helm's
#      engine (helm-python-sdk)
#   4. deploy/tests/test_deploy.py: the chart's objects, the plain manifests
#      matching the chart, the pod scripts' decisions, the Dockerfile
#   5. deploy/docker/build-steps.sh check: the image's build steps
# The systemd unit is also run for real by cargo test
# (cassio-node/tests/systemd_unit.rs).
# The pinned tools live in a virtualenv kept between runs
# (CASSIO_DEPLOY_VENV), rebuilt when deploy/tests/requirements.txt changes.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${CASSIO_DEPLOY_VENV:-$HOME/.cache/cassio-ci/deploy-venv}
REQS=deploy/tests/requirements.txt

step() { printf -- '--> %s (%s)\n' "$*" "$(date -u +%H:%M:%S)"; }

step "tools ($VENV)"
if [ ! -x "$VENV/bin/python" ] || ! cmp -s "$REQS" "$VENV/requirements.txt"; then
  rm -rf "$VENV"
  mkdir -p "$(dirname "$VENV")"
  if ! python3 -m venv "$VENV" 2>/dev/null; then
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends python3-venv
    rm -rf "$VENV"
    python3 -m venv "$VENV"
  fi
  "$VENV/bin/pip" install -q --disable-pip-version-check -r "$REQS"
  cp "$REQS" "$VENV/requirements.txt"
fi
PY="$VENV/bin/python"

step "systemd-analyze verify deploy/systemd/cassio.service"
if command -v systemd-analyze >/dev/null && command -v unshare >/dev/null; then
  # verify insists that ExecStart's binary exists: in a private mount
  # namespace, an empty executable stands at /usr/local/bin/cassio for it.
  stand_in=$(mktemp -d)
  printf '#!/bin/sh\n' >"$stand_in/cassio"
  chmod 0755 "$stand_in/cassio"
  out=$(unshare --mount sh -c "mount --bind '$stand_in' /usr/local/bin && systemd-analyze verify deploy/systemd/cassio.service" 2>&1) || {
    echo "$out" >&2; rm -rf "$stand_in"; exit 1; }
  rm -rf "$stand_in"
  # verify exits 0 on settings it ignores; any word from it is a failure.
  if [ -n "$out" ]; then echo "$out" >&2; exit 1; fi
  echo "systemd-analyze verify: clean"
else
  echo "systemd-analyze or unshare not available: skipped"
fi

step "hadolint deploy/docker/Dockerfile"
"$VENV/bin/hadolint" deploy/docker/Dockerfile
echo "hadolint: clean"

checkov() {
  "$VENV/bin/checkov" --skip-download --compact --quiet "$@"
}

step "checkov: Dockerfile, deploy/kubernetes, the rendered chart"
checkov --framework dockerfile -f deploy/docker/Dockerfile
checkov --framework kubernetes -d deploy/kubernetes
rendered=$(mktemp -d)
trap 'rm -rf "$rendered"' EXIT
"$PY" deploy/tests/render.py "$rendered"
checkov --framework kubernetes -d "$rendered"

step "chart, manifests, pod scripts, Dockerfile (deploy/tests)"
"$PY" -m unittest discover -s deploy/tests -v 2>&1 | tail -n 25

step "image build steps (deploy/docker/build-steps.sh check)"
deploy/docker/build-steps.sh check
