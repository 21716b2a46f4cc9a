#!/usr/bin/env bash
# Issue 15's one table: the same redis-benchmark runs against redis-server
# (AOF, fsync every second), one Cassio node (RF 1) and three Cassio nodes
# (RF 3, QUORUM, the benchmark spread over their three RESP ports), all
# started here on loopback, every figure and ratio printed in one table.
#
#   scripts/bench-resp.sh                  # builds `cassio` (release) first
#   CASSIO_BIN=path/to/cassio RUNS=5 scripts/bench-resp.sh
#
# Settings (environment): REQUESTS (200000 per run), CLIENTS (50; split
# over the three ports for the cluster), RUNS (3: each figure is the median
# of RUNS runs, the three systems taking turns so drift hits all alike),
# PIPELINES ("1 16"), VALUE_SIZE (100), KEYSPACE (100000 random keys),
# CASSIO_SYNC (periodic: Cassio's default, fsync every 100 ms).
#
# Columns: ops/s medians; p99 in ms (for the cluster: the worst of the
# three ports' p99s); `c1/r` = one node / redis; `c3/c1` = three nodes /
# one node. Needs redis-server, redis-benchmark and redis-cli (Debian:
# redis-server, redis-tools), curl and jq.
set -euo pipefail
cd "$(dirname "$0")/.."

REQUESTS=${REQUESTS:-200000}
CLIENTS=${CLIENTS:-50}
RUNS=${RUNS:-3}
PIPELINES=${PIPELINES:-"1 16"}
VALUE_SIZE=${VALUE_SIZE:-100}
KEYSPACE=${KEYSPACE:-100000}
CASSIO_SYNC=${CASSIO_SYNC:-periodic}

for tool in redis-server redis-benchmark redis-cli curl jq; do
  command -v "$tool" >/dev/null 2>&1 || {
    echo "bench-resp: $tool not found (apt-get install -y redis-server redis-tools curl jq)" >&2
    exit 1
  }
done

BENCH=bench-resp
# shellcheck source=scripts/bench-lib.sh
source scripts/bench-lib.sh

# One redis-benchmark run: prints "TEST rps p99" lines.
run_bench() {
  local port=$1 pipeline=$2 clients=$3 requests=$4
  redis-benchmark -h 127.0.0.1 -p "$port" -t set,get -n "$requests" -c "$clients" \
    -d "$VALUE_SIZE" -r "$KEYSPACE" -P "$pipeline" --csv 2>>"$TMP/bench.err" |
    awk -F'","' 'NR > 1 { gsub(/"/, "", $1); gsub(/"/, "", $NF); print $1, $2, $7 }'
}

# The cluster run: one redis-benchmark per node at once, CLIENTS and
# REQUESTS split three ways; prints "TEST summed-rps worst-p99".
run_cluster() {
  local pipeline=$1 i pids=()
  for i in 1 2 3; do
    run_bench "${RESP[c3-$i]}" "$pipeline" $((CLIENTS / 3)) $((REQUESTS / 3)) >"$TMP/c3-$i.txt" &
    pids+=($!)
  done
  wait "${pids[@]}"
  cat "$TMP"/c3-[123].txt |
    awk '{ rps[$1] += $2; if ($3 > p99[$1]) p99[$1] = $3 } END { for (t in rps) print t, rps[t], p99[t] }'
}

# redis-server: AOF on, fsync once a second, no RDB snapshots.
REDIS_PORT=$(free_port)
mkdir -p "$TMP/redis"
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --dir "$TMP/redis" \
  --appendonly yes --appendfsync everysec --save "" \
  --daemonize no --logfile "$TMP/redis.log" &
PID[redis]=$!
wait_ping "$REDIS_PORT" redis-server

# One node, RF 1.
RF=1 LOG_LEVEL=warn start_node c1 1 --sync "$CASSIO_SYNC"
wait_ping "${RESP[c1-1]}" "cassio (one node)"
# Three nodes, RF 3, QUORUM (start_node's defaults).
LOG_LEVEL=warn start_cluster c3 --sync "$CASSIO_SYNC"

echo "redis-benchmark -t set,get -n $REQUESTS -c $CLIENTS -d $VALUE_SIZE -r $KEYSPACE, median of $RUNS runs, $(nproc) cores"
echo "redis-server $(redis-server --version | sed -n 's/.*v=\([^ ]*\).*/\1/p'): appendonly yes, appendfsync everysec"
echo "cassio one node: RF 1, native store, sync $CASSIO_SYNC; three nodes: RF 3, QUORUM, benchmark split over the three RESP ports"
: >"$TMP/all.txt"
for p in $PIPELINES; do
  for _ in $(seq "$RUNS"); do
    run_bench "$REDIS_PORT" "$p" "$CLIENTS" "$REQUESTS" | sed "s/^/redis $p /" >>"$TMP/all.txt"
    run_bench "${RESP[c1-1]}" "$p" "$CLIENTS" "$REQUESTS" | sed "s/^/c1 $p /" >>"$TMP/all.txt"
    run_cluster "$p" | sed "s/^/c3 $p /" >>"$TMP/all.txt"
  done
done
if grep -qiE "error" "$TMP/bench.err"; then
  echo "$BENCH: redis-benchmark reported errors:" >&2
  sort "$TMP/bench.err" | uniq -c | sort -rn | head -5 >&2
fi

# med SYSTEM PIPELINE TEST FIELD (4: ops/s, 5: p99)
med() { awk -v s="$1" -v p="$2" -v t="$3" -v f="$4" '$1 == s && $2 == p && $3 == t { print $f }' "$TMP/all.txt" | median; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }'; }
echo
printf '| %-4s | %-8s | %12s | %8s | %12s | %8s | %5s | %12s | %8s | %5s |\n' \
  test pipeline "redis ops/s" "p99 ms" "cassio-1" "p99 ms" "c1/r" "cassio-3" "p99 ms" "c3/c1"
printf '|%s|\n' "------|----------|--------------|----------|--------------|----------|-------|--------------|----------|-------"
for p in $PIPELINES; do
  for t in SET GET; do
    r=$(med redis "$p" "$t" 4); c1=$(med c1 "$p" "$t" 4); c3=$(med c3 "$p" "$t" 4)
    printf '| %-4s | %-8s | %12.0f | %8s | %12.0f | %8s | %5s | %12.0f | %8s | %5s |\n' \
      "$t" "$p" "$r" "$(med redis "$p" "$t" 5)" "$c1" "$(med c1 "$p" "$t" 5)" "$(ratio "$c1" "$r")" \
      "$c3" "$(med c3 "$p" "$t" 5)" "$(ratio "$c3" "$c1")"
  done
done
