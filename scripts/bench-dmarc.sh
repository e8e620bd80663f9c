#!/usr/bin/env bash
# DMARC aggregate report ingest: `unspoof dmarc ingest` beside parsedmarc on the same 10,000
# gzip'd reports, in the same run (alternating, REPEAT times each).
#
#   scripts/bench-dmarc.sh                 # N=10000 reports, REPEAT=3
#   N=2000 REPEAT=1 scripts/bench-dmarc.sh # quicker
#
# Ours reads every file (gunzip, our strict reading, mail-auth's parser) and commits it into a
# fresh SQLite store (synchronous=FULL, batches of [dmarc] batch_inputs); parsedmarc
# (scripts/deps-reports.sh installs it into target/parsedmarc-venv) only parses, offline (no
# DNS or GeoIP lookups), and keeps nothing. CPU is user+sys of the process from /usr/bin/time;
# the figure compared is reports per CPU-second. Memory is the peak resident set.
# Output: target/bench-dmarc/report.md.
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
N=${N:-10000}
REPEAT=${REPEAT:-3}
OUT=$REPO/target/bench-dmarc
VENV=${UNSPOOF_PARSEDMARC_VENV:-$REPO/target/parsedmarc-venv}
mkdir -p "$OUT"
bash "$REPO/scripts/deps-reports.sh" >/dev/null
(cd "$REPO" && cargo build --release --locked -p unspoof)
BIN=$REPO/target/release/unspoof
CORPUS=$OUT/corpus-$N
if [ "$(ls "$CORPUS" 2>/dev/null | wc -l)" -ne "$N" ]; then
  rm -rf "$CORPUS"
  python3 "$REPO/scripts/bench/dmarc_corpus.py" "$N" "$CORPUS"
fi
echo "corpus: $N reports, $(du -sh "$CORPUS" | cut -f1) gzip'd"

measure() { # name, command...: appends "name elapsed user sys maxrss_kb" to results
  local name=$1; shift
  /usr/bin/time -f "$name %e %U %S %M" -a -o "$OUT/results.txt" "$@" > "$OUT/$name.out" 2> "$OUT/$name.err" || {
    echo "bench-dmarc: $name failed:"; tail -5 "$OUT/$name.err"; exit 1; }
}
: > "$OUT/results.txt"
for i in $(seq 1 "$REPEAT"); do
  rm -rf "$OUT/store"
  measure unspoof "$BIN" dmarc ingest --data-dir "$OUT/store" --json "$CORPUS"
  grep -c '"status":"stored"' "$OUT/unspoof.out" > "$OUT/unspoof.stored"
  measure parsedmarc "$VENV/bin/python" "$REPO/scripts/bench/dmarc_parsedmarc.py" "$CORPUS"
done
stored=$(cat "$OUT/unspoof.stored")
peer=$(cat "$OUT/parsedmarc.out")
python3 - "$OUT/results.txt" "$N" "$stored" "$peer" <<'PY' | tee "$OUT/report.md"
import sys, statistics
path, n, stored, peer = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
runs = {}
for line in open(path):
    name, e, u, s, m = line.split()
    runs.setdefault(name, []).append((float(e), float(u) + float(s), int(m)))
print(f"# DMARC report ingest, {n} gzip'd reports ({len(runs['unspoof'])} runs each, medians)\n")
print("| | reports/CPU-s | CPU s | wall s | peak RSS MiB |")
print("| --- | --- | --- | --- | --- |")
med = {}
for name in ("unspoof", "parsedmarc"):
    r = runs[name]
    cpu = statistics.median(x[1] for x in r)
    wall = statistics.median(x[0] for x in r)
    rss = statistics.median(x[2] for x in r) / 1024
    med[name] = n / cpu
    print(f"| {name} | {n / cpu:,.0f} | {cpu:.2f} | {wall:.2f} | {rss:.0f} |")
print(f"\nunspoof / parsedmarc, reports per CPU-second: **{med['unspoof'] / med['parsedmarc']:.1f}x** (target 20x)")
print(f"\nunspoof stored {stored} of {n}; {peer}")
PY
