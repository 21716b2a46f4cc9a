#!/bin/sh
# preStop hook: runs before the kubelet sends the node SIGTERM.
#
# Scale-down (this pod's ordinal is at or past the StatefulSet's
# spec.replicas, read from the API server with the pod's service account):
# the node decommissions, handing its ranges over to the remaining nodes
# and leaving the ring; its process then exits on its own. Anything else
# (rolling upgrade, eviction, node drain): the node stays a member; wait
# for the endpoints controller to take the pod out of the client Service,
# then SIGTERM stops it cleanly and it comes back on the same volume.
set -u
ord="${HOSTNAME##*-}"
sa="${CASSIO_SA_DIR:-/var/run/secrets/kubernetes.io/serviceaccount}"
api="${CASSIO_K8S_API:-https://kubernetes.default.svc}"
http_port="${CASSIO_HTTP_PORT:-8080}"
replicas=""
if [ -r "$sa/token" ] && [ -r "$sa/namespace" ]; then
  # spec precedes status in the answer: the first "replicas" is spec's.
  replicas=$(curl -fsS --max-time 10 --cacert "$sa/ca.crt" \
    -H "Authorization: Bearer $(cat "$sa/token")" \
    "$api/apis/apps/v1/namespaces/$(cat "$sa/namespace")/statefulsets/${CASSIO_STATEFULSET:?}" \
    | grep -o '"replicas": *[0-9]*' | head -n 1 | tr -dc '0-9')
fi
case "$replicas" in
  '' | *[!0-9]*)
    echo "preStop: the StatefulSet's replicas are unknown: stopping without leaving" >&2 ;;
  *)
    if [ "$ord" -ge "$replicas" ]; then
      echo "preStop: pod $ord is past replicas=$replicas (scale-down): decommissioning" >&2
      # A node with users takes admin routes from an admin user only: the
      # users secret's admin-user and admin-password (read by the CLI
      # from CASSIO_USER and CASSIO_PASSWORD).
      users="${CASSIO_USERS_DIR:-}"
      if [ -n "$users" ] && [ -r "$users/admin-user" ] && [ -r "$users/admin-password" ]; then
        CASSIO_USER=$(cat "$users/admin-user")
        CASSIO_PASSWORD=$(cat "$users/admin-password")
        export CASSIO_USER CASSIO_PASSWORD
      fi
      exec "${CASSIO_BIN:-cassio}" decommission --node "127.0.0.1:$http_port" \
        --timeout "${CASSIO_DECOMMISSION_TIMEOUT:-55m}"
    fi ;;
esac
sleep "${CASSIO_DRAIN_SECONDS:-5}"
