#!/usr/bin/env bash
# unspoof beside the peer verifiers (rspamd, OpenDKIM/OpenDMARC, Node mailauth, dkimpy,
# Perl Mail::DKIM) on the bench kit's signed corpus, in one run, on one machine.
#
#   scripts/bench.sh                 # N=2000 messages, REPEAT=3 runs of every tool
#   N=500 REPEAT=1 scripts/bench.sh  # quicker
#   SKIP_PEERS=1 scripts/bench.sh    # only unspoof; keeps the peers' results of an earlier run
#
# Steps: install the peers with the kit's setup_peers.sh when missing; generate the corpus
# (gen.py -n N) into the kit's data dir when missing or smaller than N; build
# `cargo build --release -p unspoof`; start the kit's network namespace (only `lo`) and knotd
# in it; run every peer REPEAT times (the kit's run_all.sh, plus rspamd with 2 workers as the
# kit's bench.sh does); run unspoof REPEAT times cold (whole process) and warm (pass 2 of 3 in
# one process, see scripts/bench/run_unspoof.py); then the kit's compare.py and our ratio table.
# Everything stays on loopback inside the namespace; servers are stopped on exit.
#
# Output: the kit's run/results/ (unspoof.jsonl, unspoof-warm.jsonl, *.rK.summary.json) and
# run/unspoof/{compare.txt,ratios.md,analysis.jsonl}. Environment: BENCH_KIT (default
# ../shared/bench from the repo), N, REPEAT, SKIP_PEERS, POLICY (an unspoof.toml), plus the
# kit's own (BENCH_DATA, BENCH_RUN, BENCH_NETNS, BENCH_DNS_PORT, PEERS).
set -eo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
KIT=$(cd "${BENCH_KIT:-$REPO/../shared/bench}" && pwd)
export N=${N:-2000} REPEAT=${REPEAT:-3}
. "$KIT/env.sh"          # DATA RUN NETNS DNS_PORT PEERS PY; nsexec
export BENCH_NETNS=$NETNS
log() { printf '\n== %s\n' "$*"; }

# --- peers -------------------------------------------------------------------------------
have_peers() {
  [ -x "$PY" ] && [ -d "$PEERS/node/node_modules/mailauth" ] &&
    for c in rspamd opendkim opendmarc knotd kdig perl node; do command -v "$c" >/dev/null || return 1; done &&
    perl -MMail::DKIM -MMail::SPF -MMail::DMARC -e1 2>/dev/null &&
    "$PY" -c 'import dkim, authheaders, spf, dns, nacl, authres' 2>/dev/null
}
if ! have_peers; then
  log "installing the peers (kit's setup_peers.sh; 5-10 min)"
  "$KIT/setup_peers.sh"
fi

# --- corpus --------------------------------------------------------------------------------
count=$( [ -f "$DATA/manifest.jsonl" ] && wc -l < "$DATA/manifest.jsonl" || echo 0)
if [ "$count" -lt "$N" ]; then
  log "generating the corpus: gen.py -n $N into $DATA"
  (cd "$KIT" && $PY gen.py -n "$N" --out "$DATA")
else
  log "corpus: $DATA ($count messages, using the first $N)"
fi

# --- unspoof -------------------------------------------------------------------------------
log "building unspoof (release)"
(cd "$REPO" && cargo build --release -p unspoof)
BIN=$REPO/target/release/unspoof

# --- servers -------------------------------------------------------------------------------
cleanup() {
  cd "$KIT"
  ./milters.sh stop >/dev/null 2>&1 || true
  ./rspamd.sh stop >/dev/null 2>&1 || true
  ./dns.sh stop >/dev/null 2>&1 || true
  ./netns.sh down >/dev/null 2>&1 || true
}
trap cleanup EXIT
cd "$KIT"
./netns.sh up
./dns.sh start

if [ -z "$SKIP_PEERS" ]; then
  log "peers: run_all.sh, $REPEAT runs each (about 5-6 min for 2000 messages)"
  RSPAMD_WORKERS=1 ./rspamd.sh start
  ./milters.sh start
  NO_COMPARE=1 RSPAMD_WORKERS=1 ./run_all.sh
  ./rspamd.sh stop
  RSPAMD_WORKERS=2 ./rspamd.sh start
  for k in $(seq "$REPEAT"); do
    nsexec $PY runners/run_rspamd.py -c 8 --tag=-w2 -n "$N" > /dev/null
    mv "$RUN/results/rspamd-c8-w2.summary.json" "$RUN/results/rspamd-c8-w2.r$k.summary.json"
    echo "rspamd-c8-w2 run $k done"
  done
  ./rspamd.sh stop
  ./milters.sh stop
fi

log "unspoof: $REPEAT cold whole-process runs and $REPEAT warm runs"
python3 "$REPO/scripts/bench/run_unspoof.py" --kit "$KIT" --bin "$BIN" --repeat "$REPEAT" -n "$N" \
  ${POLICY:+--policy "$POLICY"}

log "compare.py"
mkdir -p "$RUN/unspoof"
python3 compare.py | tee "$RUN/unspoof/compare.txt"
log "unspoof beside each peer (msg per CPU-second, medians)"
python3 "$REPO/scripts/bench/report.py" --kit "$KIT" | tee "$RUN/unspoof/ratios.md"
echo
echo "kept: $RUN/results/, $RUN/unspoof/compare.txt, $RUN/unspoof/ratios.md"
