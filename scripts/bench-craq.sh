#!/usr/bin/env bash
# CRAQ keyspaces against chain length, a last-write-wins keyspace at
# QUORUM and a 3-node etcd cluster, side by side in one run (issue 13).
#
# For chain lengths 1, 3 and 5 (clusters of 1, 3 and 5 nodes, a CRAQ
# keyspace of that factor), 3 nodes with an LWW keyspace at QUORUM, and 3
# etcd members (Debian's etcd-server, linearizable reads and writes over
# its JSON gateway): 1,000 keys of 100 B are loaded, then wrk runs 100/0
# and 95/5 read/write mixes for DURATION seconds with CONNS connections to
# each node at once. Prints, per setup and mix, the summed requests/s, the
# median of the nodes' p99 latencies and the answers that were not 2xx
# (404 for a key the load missed, 503 while a chain changes); exits 1 if
# any request failed, after printing every setup.
#
# Usage: scripts/bench-craq.sh   (CASSIO_BIN, DURATION, CONNS, KEEP_TMP)
# Needs: curl, jq, wrk, etcd (apt-get install wrk etcd-server).
set -euo pipefail
BENCH=bench-craq
DURATION=${DURATION:-10}
CONNS=${CONNS:-8}
KEYS=1000
cd "$(dirname "$0")/.."
for tool in curl jq wrk etcd; do
  command -v "$tool" >/dev/null || { echo "$BENCH: needs $tool (apt-get install wrk etcd-server jq curl)" >&2; exit 1; }
done
# shellcheck source=scripts/bench-lib.sh
source scripts/bench-lib.sh

# wrk scripts: a key in 0..KEYS-1 per request, GET with probability
# READS %, else a write of 100 B.
cat >"$TMP/cassio.lua" <<'EOF'
local reads = tonumber(os.getenv("READS"))
local ks = os.getenv("KS")
local value = string.rep("v", 100)
math.randomseed(os.time() + math.floor(os.clock() * 1000000))
request = function()
  local path = "/ks/" .. ks .. "/kv/key" .. math.random(0, 999)
  if math.random(1, 100) <= reads then
    return wrk.format("GET", path)
  end
  return wrk.format("PUT", path, nil, value)
end
EOF
cat >"$TMP/load.lua" <<'EOF'
local ks = os.getenv("KS")
local value = string.rep("v", 100)
local i = -1
request = function()
  i = (i + 1) % 1000
  return wrk.format("PUT", "/ks/" .. ks .. "/kv/key" .. i, nil, value)
end
EOF
cat >"$TMP/etcd.lua" <<'EOF'
local reads = tonumber(os.getenv("READS"))
local b64chars = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
local function b64(data)
  return ((data:gsub(".", function(x)
    local r, b = "", x:byte()
    for i = 8, 1, -1 do r = r .. (b % 2 ^ i - b % 2 ^ (i - 1) > 0 and "1" or "0") end
    return r
  end) .. "0000"):gsub("%d%d%d?%d?%d?%d?", function(x)
    if #x < 6 then return "" end
    local c = 0
    for i = 1, 6 do c = c + (x:sub(i, i) == "1" and 2 ^ (6 - i) or 0) end
    return b64chars:sub(c + 1, c + 1)
  end) .. ({ "", "==", "=" })[#data % 3 + 1])
end
local keys = {}
for i = 0, 999 do keys[i] = b64("key" .. i) end
local value = b64(string.rep("v", 100))
math.randomseed(os.time() + math.floor(os.clock() * 1000000))
wrk.method = "POST"
request = function()
  local k = keys[math.random(0, 999)]
  if math.random(1, 100) <= reads then
    return wrk.format("POST", "/v3/kv/range", nil, '{"key":"' .. k .. '"}')
  end
  return wrk.format("POST", "/v3/kv/put", nil, '{"key":"' .. k .. '","value":"' .. value .. '"}')
end
EOF

# run_wrk NAME LUA READS KS URL...: one wrk per URL at once; prints
# "NAME reads% rps p99ms".
run_wrk() {
  local name=$1 lua=$2 reads=$3 ks=$4
  shift 4
  local i=0 url
  for url in "$@"; do
    READS=$reads KS=$ks wrk -t1 -c"$CONNS" -d"${DURATION}s" --latency -s "$lua" "$url" \
      >"$TMP/wrk.$i.txt" 2>&1 &
    i=$((i + 1))
  done
  wait_wrk
  local rps p99s
  rps=$(cat "$TMP"/wrk.*.txt | awk '/^Requests\/sec/ { s += $2 } END { printf "%.0f", s }')
  p99s=$(cat "$TMP"/wrk.*.txt | awk '$1 == "99%" { v = $2; u = 1; if (v ~ /us$/) u = 0.001; if (v ~ /s$/ && v !~ /ms$/ && v !~ /us$/) u = 1000; sub(/[a-z]+$/, "", v); print v * u }' | median)
  local errors
  errors=$(cat "$TMP"/wrk.*.txt | awk '/Non-2xx or 3xx/ { s += $NF } /Socket errors/ { s += 1 } END { print s + 0 }')
  printf '%-22s %3s%% %9s %8s %6s\n' "$name" "$reads" "$rps" "$p99s" "$errors"
  FAILED=$((FAILED + errors))
  for f in "$TMP"/wrk.*.txt; do cp "$f" "$TMP/kept.${name// /_}.$reads.$(basename "$f")"; done
  rm -f "$TMP"/wrk.*.txt
}
wait_wrk() { while pgrep -f "wrk -t1 -c$CONNS" >/dev/null; do sleep 0.2; done; }

# load URL KS: PUTs every key (in order, over and over for 3 s on one
# connection, so each is written at least once).
load() {
  KS=$2 wrk -t1 -c1 -d3s -s "$TMP/load.lua" "$1" >/dev/null 2>&1 || true
}

# cluster_of N CLUSTER: N nodes, each seeing N Normal members.
cluster_of() {
  local n=$1 cluster=$2 i
  for i in $(seq 1 "$n"); do
    RF=$n start_node "$cluster" "$i"
    wait_for "$cluster-$i" 30 '.state != null' "$cluster-$i answers /status"
  done
  for i in $(seq 1 "$n"); do
    wait_for "$cluster-$i" 90 "[.members[] | select(.up and .state == \"Normal\")] | length == $n" \
      "$cluster-$i sees $n Normal members"
  done
}

create_keyspace() {
  local cluster=$1 body=$2
  curl -sf -X POST -H 'Content-Type: application/json' -d "$body" \
    "http://127.0.0.1:${HTTP[$cluster-1]}/admin/keyspaces" >/dev/null
}

# wait_writes URL KS: until a write to KS answers 200 (a new chain epoch
# is used a lease period after it is learned).
wait_writes() {
  local i
  for i in $(seq 300); do
    curl -sf -X PUT --data warm "$1/ks/$2/kv/warm" -o /dev/null && return 0
    sleep 0.1
  done
  echo "$BENCH: $1 never took a write to $2" >&2
  exit 1
}

FAILED=0
printf '%-22s %4s %9s %8s %6s\n' setup mix "req/s" "p99 ms" errors
for n in 1 3 5; do
  cluster_of "$n" "craq$n"
  create_keyspace "craq$n" "{\"name\":\"lin\",\"replication_factor\":$n,\"mode\":\"craq\"}"
  urls=()
  for i in $(seq 1 "$n"); do
    urls+=("http://127.0.0.1:${HTTP[craq$n-$i]}")
    wait_writes "http://127.0.0.1:${HTTP[craq$n-$i]}" lin
  done
  load "${urls[0]}" lin
  for reads in 100 95; do
    run_wrk "craq chain $n" "$TMP/cassio.lua" "$reads" lin "${urls[@]}"
  done
  if [ "$n" = 3 ]; then
    create_keyspace "craq$n" '{"name":"lww","replication_factor":3,"consistency":"quorum"}'
    for u in "${urls[@]}"; do wait_writes "$u" lww; done
    load "${urls[0]}" lww
    for reads in 100 95; do
      run_wrk "lww rf 3 quorum" "$TMP/cassio.lua" "$reads" lww "${urls[@]}"
    done
  fi
  for i in $(seq 1 "$n"); do kill_node "craq$n-$i"; done
done

# etcd: three members on loopback.
declare -A EC=() EP=()
initial=""
for i in 1 2 3; do
  EC[$i]=$(free_port); EP[$i]=$(free_port)
  initial+="${initial:+,}e$i=http://127.0.0.1:${EP[$i]}"
done
for i in 1 2 3; do
  etcd --name "e$i" --data-dir "$TMP/etcd$i" \
    --listen-client-urls "http://127.0.0.1:${EC[$i]}" --advertise-client-urls "http://127.0.0.1:${EC[$i]}" \
    --listen-peer-urls "http://127.0.0.1:${EP[$i]}" --initial-advertise-peer-urls "http://127.0.0.1:${EP[$i]}" \
    --initial-cluster "$initial" --initial-cluster-state new --log-level error >"$TMP/etcd$i.log" 2>&1 &
  PID[etcd$i]=$!
done
eurls=()
for i in 1 2 3; do
  u="http://127.0.0.1:${EC[$i]}"
  eurls+=("$u")
  for _ in $(seq 300); do
    curl -sf -X POST -d '{"key":"d2FybQ==","value":"dw=="}' "$u/v3/kv/put" -o /dev/null && break
    sleep 0.1
  done
done
READS=0 KS=- wrk -t1 -c16 -d3s -s "$TMP/etcd.lua" "${eurls[0]}" >/dev/null 2>&1 || true
for reads in 100 95; do
  run_wrk "etcd 3 members" "$TMP/etcd.lua" "$reads" - "${eurls[@]}"
done
if [ "$FAILED" != 0 ]; then
  echo "$BENCH: $FAILED requests failed: these figures do not measure the setups" >&2
  exit 1
fi
