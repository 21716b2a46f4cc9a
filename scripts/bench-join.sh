#!/usr/bin/env bash
# Issue 12's join figures on real processes (release build, loopback, native
# store, RF 3, default settings otherwise):
#
#   Three nodes hold JOIN_KEYS (1,000,000) keys of VALUE_SIZE (100) bytes,
#   written at QUORUM through node 1. A fourth node joins. While it is
#   `Joining` (taking writes, syncing the ranges it gains), redis-benchmark
#   (SET and GET at QUORUM, 100 B values, CLIENTS clients, BENCH_REQUESTS
#   each) runs against node 1 over and over; it also runs RUNS times before
#   the join. Prints the time the node was `Joining`, the keys it holds
#   then, the implied streaming rate (keys/s and MB/s of keys and values),
#   and the median ops/s, p50 and p99 before and during the join. Only runs
#   that began and ended while node 4 was `Joining` count as "during".
#   REPAIR_BPS (16MiB, the default) is the nodes' --repair-bytes-per-sec,
#   the budget that paces the sync.
#
#   scripts/bench-join.sh                 # builds `cassio` (release) first
#   CASSIO_BIN=path/to/cassio JOIN_KEYS=200000 scripts/bench-join.sh
#
# Needs redis-benchmark and redis-cli (Debian: redis-tools), curl and jq.
set -euo pipefail
cd "$(dirname "$0")/.."

JOIN_KEYS=${JOIN_KEYS:-1000000}
VALUE_SIZE=${VALUE_SIZE:-100}
BENCH_REQUESTS=${BENCH_REQUESTS:-20000}
CLIENTS=${CLIENTS:-50}
RUNS=${RUNS:-3}
REPAIR_BPS=${REPAIR_BPS:-16MiB}

BENCH=bench-join
# shellcheck source=scripts/bench-lib.sh
source scripts/bench-lib.sh

flags=(--repair-bytes-per-sec "$REPAIR_BPS")
echo "== join of a fourth node into three holding $JOIN_KEYS keys of $VALUE_SIZE B (repair budget $REPAIR_BPS/s)"
start_cluster j "${flags[@]}"
p1=${RESP[j-1]}
t0=$(now)
# Keys "key:000000000123" (16 B) with VALUE_SIZE-byte values, at QUORUM.
redis-benchmark -h 127.0.0.1 -p "$p1" -t set -n "$JOIN_KEYS" -c "$CLIENTS" -P 16 \
  -d "$VALUE_SIZE" -r "$JOIN_KEYS" -q >/dev/null 2>>"$TMP/bench.err"
echo "wrote $JOIN_KEYS random keys (-r $JOIN_KEYS, so some repeat) at QUORUM in $(elapsed "$t0" "$(now)") s"
held=$(status j-1 | jq -r '.repair.tree_items')
echo "node 1 holds $held keys"

: >"$TMP/before.txt"
for _ in $(seq "$RUNS"); do bench_once "$p1" >>"$TMP/before.txt"; done

start=$(now)
start_node j 4 "${flags[@]}"
wait_for j-4 30 '.state != null' "node 4 answers /status"
bench_while j-4 Joining "$p1"
wait_for j-4 600 '.state == "Normal"' "node 4 Normal"
normal=$(now)
line=$(grep -m1 'joined:' "$TMP/j-4.log" || true)
took=$(echo "$line" | grep -o 'took_secs=[0-9.]*' | cut -d= -f2)
keys=$(echo "$line" | grep -o 'keys=[0-9]*' | cut -d= -f2)
took=${took:-$(elapsed "$start" "$normal")}
keys=${keys:-$(status j-4 | jq -r '.repair.tree_items')}
echo "node 4 Joining for ${took} s (started to Normal: $(elapsed "$start" "$normal") s); holds $keys keys"
awk -v k="$keys" -v t="$took" -v v="$VALUE_SIZE" 'BEGIN {
  if (t > 0) printf "streaming: %.0f keys/s, %.1f MB/s of keys and values (16 B keys, %d B values)\n", k / t, k * (16 + v) / t / 1e6, v
}'
echo "node 4 repair: $(status j-4 | jq -c '.repair | {rounds_completed, exchanges_completed, segments_repaired, keys_compared, items_pulled, items_pushed, bytes_sent}')"

echo
echo "redis-benchmark -t set,get -n $BENCH_REQUESTS -c $CLIENTS -d 100 -r 100000 against node 1, $(nproc) cores"
printf '%-8s %-4s %5s %12s %10s %10s\n' phase test runs "ops/s" "p50 ms" "p99 ms"
summarize "$TMP/before.txt" before
summarize "$TMP/during.txt" during
echo "(runs that outlasted the join, not counted: $(grep -c '^SET ' "$TMP/discarded.txt" || true))"
