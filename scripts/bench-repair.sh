#!/usr/bin/env bash
# Issue 11's figures on real processes (release build, loopback, native
# store, three nodes, RF 3, default settings otherwise):
#
#  1. Catch-up. Node 3 is SIGKILLed; CATCHUP_KEYS (10000) keys are written at
#     QUORUM through node 1; node 3 is restarted on its data and ports. The
#     script prints the time from the restart to `Normal` (hints drained and
#     one anti-entropy round with every live peer done), then kills nodes 1
#     and 2 and reads every key at ONE through node 3 alone: how many of the
#     missed writes it holds.
#
#  2. Foreground latency with and without a repair. A second cluster runs
#     with hints off (`--no-hints`), so anti-entropy alone must refill node 3
#     after it missed MISSED_KEYS writes of MISSED_SIZE bytes. redis-benchmark
#     (SET and GET at QUORUM, 100 B values, CLIENTS clients, BENCH_REQUESTS
#     each) runs against node 1 before the outage, over and over while
#     node 3 is `Syncing` (its repair running), and RUNS times after it is
#     `Normal`. Only runs that began and ended while node 3 was `Syncing`
#     count as "during". Prints the median ops/s, p50 and p99 of each phase.
#     REPAIR_BPS (16MiB, the default) is the nodes' --repair-bytes-per-sec.
#
#   scripts/bench-repair.sh                 # builds `cassio` (release) first
#   CASSIO_BIN=path/to/cassio scripts/bench-repair.sh
#   PARTS=1 scripts/bench-repair.sh         # only the catch-up part (or 2)
#
# Needs redis-benchmark and redis-cli (Debian: redis-tools), curl and jq.
# Everything listens on 127.0.0.1 on free ports; all data goes to a temp
# dir that is removed on exit, with every node stopped (KEEP_TMP=1 keeps it).
set -euo pipefail
cd "$(dirname "$0")/.."

PARTS=${PARTS:-"1 2"}
CATCHUP_KEYS=${CATCHUP_KEYS:-10000}
MISSED_KEYS=${MISSED_KEYS:-200000}
MISSED_SIZE=${MISSED_SIZE:-1000}
BENCH_REQUESTS=${BENCH_REQUESTS:-20000}
CLIENTS=${CLIENTS:-50}
RUNS=${RUNS:-3}
REPAIR_BPS=${REPAIR_BPS:-16MiB}

for tool in redis-benchmark redis-cli curl jq; do
  command -v "$tool" >/dev/null 2>&1 || {
    echo "bench-repair: $tool not found" >&2
    exit 1
  }
done

BENCH=bench-repair
# shellcheck source=scripts/bench-lib.sh
source scripts/bench-lib.sh

if [[ " $PARTS " == *" 1 "* ]]; then
  echo "== 1. catch-up of $CATCHUP_KEYS missed keys (hints and anti-entropy, defaults)"
  start_cluster c
  kill_node c-3
  wait_for c-1 60 '[.members[] | select(.up | not)] | length == 1' "node 3 seen down"
  t0=$(now)
  out=$(set_commands "$CATCHUP_KEYS" | redis-cli -p "${RESP[c-1]}" --pipe 2>&1)
  t1=$(now)
  echo "$out" | grep -q "errors: 0, replies: $CATCHUP_KEYS" || {
    echo "bench-repair: writes failed: $out" >&2
    exit 1
  }
  echo "wrote $CATCHUP_KEYS keys at QUORUM with node 3 down in $(elapsed "$t0" "$t1") s"
  wait_for c-1 10 "[.hints.pending[].bytes] | add // 0 > 0" "node 1 holds hints"

  restart=$(now)
  start_node c 3
  wait_for c-3 30 '.state != null' "node 3 answers /status after its restart"
  up=$(now)
  seen=""
  while :; do
    s=$(node_state c-3)
    [ "$s" != "${seen##* }" ] && seen="$seen $s"
    [ "$s" = Normal ] && break
    if [ "$(elapsed "$restart" "$(now)" | cut -d. -f1)" -ge 120 ]; then
      echo "bench-repair: node 3 not Normal 120 s after its restart (states:$seen)" >&2
      exit 1
    fi
    sleep 0.05
  done
  normal=$(now)
  st=$(status c-3)
  echo "node 3: answering $(elapsed "$restart" "$up") s after its restart, Normal after $(elapsed "$restart" "$normal") s (states:$seen)"
  echo "node 3 repair: $(echo "$st" | jq -c '.repair | {rounds_completed, exchanges_completed, exchanges_failed, segments_repaired, keys_compared, items_pulled, items_pushed, bytes_sent}')"
  echo "node 1 hints: $(status c-1 | jq -c '.hints | {stored, delivered, dropped_cap, dropped_window, failed}')"

  kill_node c-1
  kill_node c-2
  wait_for c-3 60 '[.members[] | select(.up | not)] | length == 2' "node 3 sees nodes 1 and 2 down"
  {
    echo "CASSIO.CONSISTENCY ONE"
    for ((i = 0; i < CATCHUP_KEYS; i++)); do echo "GET missed-$i"; done
  } >"$TMP/gets.txt"
  redis-cli -p "${RESP[c-3]}" <"$TMP/gets.txt" >"$TMP/got.txt" 2>&1
  held=$(awk 'NR > 1 { i = NR - 2; if ($0 == "value-" i "-" (i * 7)) n++ } END { print n + 0 }' "$TMP/got.txt")
  echo "node 3 alone, at ONE: $held of $CATCHUP_KEYS missed writes read back"
  kill_node c-3
  echo
fi

if [[ " $PARTS " == *" 2 "* ]]; then
  echo "== 2. QUORUM latency on node 1 with and without a repair running (hints off, repair budget $REPAIR_BPS/s)"
  start_cluster r --no-hints --repair-interval 1h --repair-bytes-per-sec "$REPAIR_BPS"
  p1=${RESP[r-1]}
  : >"$TMP/before.txt"
  for _ in $(seq "$RUNS"); do bench_once "$p1" >>"$TMP/before.txt"; done

  kill_node r-3
  wait_for r-1 60 '[.members[] | select(.up | not)] | length == 1' "node 3 seen down"
  t0=$(now)
  redis-benchmark -h 127.0.0.1 -p "$p1" -t set -n "$MISSED_KEYS" -c "$CLIENTS" \
    -d "$MISSED_SIZE" -r 1000000000 -q >/dev/null 2>>"$TMP/bench.err"
  echo "wrote $MISSED_KEYS values of $MISSED_SIZE B at QUORUM with node 3 down in $(elapsed "$t0" "$(now)") s"

  restart=$(now)
  start_node r 3 --no-hints --repair-interval 1h --repair-bytes-per-sec "$REPAIR_BPS"
  wait_for r-3 30 '.state != null' "node 3 answers /status after its restart"
  bench_while r-3 Syncing "$p1"
  wait_for r-3 120 '.state == "Normal"' "node 3 Normal after its repair"
  echo "node 3 Normal $(elapsed "$restart" "$(now)") s after its restart; repair: $(status r-3 | jq -c '.repair | {rounds_completed, segments_repaired, keys_compared, items_pulled, bytes_sent}')"
  # Node 3 holds what the others hold: the same number of items in its trees
  # (no writes run between the benchmark runs).
  items=$(for i in 1 2 3; do status "r-$i" | jq -r '.repair.tree_items'; done | xargs)
  echo "items in each node's trees (nodes 1 2 3): $items"
  pushed=$(for i in 1 2; do status "r-$i" | jq -r '.repair.items_pushed'; done | xargs)
  echo "items pushed to node 3 by nodes 1 and 2: $pushed"
  : >"$TMP/after.txt"
  for _ in $(seq "$RUNS"); do bench_once "$p1" >>"$TMP/after.txt"; done

  echo
  echo "redis-benchmark -t set,get -n $BENCH_REQUESTS -c $CLIENTS -d 100 -r 100000 against node 1, $(nproc) cores"
  printf '%-8s %-4s %5s %12s %10s %10s\n' phase test runs "ops/s" "p50 ms" "p99 ms"
  summarize "$TMP/before.txt" before
  summarize "$TMP/during.txt" during
  summarize "$TMP/after.txt" after
  echo "(runs that outlasted the repair, not counted: $(grep -c '^SET ' "$TMP/discarded.txt" || true))"
fi
