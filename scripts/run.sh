#!/usr/bin/env bash
# The main job on embedded defaults. Until the gateway lands, this analyses the sample messages
# against the sample DNS zone: a forged message (rejected) and a genuine signed one (accepted).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked -p unspoof
status=0
./target/release/unspoof analyze --dns-zone examples/sample.zone \
  examples/sample-spoof.eml examples/sample-genuine.eml || status=$?
# Exit status 3 means "the worst verdict was reject": the expected result for the forged sample.
[ "$status" -eq 3 ] || exit "$status"
