#!/usr/bin/env bash
# The main job on embedded defaults: the SMTP gateway (`unspoof serve`) on loopback ports
# (SMTP 2525, submission 5587, metrics 9425), accepting mail for `localhost` and delivering it
# into ./unspoof-data/maildir (relative to where you run this), with the default policy.
# Extra arguments go to `unspoof serve` (e.g. --config unspoof.toml). Stop it with Ctrl-C.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
exec cargo run --release --locked --quiet --manifest-path "$root/Cargo.toml" -p unspoof -- serve "$@"
