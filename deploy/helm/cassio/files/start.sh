#!/bin/sh
# Starts this pod's node (the StatefulSet's container command).
#
# Pod <name>-N runs as node id N+1: the id its certificate names
# (node<N+1>.pem in the TLS secret). It advertises its pod IP and joins
# through pod 0's stable DNS name on the headless Service; pod 0 itself
# bootstraps the cluster on its first start (its own address among the
# seeds is ignored). Everything else comes from /etc/cassio/cassio.toml and
# CASSIO_* variables, checked by the node's own validation.
set -eu
ord="${HOSTNAME##*-}"
id=$((ord + 1))
seed="${CASSIO_SEED_HOST:?}"
tls="${CASSIO_TLS_DIR:-/etc/cassio/tls}"
data="${CASSIO_DATA_DIR:-/var/lib/cassio}"
peer_port="${CASSIO_PEER_PORT:-7000}"
http_port="${CASSIO_HTTP_PORT:-8080}"

for f in "$tls/ca.pem" "$tls/node$id.pem" "$tls/node$id.key"; do
  if [ ! -r "$f" ]; then
    echo "start: $f is missing: issue node $id's certificate (cassio gen-certs --node-ids $id) and add it to the TLS secret" >&2
    exit 2
  fi
done

# The headless Service publishes every pod's name once it has an IP
# (publishNotReadyAddresses), ready or not; the seed's name is resolved
# once at start, so wait for it (bounded: the kubelet restarts us after).
tries=0
until getent hosts "$seed" >/dev/null 2>&1; do
  tries=$((tries + 1))
  if [ "$tries" -ge "${CASSIO_SEED_WAIT_TRIES:-60}" ]; then
    echo "start: the seed $seed does not resolve" >&2
    exit 1
  fi
  sleep 2
done
seeds="$seed:$peer_port"

# Pod 0 with an empty volume while the cluster runs (its volume was lost):
# join the running cluster through a ready peer instead of bootstrapping a
# second one.
if [ "$ord" = 0 ] && [ ! -e "$data/node-id" ]; then
  for peer in ${CASSIO_PEER_HOSTS:-}; do
    if curl -fsS -o /dev/null --max-time 2 "http://$peer:$http_port/ready" 2>/dev/null; then
      echo "start: $peer is ready: joining through it" >&2
      seeds="$peer:$peer_port"
      break
    fi
  done
fi

# The users of the client ports (the users secret), unless the chart was
# installed with auth.insecureNoAuth.
if [ -n "${CASSIO_USERS_DIR:-}" ]; then
  if [ ! -r "$CASSIO_USERS_DIR/users.toml" ]; then
    echo "start: $CASSIO_USERS_DIR/users.toml is missing: put [[users]] tables in the users secret (or install with auth.insecureNoAuth=true)" >&2
    exit 2
  fi
  export CASSIO_USERS_FILE="$CASSIO_USERS_DIR/users.toml"
fi

exec "${CASSIO_BIN:-cassio}" start \
  --advertise "${POD_IP:?}:$peer_port" \
  --seeds "$seeds" \
  --tls-ca "$tls/ca.pem" \
  --tls-cert "$tls/node$id.pem" \
  --tls-key "$tls/node$id.key"
