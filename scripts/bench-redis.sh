#!/usr/bin/env bash
# Runs the same redis-benchmark against redis-server and a single Cassio node
# (RESP gateway, RF=1, native store), in one run, and prints each throughput
# and the ratio Cassio / Redis.
#
#   scripts/bench-redis.sh                 # builds `cassio` (release) first
#   CASSIO_BIN=path/to/cassio scripts/bench-redis.sh
#   REDIS_ONLY=1 scripts/bench-redis.sh    # only the redis-server half
#
# Settings (environment): REQUESTS (100000), CLIENTS (50), PIPELINES
# ("1 16"), TESTS ("set,get"), CASSIO_SYNC (periodic:1000, the same
# once-a-second fsync as Redis's `appendfsync everysec`), KEEP_TMP=1 keeps
# the temp dir (logs, data) for inspection.
#
# Needs redis-server and redis-benchmark/redis-cli (Debian: redis-server,
# redis-tools). Everything listens on 127.0.0.1; all data goes to a temp
# dir that is removed on exit, with both servers stopped.
set -euo pipefail
cd "$(dirname "$0")/.."

REQUESTS=${REQUESTS:-100000}
CLIENTS=${CLIENTS:-50}
PIPELINES=${PIPELINES:-"1 16"}
TESTS=${TESTS:-set,get}
CASSIO_SYNC=${CASSIO_SYNC:-periodic:1000}
REDIS_ONLY=${REDIS_ONLY:-0}

for tool in redis-server redis-benchmark redis-cli; do
  command -v "$tool" >/dev/null 2>&1 || {
    echo "bench-redis: $tool not found (apt-get install -y redis-server redis-tools)" >&2
    exit 1
  }
done

TMP=$(mktemp -d "${TMPDIR:-/tmp}/cassio-bench-redis.XXXXXX")
PIDS=()
cleanup() {
  local status=$?
  for pid in "${PIDS[@]}"; do
    kill -TERM "$pid" 2>/dev/null || true
  done
  for pid in "${PIDS[@]}"; do
    # Bounded: a server that ignores SIGTERM for 10 s gets SIGKILL.
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  if [ "${KEEP_TMP:-0}" = 1 ]; then
    echo "bench-redis: kept $TMP" >&2
  else
    rm -rf "$TMP"
  fi
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# A port nothing listens on (bash's /dev/tcp connect fails on a free port).
free_port() {
  local p
  for _ in $(seq 200); do
    p=$((20000 + RANDOM % 30000))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
      echo "$p"
      return 0
    fi
  done
  echo "bench-redis: no free port found" >&2
  return 1
}

# Waits (at most 60 s) until PING on the port answers PONG.
wait_ping() {
  local port=$1 name=$2 pid=$3
  for _ in $(seq 600); do
    if [ "$(redis-cli -h 127.0.0.1 -p "$port" PING 2>/dev/null)" = PONG ]; then
      return 0
    fi
    kill -0 "$pid" 2>/dev/null || { echo "bench-redis: $name exited; log:" >&2; cat "$TMP/$name.log" >&2; return 1; }
    sleep 0.1
  done
  echo "bench-redis: $name did not answer PING in 60 s; log:" >&2
  cat "$TMP/$name.log" >&2
  return 1
}

# Prints "TEST RPS" lines for one benchmark run.
bench() {
  local port=$1 pipeline=$2
  redis-benchmark -h 127.0.0.1 -p "$port" -t "$TESTS" -n "$REQUESTS" -c "$CLIENTS" \
    -P "$pipeline" --csv 2>"$TMP/bench.err" |
    awk -F'","' 'NR > 1 { gsub(/"/, "", $1); gsub(/"/, "", $2); print $1, $2 }'
  if grep -qiE "error|warning" "$TMP/bench.err"; then
    echo "bench-redis: redis-benchmark reported:" >&2
    cat "$TMP/bench.err" >&2
  fi
}

# redis-server: AOF on, fsync once a second, no RDB snapshots.
REDIS_PORT=$(free_port)
mkdir -p "$TMP/redis"
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --dir "$TMP/redis" \
  --appendonly yes --appendfsync everysec --save "" \
  --daemonize no --logfile "$TMP/redis.log" &
PIDS+=($!)
wait_ping "$REDIS_PORT" redis "${PIDS[-1]}"

CASSIO_PORT=""
if [ "$REDIS_ONLY" != 1 ]; then
  if [ -z "${CASSIO_BIN:-}" ]; then
    echo "bench-redis: building cassio (release)..." >&2
    cargo build --release -q -p cassio-node --bin cassio
    CASSIO_BIN="${CARGO_TARGET_DIR:-target}/release/cassio"
  fi
  CASSIO_PORT=$(free_port)
  PEER_PORT=$(free_port)
  "$CASSIO_BIN" start --cluster bench --data-dir "$TMP/cassio" \
    --listen "127.0.0.1:$PEER_PORT" --resp-addr "127.0.0.1:$CASSIO_PORT" \
    --client-addr off --http-addr off --replication-factor 1 \
    --sync "$CASSIO_SYNC" --log-level warn >"$TMP/cassio.log" 2>&1 &
  PIDS+=($!)
  wait_ping "$CASSIO_PORT" cassio "${PIDS[-1]}"
fi

echo "redis-benchmark -t $TESTS -n $REQUESTS -c $CLIENTS (-P 1 and -P 16), $(nproc) cores"
echo "redis-server $(redis-server --version | sed -n 's/.*v=\([^ ]*\).*/\1/p'): appendonly yes, appendfsync everysec"
[ -n "$CASSIO_PORT" ] && echo "cassio: single node, RF=1, native store, sync $CASSIO_SYNC, RESP gateway"
echo
printf '%-6s %-9s %14s %14s %8s\n' test pipeline "redis req/s" "cassio req/s" ratio
for p in $PIPELINES; do
  # Alternate the two servers per setting so slow drift hits both alike.
  declare -A R=() C=()
  while read -r t v; do R[$t]=$v; done < <(bench "$REDIS_PORT" "$p")
  if [ -n "$CASSIO_PORT" ]; then
    while read -r t v; do C[$t]=$v; done < <(bench "$CASSIO_PORT" "$p")
  fi
  for t in "${!R[@]}"; do
    r=${R[$t]}
    c=${C[$t]:-}
    if [ -n "$c" ]; then
      ratio=$(awk -v c="$c" -v r="$r" 'BEGIN { printf "%.2f", c / r }')
    else
      c="-"; ratio="-"
    fi
    printf '%-6s %-9s %14s %14s %8s\n' "$t" "$p" "$r" "$c" "$ratio"
  done | sort
  unset R C
done
