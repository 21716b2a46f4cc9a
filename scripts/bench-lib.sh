# Shared by the process benchmarks (bench-repair.sh, bench-join.sh): a temp
# dir removed on exit with every node stopped, free ports, nodes started on
# loopback, /status polled with jq, redis-benchmark runs summarized.
# Source it after setting BENCH (the script's name, for messages) and the
# variables the functions use (BENCH_REQUESTS, CLIENTS).

TMP=$(mktemp -d "${TMPDIR:-/tmp}/cassio-$BENCH.XXXXXX")
declare -A PID=()
cleanup() {
  local status=$?
  for pid in "${PID[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
  for pid in "${PID[@]}"; do wait "$pid" 2>/dev/null || true; done
  if [ "${KEEP_TMP:-0}" = 1 ]; then
    echo "$BENCH: kept $TMP" >&2
  else
    rm -rf "$TMP"
  fi
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if [ -z "${CASSIO_BIN:-}" ]; then
  echo "$BENCH: building cassio (release)..." >&2
  cargo build --release -q -p cassio-node --bin cassio
  CASSIO_BIN="${CARGO_TARGET_DIR:-target}/release/cassio"
fi

# A port nothing listens on and that this script has not handed out yet.
declare -A TAKEN=()
free_port() {
  local p
  for _ in $(seq 200); do
    # Below the ephemeral range (32768 and up), where outgoing
    # connections (wrk's, redis-benchmark's) cannot hold a port.
    p=$((20000 + RANDOM % 12000))
    [ -n "${TAKEN[$p]:-}" ] && continue
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
      TAKEN[$p]=1
      echo "$p"
      return 0
    fi
  done
  echo "$BENCH: no free port found" >&2
  return 1
}

now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }

declare -A PEER=() RESP=() HTTP=()
# start_node CLUSTER I [FLAGS...]: starts node I of CLUSTER on its ports
# (chosen on first start, kept on restarts) and data dir; RF (3) and
# LOG_LEVEL (info) set those flags.
start_node() {
  local cluster=$1 i=$2
  shift 2
  local n="$cluster-$i"
  if [ -z "${PEER[$n]:-}" ]; then
    PEER[$n]=$(free_port); RESP[$n]=$(free_port); HTTP[$n]=$(free_port)
  fi
  local seeds=()
  [ "$i" != 1 ] && seeds=(--seeds "127.0.0.1:${PEER[$cluster-1]}")
  "$CASSIO_BIN" start --cluster "$cluster" --data-dir "$TMP/$n" \
    --listen "127.0.0.1:${PEER[$n]}" --resp-addr "127.0.0.1:${RESP[$n]}" \
    --http-addr "127.0.0.1:${HTTP[$n]}" --client-addr off \
    --replication-factor "${RF:-3}" --consistency quorum --log-level "${LOG_LEVEL:-info}" \
    "${seeds[@]}" "$@" >>"$TMP/$n.log" 2>&1 &
  PID[$n]=$!
}

# wait_ping PORT NAME: waits (at most 60 s) until PING on PORT answers PONG.
wait_ping() {
  local port=$1 name=$2
  for _ in $(seq 600); do
    [ "$(redis-cli -h 127.0.0.1 -p "$port" PING 2>/dev/null)" = PONG ] && return 0
    sleep 0.1
  done
  echo "$BENCH: $name did not answer PING in 60 s" >&2
  exit 1
}

status() { curl -sf --max-time 2 "http://127.0.0.1:${HTTP[$1]}/status"; }

# wait_for NODE SECONDS JQ-FILTER DESCRIPTION: polls NODE's /status (every
# 50 ms, at most SECONDS) until the filter is true.
wait_for() {
  local n=$1 secs=$2 filter=$3 what=$4
  local deadline=$(($(date +%s) + secs))
  while [ "$(date +%s)" -lt "$deadline" ]; do
    if status "$n" 2>/dev/null | jq -e "$filter" >/dev/null 2>&1; then
      return 0
    fi
    sleep 0.05
  done
  echo "$BENCH: $what: not within ${secs}s; log of $n:" >&2
  tail -n 30 "$TMP/$n.log" >&2
  exit 1
}

all_normal='[.members[] | select(.up and .state == "Normal")] | length == 3'
node_state() { status "$1" 2>/dev/null | jq -r '.state' || echo "?"; }

# start_cluster CLUSTER [FLAGS...]: nodes 1 to 3, each seeing three Normal.
start_cluster() {
  local cluster=$1
  shift
  for i in 1 2 3; do
    start_node "$cluster" "$i" "$@"
    wait_for "$cluster-$i" 30 '.state != null' "$cluster-$i answers /status"
  done
  for i in 1 2 3; do
    wait_for "$cluster-$i" 60 "$all_normal" "$cluster-$i sees three Normal members"
  done
}

kill_node() {
  kill -KILL "${PID[$1]}" 2>/dev/null || true
  wait "${PID[$1]}" 2>/dev/null || true
  unset "PID[$1]"
}

# RESP commands "SET key value" for keys 0..N-1 (redis-cli --pipe input).
set_commands() {
  awk -v n="$1" 'BEGIN {
    for (i = 0; i < n; i++) {
      k = "missed-" i; v = "value-" i "-" (i * 7)
      printf "*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n", length(k), k, length(v), v
    }
  }'
}


# Prints "test rps p50 p99" for one redis-benchmark run against PORT.
bench_once() {
  redis-benchmark -h 127.0.0.1 -p "$1" -t set,get -n "$BENCH_REQUESTS" -c "$CLIENTS" \
    -d 100 -r 100000 --csv 2>>"$TMP/bench.err" |
    awk -F'","' 'NR > 1 { gsub(/"/, "", $1); gsub(/"/, "", $NF); print $1, $2, $5, $7 }'
}

median() { sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) print "-"; else if (NR % 2) print v[(NR + 1) / 2]; else printf "%.3f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

# summarize FILE PHASE: median ops/s, p50 and p99 per test over the runs.
summarize() {
  local f=$1 phase=$2 t
  for t in SET GET; do
    local runs
    runs=$(grep -c "^$t " "$f" || true)
    printf '%-8s %-4s %5s %12s %10s %10s\n' "$phase" "$t" "$runs" \
      "$(awk -v t="$t" '$1 == t { print $2 }' "$f" | median)" \
      "$(awk -v t="$t" '$1 == t { print $3 }' "$f" | median)" \
      "$(awk -v t="$t" '$1 == t { print $4 }' "$f" | median)"
  done
}


# bench_while NODE STATE PORT: runs bench_once against PORT over and over
# while NODE is in STATE; runs that began and ended in STATE go to
# $TMP/during.txt, the one that outlasted it to $TMP/discarded.txt.
bench_while() {
  local n=$1 state=$2 port=$3
  : >"$TMP/during.txt"
  : >"$TMP/discarded.txt"
  while [ "$(node_state "$n")" = "$state" ]; do
    bench_once "$port" >"$TMP/run.txt"
    if [ "$(node_state "$n")" = "$state" ]; then
      cat "$TMP/run.txt" >>"$TMP/during.txt"
    else
      cat "$TMP/run.txt" >>"$TMP/discarded.txt"
    fi
  done
}
