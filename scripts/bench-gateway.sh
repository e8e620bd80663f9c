#!/usr/bin/env bash
# Load benchmark of the SMTP gateway (`unspoof serve`), issue 4: msg/s, the latency the gateway
# adds over sending straight to the downstream (p50, p99), CPU per message of the gateway
# process and its context switches per message (by thread), and its memory with 1,000 idle
# connections. Not a test: it prints figures and
# fails only if something does not run.
#
#   scripts/bench-gateway.sh                     # N=20000 messages per phase, C=32, K=20,
#                                                # RATE=1500 msg/s in the fixed-rate phases
#   N=5000 scripts/bench-gateway.sh              # quicker
#   PHASES="A D" scripts/bench-gateway.sh        # only these phases
#   BASE_BIN=/tmp/base/unspoof scripts/bench-gateway.sh
#                                                # a second gateway ("base", another build) in
#                                                # the same run: each phase goes direct, through
#                                                # the base, through this one, back to back, so
#                                                # before/after see the same machine
#   PROFILE=1 scripts/bench-gateway.sh           # also `perf record` each gateway (phase A)
#   PROFILE=wakeups scripts/bench-gateway.sh     # instead record its wake-ups and sleeps
#                                                # (sched tracepoints, phase A), summed by
#                                                # scripts/bench/wakeups.py: which hand-offs
#                                                # between threads each message costs
#   STORE_URL='postgres:///gwbench?host=/var/run/postgresql&user=postgres' scripts/bench-gateway.sh
#                                                # the store in PostgreSQL, over its unix socket
#                                                # (the netns has its own loopback); the database
#                                                # must exist. Default: SQLite in the data
#                                                # directory, the embedded default.
#   STORE_TOML='batch_size = 100' scripts/bench-gateway.sh   # more [store] keys
#   UNSPOOF_BIN=/tmp/base/unspoof scripts/bench-gateway.sh    # another build of the gateway
#                                                # (before/after pairs; the sink and the load
#                                                # generator stay this tree's)
#   BUILD=0 SINK_BIN=... LOAD_BIN=...            # no build; these sink / load generator binaries
#
# Set-up (everything on loopback):
# - a private network namespace ($NETNS, default unspoof-gwbench) with only `lo`, to which the
#   corpus's sender addresses are added (192.0.2.10, 203.0.113.66, ...), so the load generator
#   connects *from* each message's real sending IP and the engine's SPF/DMARC results are the
#   bench kit's expected ones; NETNS= runs on the host's loopback instead (every message then
#   comes from 127.0.0.1, SPF fails, and the verdict mix differs);
# - the corpus: the bench kit's messages (../shared/bench/data: 2000 multipart messages of
#   4-25 KB, DKIM/ARC-signed, 16 scenarios, envelope in manifest.jsonl; the 80 IPv6 ones are
#   skipped because the gateway listens on IPv4) and the kit's zone files, served by the
#   gateway itself (`--dns-zone`, negative answers with SOA, so warm means no query at all);
# - the sink (crates/gateway/examples/sink.rs) as downstream MTA: accepts and discards;
# - the gateway: `unspoof serve --config <generated unspoof.toml> --dns-zone ...` with
#   [gateway] downstream = the sink, reverse_dns = false, domains = ["recvbench.com"],
#   metrics on, submission off, the default limits except max_connections = IDLE + 100;
#   [store] url = $STORE_URL (every message and session recorded, first contact asked);
# - the load generator (crates/gateway/examples/smtp_load.rs).
#
# Steps: build (release); measure the sink alone; start the gateway (and the base); IDLE
# (default 1000) idle connections (EHLO done) for VmRSS on each fresh process; warm each up
# (every corpus message once: DNS caches, allocator, connections); then for each phase run the
# same load straight to the sink ("direct") and through each gateway, back to back:
#   A. full speed, C connections, K messages per connection, pipelined     -> msg/s, CPU/msg
#   B. full speed, one message per connection                              -> msg/s
#   C. RATE msg/s (default 1500), K per connection, pipelined               -> added latency
#   D. RATE msg/s, K per connection, not pipelined (as MTAs without         -> added latency
#      PIPELINING: one round trip per command)
#   E. RATE msg/s, one message per connection                               -> added latency
# "Added latency" is the data latency (end-of-data marker written to the final reply: the time
# the server takes to decide and answer) through the gateway minus straight to the sink at the
# same percentile, also given as the ratio of the two. The fixed rate is offered open-loop: a
# message whose slot comes while every connection is busy starts late, and its open-loop
# latency (slot to final reply) counts the wait.
# Then each gateway's own per-outcome latency from its session log (what it measures itself),
# the client's data latency per outcome (each reply's queue id looked up in the session log:
# end of data to the final reply, every wait before the reply included), and its /metrics.
#
# Output: $OUT (default target/bench-gateway/<date>): results.jsonl (one RESULT per run),
# report.txt (the summary table), sessions.jsonl, serve.log, metrics.txt, perf files.
set -eo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
KIT=${BENCH_KIT:-$REPO/../shared/bench}
N=${N:-20000}
C=${C:-32}
K=${K:-20}
RATE=${RATE:-1500}
PHASES=${PHASES:-A B C D E}
IDLE=${IDLE:-1000}
NETNS=${NETNS-unspoof-gwbench}
STORE_URL=${STORE_URL:-}
STORE_TOML=${STORE_TOML:-}   # more [store] keys, e.g. 'flush_interval_ms = 50' 
OUT=${OUT:-$REPO/target/bench-gateway/$(date -u +%Y%m%dT%H%M%SZ)}
log() { printf '\n== %s\n' "$*"; }

MANIFEST=$KIT/data/manifest.jsonl
if [ ! -f "$MANIFEST" ]; then
  echo "bench-gateway: no corpus at $KIT/data; generate it with the kit's gen.py" >&2
  echo "  (cd $KIT && . ./env.sh && \$PY gen.py -n 2000), or set BENCH_KIT" >&2
  exit 1
fi
MANIFEST=$(cd "$(dirname "$MANIFEST")" && pwd)/manifest.jsonl
ZONES=()
for z in "$(dirname "$MANIFEST")"/zones/*.zone; do ZONES+=(--dns-zone "$z"); done

if [ "${BUILD:-1}" = 1 ]; then
  log "building (release): unspoof, and the sink and load generator examples"
  (cd "$REPO" && cargo build --release -p unspoof && \
    cargo build --release -p unspoof-gateway --example sink --example smtp_load)
fi
BIN=${UNSPOOF_BIN:-$REPO/target/release/unspoof}
BASE_BIN=${BASE_BIN:-}
SINK=${SINK_BIN:-$REPO/target/release/examples/sink}
LOAD=${LOAD_BIN:-$REPO/target/release/examples/smtp_load}

mkdir -p "$OUT"
RESULTS=$OUT/results.jsonl
: > "$RESULTS"

# --- network namespace ---------------------------------------------------------------------
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  if [ -n "$NETNS" ]; then ip netns del "$NETNS" 2>/dev/null || true; fi
}
trap cleanup EXIT
if [ -n "$NETNS" ]; then
  ip netns list | grep -qw "$NETNS" && ip netns del "$NETNS"
  ip netns add "$NETNS"
  ip netns exec "$NETNS" ip link set lo up
  # Every IPv4 sending address of the corpus, so connections can come from it.
  python3 -c '
import json, sys
ips = {json.loads(l)["ip"] for l in open(sys.argv[1]) if l.strip()}
print("\n".join(sorted(i for i in ips if ":" not in i)))' "$MANIFEST" |
    while read -r ip; do ip netns exec "$NETNS" ip addr add "$ip/32" dev lo; done
  NS=(ip netns exec "$NETNS")
  SINK_PORT=10025 GW_PORT=2525 METRICS_PORT=9425 BASE_PORT=2526 BASE_METRICS_PORT=9426
  BIND=--bind-source
else
  NS=()
  read -r SINK_PORT GW_PORT METRICS_PORT BASE_PORT BASE_METRICS_PORT < <(python3 -c '
import socket
ss = [socket.socket() for _ in range(5)]
for s in ss: s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in ss])')
  BIND=
fi
# Room for IDLE connections plus the load, on both sides of each connection.
ulimit -n $(( (IDLE + 2 * C) * 2 + 1024 ))

# --- the sink, alone ---------------------------------------------------------------------
log "sink on 127.0.0.1:$SINK_PORT"
"${NS[@]}" "$SINK" --listen "127.0.0.1:$SINK_PORT" --threads 1 > "$OUT/sink.log" 2>&1 &
SINK_PID=$!
PIDS+=("$SINK_PID")
for _ in $(seq 50); do grep -q listening "$OUT/sink.log" && break; sleep 0.1; done

load() {  # load LABEL PORT ARGS... : one load-generator run, its RESULT line into results.jsonl
  local label=$1 port=$2; shift 2
  "${NS[@]}" "$LOAD" --addr "127.0.0.1:$port" --manifest "$MANIFEST" $BIND --rcpt-domain recvbench.com \
    --label "$label" "$@" \
    2>&1 | tee "$OUT/$label.txt"
  grep '^RESULT ' "$OUT/$label.txt" | sed 's/^RESULT //' >> "$RESULTS"
}

LOADAVG=$(cut -d' ' -f1-3 /proc/loadavg)
log "the sink alone (it must not be the bottleneck); load average $LOADAVG"
load sink-alone "$SINK_PORT" -n "$N" -c "$C" -k "$K" --watch sink="$SINK_PID"

# --- the gateways ---------------------------------------------------------------------------
GW_NAMES=() GW_PIDS=() GW_PORTS=() GW_METRICS=() GW_DATA=()
start_gateway() {  # start_gateway NAME BIN PORT METRICS_PORT
  local name=$1 bin=$2 port=$3 mport=$4
  local data=$OUT/data-$name
  rm -rf "$data"
  cat > "$OUT/unspoof-$name.toml" <<EOF
# Generated by scripts/bench-gateway.sh
hostname = "gw.recvbench.com"
protected_domains = ["recvbench.com"]

[gateway]
data_dir = "$data"
listen = "127.0.0.1:$port"
submission = ""
metrics = "127.0.0.1:$mport"
downstream = "127.0.0.1:$SINK_PORT"
domains = ["recvbench.com"]
reverse_dns = false

[gateway.limits]
max_connections = $(( IDLE + 100 ))

[store]
url = "${STORE_URL//NAME/$name}"
$STORE_TOML
EOF
  log "$name ($bin) on 127.0.0.1:$port, relaying to the sink; config $OUT/unspoof-$name.toml"
  "${NS[@]}" "$bin" serve --config "$OUT/unspoof-$name.toml" "${ZONES[@]}" \
    > "$OUT/serve-$name.log" 2>&1 &
  local pid=$!
  PIDS+=("$pid")
  for _ in $(seq 100); do
    "${NS[@]}" python3 -c "import socket; socket.create_connection(('127.0.0.1', $port), 1)" \
      2>/dev/null && break
    kill -0 "$pid" 2>/dev/null || { cat "$OUT/serve-$name.log"; exit 1; }
    sleep 0.2
  done
  GW_NAMES+=("$name") GW_PIDS+=("$pid") GW_PORTS+=("$port") GW_METRICS+=("$mport")
  GW_DATA+=("$data")

  # Idle connections first, on the fresh process: after the load phases the allocator keeps
  # the memory it freed and new connections reuse it, so the difference would read zero.
  log "$IDLE idle connections (EHLO done) to the fresh $name"
  "${NS[@]}" "$LOAD" --addr "127.0.0.1:$port" --idle "$IDLE" --watch "$name=$pid" \
    --label "idle-$name" |
    tee "$OUT/idle-$name.txt"
  grep '^RESULT ' "$OUT/idle-$name.txt" | sed 's/^RESULT //' >> "$RESULTS"

  log "warm-up: every corpus message once through $name"
  load "warmup-$name" "$port" -n 2000 -c "$C" -k "$K" > /dev/null
  grep -v "\"label\": *\"warmup-$name\"" "$RESULTS" > "$RESULTS.tmp" || true
  mv "$RESULTS.tmp" "$RESULTS"
}
# STORE_URL may name each gateway's own database with NAME (postgres:///gwbench_NAME?...).
if [ -n "$BASE_BIN" ]; then start_gateway base "$BASE_BIN" "$BASE_PORT" "$BASE_METRICS_PORT"; fi
start_gateway gateway "$BIN" "$GW_PORT" "$METRICS_PORT"

phase() {  # phase NAME ARGS... : direct, then each gateway, with the same load
  local name=$1; shift
  case " $PHASES " in *" $name "*) ;; *) return 0 ;; esac
  log "phase $name: $*"
  load "$name-direct" "$SINK_PORT" "$@" --watch sink="$SINK_PID"
  local i
  for i in "${!GW_NAMES[@]}"; do
    local gname=${GW_NAMES[$i]} gpid=${GW_PIDS[$i]} perf_pid=
    if [ -n "$PROFILE" ] && [ "$name" = A ]; then
      local events=(-F 499)
      [ "$PROFILE" = wakeups ] && events=(-e sched:sched_wakeup,sched:sched_switch)
      perf record "${events[@]}" --call-graph dwarf,16384 -p "$gpid" -o "$OUT/perf-$gname.data" \
        2> "$OUT/perf-$gname.log" &
      perf_pid=$!
      sleep 0.5
    fi
    load "$name-$gname" "${GW_PORTS[$i]}" "$@" --watch gateway="$gpid" --watch sink="$SINK_PID" \
      --replies "$OUT/replies-$name-$gname.tsv"
    if [ -n "$perf_pid" ]; then
      kill -INT "$perf_pid"; wait "$perf_pid" || true
    fi
  done
}
phase A -n "$N" -c "$C" -k "$K"
phase B -n "$(( N / 4 ))" -c "$C" -k 1
phase C -n "$(( RATE * 5 ))" -c "$C" -k "$K" --rate "$RATE"
phase D -n "$(( RATE * 5 ))" -c "$C" -k "$K" --rate "$RATE" --no-pipelining
phase E -n "$(( RATE * 3 ))" -c "$C" -k 1 --rate "$RATE"

for i in "${!GW_NAMES[@]}"; do
  "${NS[@]}" python3 -c "
import urllib.request
print(urllib.request.urlopen('http://127.0.0.1:${GW_METRICS[$i]}/metrics', timeout=5).read().decode())
" > "$OUT/metrics-${GW_NAMES[$i]}.txt"
done

log "stopping the gateways (SIGTERM) and the sink"
for p in "${GW_PIDS[@]}"; do kill -TERM "$p"; wait "$p" || true; done
kill -TERM "$SINK_PID"; wait "$SINK_PID" || true
PIDS=()
SESSIONS=()
for i in "${!GW_NAMES[@]}"; do
  cp "${GW_DATA[$i]}/sessions.jsonl" "$OUT/sessions-${GW_NAMES[$i]}.jsonl"
  SESSIONS+=(--sessions "${GW_NAMES[$i]}=$OUT/sessions-${GW_NAMES[$i]}.jsonl")
done

if [ -n "$PROFILE" ]; then
  for g in "${GW_NAMES[@]}"; do
    [ -f "$OUT/perf-$g.data" ] || continue
    if [ "$PROFILE" = wakeups ]; then
      perf script -i "$OUT/perf-$g.data" -F comm,tid,event,trace,ip,sym 2>/dev/null |
        python3 "$REPO/scripts/bench/wakeups.py" --msgs "$N" > "$OUT/wakeups-$g.txt" || true
      continue
    fi
    perf report -i "$OUT/perf-$g.data" --no-children --sort symbol --stdio 2>/dev/null |
      grep -v '^$' | head -80 > "$OUT/perf-$g-self.txt" || true
    perf report -i "$OUT/perf-$g.data" --children --sort symbol --stdio -g none 2>/dev/null |
      grep -v '^$' | head -120 > "$OUT/perf-$g-children.txt" || true
  done
fi

log "report"
COMMIT=${UNSPOOF_BIN:-$(cd "$REPO" && git rev-parse --short HEAD)$(cd "$REPO" &&
  git diff --quiet HEAD -- crates || echo '+dirty')}
python3 "$REPO/scripts/bench/gateway_report.py" "$RESULTS" "${SESSIONS[@]}" \
  --machine "$(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)" \
  --load "$LOADAVG" --commit "$COMMIT${BASE_BIN:+, base $BASE_BIN}" \
  | tee "$OUT/report.txt"
echo "files in $OUT"
