#!/usr/bin/env bash
# Issue 15's memory target: the resident memory of one Cassio node holding
# N keys (16 B keys, 100 B values by default) against redis-server holding
# the same data, both loaded here with the same `redis-cli --pipe` input.
#
#   scripts/bench-memory.sh                 # builds `cassio` (release) first
#   CASSIO_BIN=path/to/cassio KEYS=1000000 scripts/bench-memory.sh
#
# Settings (environment): KEYS (1000000), VALUE_SIZE (100), SETTLE (20:
# seconds to wait after the load, so flushes and compactions finish).
# Each process's VmRSS (now) and VmHWM (peak) come from /proc/PID/status
# after the load and again after SETTLE seconds; a GET of every 1000th key
# checks both hold the data. Ratios are cassio / redis (lower is better;
# the issue's target is <= 0.75). Needs redis-server, redis-cli, curl, jq.
set -euo pipefail
cd "$(dirname "$0")/.."

KEYS=${KEYS:-1000000}
VALUE_SIZE=${VALUE_SIZE:-100}
SETTLE=${SETTLE:-20}

for tool in redis-server redis-cli curl jq; do
  command -v "$tool" >/dev/null 2>&1 || {
    echo "bench-memory: $tool not found (apt-get install -y redis-server redis-tools curl jq)" >&2
    exit 1
  }
done

BENCH=bench-memory
# shellcheck source=scripts/bench-lib.sh
source scripts/bench-lib.sh

# mem PID FIELD: FIELD (VmRSS, VmHWM) of PID in MiB.
mem() { awk -v f="$2:" '$1 == f { printf "%.1f", $2 / 1024 }' "/proc/$1/status"; }

# The load: SET of KEYS distinct 16-byte keys with VALUE_SIZE-byte values.
awk -v n="$KEYS" -v vs="$VALUE_SIZE" 'BEGIN {
  v = ""; for (i = 0; i < vs; i++) v = v "v"
  for (i = 0; i < n; i++) {
    k = sprintf("key:%012d", i)
    printf "*3\r\n$3\r\nSET\r\n$16\r\n%s\r\n$%d\r\n%s\r\n", k, vs, v
  }
}' >"$TMP/load.resp"

REDIS_PORT=$(free_port)
mkdir -p "$TMP/redis"
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --dir "$TMP/redis" \
  --appendonly yes --appendfsync everysec --save "" \
  --daemonize no --logfile "$TMP/redis.log" &
PID[redis]=$!
wait_ping "$REDIS_PORT" redis-server

RF=1 LOG_LEVEL=warn start_node c1 1
wait_ping "${RESP[c1-1]}" "cassio"

declare -A LOAD_S=()
for sys in redis cassio; do
  port=$REDIS_PORT; [ "$sys" = cassio ] && port=${RESP[c1-1]}
  t0=$(now)
  redis-cli -h 127.0.0.1 -p "$port" --pipe <"$TMP/load.resp" >"$TMP/$sys.pipe" 2>&1
  LOAD_S[$sys]=$(elapsed "$t0" "$(now)")
  grep -q "errors: 0, replies: $KEYS" "$TMP/$sys.pipe" || {
    echo "$BENCH: $sys load failed: $(tail -1 "$TMP/$sys.pipe")" >&2
    exit 1
  }
done

pid_of() { if [ "$1" = redis ]; then echo "${PID[redis]}"; else echo "${PID[c1-1]}"; fi; }
declare -A AFTER=() PEAK=() SETTLED=()
for sys in redis cassio; do AFTER[$sys]=$(mem "$(pid_of $sys)" VmRSS); done
sleep "$SETTLE"
for sys in redis cassio; do
  port=$REDIS_PORT; [ "$sys" = cassio ] && port=${RESP[c1-1]}
  for i in $(seq 0 1000 $((KEYS - 1))); do printf 'GET key:%012d\n' "$i"; done |
    redis-cli -h 127.0.0.1 -p "$port" >"$TMP/$sys.get"
  missing=$(grep -cv '^v' "$TMP/$sys.get" || true)
  [ "$missing" = 0 ] || { echo "$BENCH: $sys lost $missing sampled keys" >&2; exit 1; }
  SETTLED[$sys]=$(mem "$(pid_of $sys)" VmRSS)
  PEAK[$sys]=$(mem "$(pid_of $sys)" VmHWM)
done

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
echo "$KEYS keys of 16 B, values of $VALUE_SIZE B, loaded with redis-cli --pipe; $(nproc) cores"
echo "redis-server $(redis-server --version | sed -n 's/.*v=\([^ ]*\).*/\1/p'): appendonly yes, appendfsync everysec; cassio: one node, RF 1, native store, defaults"
echo
echo "| figure | redis-server | cassio | cassio / redis |"
echo "|---|---:|---:|---:|"
echo "| load time (s) | ${LOAD_S[redis]} | ${LOAD_S[cassio]} | $(ratio "${LOAD_S[cassio]}" "${LOAD_S[redis]}") |"
echo "| RSS right after the load (MiB) | ${AFTER[redis]} | ${AFTER[cassio]} | $(ratio "${AFTER[cassio]}" "${AFTER[redis]}") |"
echo "| RSS after ${SETTLE} s (MiB) | ${SETTLED[redis]} | ${SETTLED[cassio]} | $(ratio "${SETTLED[cassio]}" "${SETTLED[redis]}") |"
echo "| peak RSS, VmHWM (MiB) | ${PEAK[redis]} | ${PEAK[cassio]} | $(ratio "${PEAK[cassio]}" "${PEAK[redis]}") |"
