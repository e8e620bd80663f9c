#!/usr/bin/env bash
# `unspoof milter` beside OpenDKIM+OpenDMARC on the bench kit's corpus, in the same run, driven by
# the kit's MTA-side milter client (runners/run_milter.py, protocol 6, -c concurrent sessions).
#
#   scripts/bench-milter.sh                  # N=2000 messages, REPEAT=3 runs of each, -c 4
#   N=500 REPEAT=1 scripts/bench-milter.sh   # quicker
#
# Both sides do the same job: verify and add Authentication-Results, never refuse. Ours runs
# with a log-only policy (every [actions] class = accept) so every message gets its AR, like
# OpenDMARC with RejectFailures false. Server CPU (user+sys of the milter processes, read from
# /proc through their pid files) is what is compared: msg per server-CPU-second. The DNS
# server's CPU is reported apart and counted for nobody.
#
# Shares the kit with scripts/bench.sh and other users: the `mailbench` netns, knotd and the
# peers' milters are reused when they are already up, and only what this script started is
# stopped at the end (and not even that while another kit run is still going). Results go to a
# private run directory, $RUN/unspoof-milter/ (the kit's run_all.sh clears run/results/).
#
# Output: $RUN/unspoof-milter/report.md (table + agreement) and results/*.jsonl, *.summary.json.
# Environment: BENCH_KIT (default ../shared/bench from the repo), N, REPEAT, C (sessions, 4),
# PORT (our milter inside the netns, 8895), plus the kit's own (BENCH_DATA, BENCH_RUN, PEERS).
set -eo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
KIT=$(cd "${BENCH_KIT:-$REPO/../shared/bench}" && pwd)
export N=${N:-2000} REPEAT=${REPEAT:-3}
C=${C:-4}
PORT=${PORT:-8895}
. "$KIT/env.sh"          # DATA RUN NETNS DNS_PORT PEERS PY; nsexec spawn reap
[ -n "$NETNS" ] || { echo "bench-milter: needs the kit's netns (OpenDKIM/OpenDMARC resolve through it)"; exit 2; }
export BENCH_NETNS=$NETNS
log() { printf '\n== %s\n' "$*"; }
alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

# --- peers and corpus ----------------------------------------------------------------------
if ! { [ -x "$PY" ] && command -v opendkim >/dev/null && command -v opendmarc >/dev/null && command -v knotd >/dev/null; }; then
  log "installing the peers (kit's setup_peers.sh; slow)"
  "$KIT/setup_peers.sh"
fi
count=$( [ -f "$DATA/manifest.jsonl" ] && wc -l < "$DATA/manifest.jsonl" || echo 0)
if [ "$count" -lt "$N" ]; then
  log "generating the corpus: gen.py -n $N into $DATA"
  (cd "$KIT" && $PY gen.py -n "$N" --out "$DATA")
fi

log "building unspoof (release)"
(cd "$REPO" && cargo build --release -p unspoof)
BIN=$REPO/target/release/unspoof

# --- servers: reuse what runs, remember what we start --------------------------------------
STARTED=()
cleanup() {
  cd "$KIT"
  reap "$MYRUN/unspoof-milter.pid" 2>/dev/null || true
  if pgrep -f "run_all.sh|scripts/bench.sh|runners/run_" >/dev/null 2>&1; then
    [ ${#STARTED[@]} -eq 0 ] || echo "bench-milter: another kit run is active; leaving ${STARTED[*]} up"
    return
  fi
  for s in "${STARTED[@]}"; do
    case $s in
      milters) ./milters.sh stop >/dev/null 2>&1 || true;;
      dns) ./dns.sh stop >/dev/null 2>&1 || true;;
      netns) ./netns.sh down >/dev/null 2>&1 || true;;
    esac
  done
}
trap cleanup EXIT
cd "$KIT"
MYRUN=$RUN/unspoof-milter
mkdir -p "$MYRUN/results"
rm -f "$MYRUN"/results/*

if ip netns list | grep -qw "$NETNS"; then echo "netns $NETNS: reusing"; else ./netns.sh up; STARTED+=(netns); fi
if alive "$RUN/knotd.pid"; then echo "knotd: reusing pid $(cat "$RUN/knotd.pid")"; else ./dns.sh start; STARTED+=(dns); fi
if alive "$RUN/opendkim.pid" && alive "$RUN/opendmarc.pid"; then
  echo "opendkim/opendmarc: reusing pids $(cat "$RUN/opendkim.pid") $(cat "$RUN/opendmarc.pid")"
else
  ./milters.sh start; STARTED+=(milters)
fi
if pgrep -f "run_all.sh|scripts/bench.sh" >/dev/null 2>&1; then
  echo "bench-milter: warning: another kit run is active; CPU figures are per process but the machine is shared"
fi

# The driver reads pid files from its run dir: ours there, the others linked.
for f in knotd opendkim opendmarc; do ln -sf "$RUN/$f.pid" "$MYRUN/$f.pid"; done
cat > "$MYRUN/unspoof-milter.toml" <<EOF
# Log-only: every finding accepted, so every message gets Authentication-Results (the job
# OpenDKIM+OpenDMARC do in this kit).
hostname = "bench.local"
[actions]
own_domain_spoof = "accept"
dmarc_reject = "accept"
dmarc_quarantine = "accept"
header_ambiguity = "accept"
impersonation = "accept"
lookalike = "accept"
reply_to_diversion = "accept"
forged_trust = "accept"
spf_fail = "accept"
dmarc_fail_none = "accept"
malformed_header = "accept"
missing_from = "accept"
[milter]
listen = "inet:127.0.0.1:$PORT"
on_error = "accept"
log_verdicts = false
EOF
spawn "$MYRUN/unspoof-milter.pid" "$MYRUN/unspoof-milter.log" \
  "$BIN" milter --config "$MYRUN/unspoof-milter.toml" --resolver "127.0.0.1:$DNS_PORT" --dns-timeout 5
for i in $(seq 50); do
  nsexec python3 -c "import socket;socket.create_connection(('127.0.0.1',$PORT),0.2)" 2>/dev/null && break
  sleep 0.1
done
echo "unspoof milter: pid $(cat "$MYRUN/unspoof-milter.pid") on 127.0.0.1:$PORT in netns $NETNS"

# --- runs: alternate the two so drift on the shared machine hits both ----------------------
run() {  # run TAG K ARGS...
  local tag=$1 k=$2; shift 2
  BENCH_RUN=$MYRUN nsexec $PY runners/run_milter.py "$@" --tag "$tag" -c "$C" -n "$N" > /dev/null
  mv "$MYRUN/results/$tag-c$C.summary.json" "$MYRUN/results/$tag-c$C.r$k.summary.json"
  python3 -c "import json,sys;d=json.load(open(sys.argv[1]));print(f\"{d['tool']:26s} run {sys.argv[2]}: {d['msgs_per_s']:7.1f} msg/s wall, server CPU {d['server_cpu_s']:.2f} s, errors {d.get('errors')}\")" \
    "$MYRUN/results/$tag-c$C.r$k.summary.json" "$k"
}
log "$REPEAT runs of each, $N messages, -c $C"
for k in $(seq "$REPEAT"); do
  run opendkim+opendmarc "$k" --milter inet:8891@127.0.0.1 --milter inet:8893@127.0.0.1
  run unspoof-milter "$k" --milter "inet:$PORT@127.0.0.1" --pidfile unspoof-milter.pid
done

log "report"
python3 - "$MYRUN" "$DATA" "$C" "$N" <<'PY' | tee "$MYRUN/report.md"
import glob, json, os, statistics, sys
run, data, c, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
tools = [f"opendkim+opendmarc-c{c}", f"unspoof-milter-c{c}"]
def summaries(t):
    return [json.load(open(p)) for p in sorted(glob.glob(f"{run}/results/{t}.r*.summary.json"))]
def med(xs):
    return statistics.median(xs) if xs else float("nan")
rows = {}
print(f"## Milters on the bench corpus ({n} messages, {c} concurrent sessions, medians of {len(summaries(tools[0]))} runs)\n")
print("| milter | msg per server-CPU-s | server CPU s | msg/s wall | DNS CPU s | errors |")
print("| --- | ---: | ---: | ---: | ---: | ---: |")
for t in tools:
    s = summaries(t)
    per = med([x["n"] / x["server_cpu_s"] for x in s if x["server_cpu_s"] > 0])
    rows[t] = per
    print(f"| {t} | {per:.0f} | {med([x['server_cpu_s'] for x in s]):.2f} | {med([x['msgs_per_s'] for x in s]):.0f} | "
          f"{med([x['dns_cpu_s'] for x in s]):.2f} | {max(x.get('errors', 0) for x in s)} |")
print(f"\nRatio: unspoof milter does {rows[tools[1]] / rows[tools[0]]:.1f}x the messages per server-CPU-second.\n")
man = [json.loads(l) for l in open(os.path.join(data, "manifest.jsonl"))][:n]
res = {t: [json.loads(l) for l in open(f"{run}/results/{t}.jsonl")] for t in tools}
fields = ["dkim", "dkim_pass_d", "spf", "dmarc"]
norm = lambda r, k: sorted(r.get(k) or []) if k == "dkim_pass_d" else r.get(k)
print("| result | unspoof = OpenDKIM+OpenDMARC | unspoof = expected | OpenDKIM+OpenDMARC = expected |")
print("| --- | ---: | ---: | ---: |")
for k in fields:
    a, b = res[tools[1]], res[tools[0]]
    same = sum(norm(x, k) == norm(y, k) for x, y in zip(a, b))
    ours = sum(norm(x, k) == (sorted(m["expect"][k]) if k == "dkim_pass_d" else m["expect"][k]) for x, m in zip(a, man))
    theirs = sum(norm(y, k) == (sorted(m["expect"][k]) if k == "dkim_pass_d" else m["expect"][k]) for y, m in zip(b, man))
    print(f"| {k} | {same}/{len(a)} | {ours}/{len(a)} | {theirs}/{len(b)} |")
# Where the two disagree, by scenario.
print("\nDisagreements by scenario (field: unspoof vs OpenDKIM+OpenDMARC vs expected):\n")
from collections import Counter
dis = Counter()
for x, y, m in zip(res[tools[1]], res[tools[0]], man):
    for k in fields:
        if norm(x, k) != norm(y, k):
            e = sorted(m["expect"][k]) if k == "dkim_pass_d" else m["expect"][k]
            dis[(m.get("scenario", "?"), k, str(norm(x, k)), str(norm(y, k)), str(e))] += 1
for (sc, k, a, b, e), cnt in sorted(dis.items()):
    print(f"- {sc}: {k}: {a} vs {b} vs {e} ({cnt})")
if not dis:
    print("- none")
PY
echo
echo "kept: $MYRUN/report.md, $MYRUN/results/"
