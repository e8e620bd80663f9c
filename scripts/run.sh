#!/usr/bin/env bash
# The main job on embedded defaults: the SMTP gateway (`unspoof serve`) on loopback ports
# (SMTP 2525, submission 5587, metrics 9425), accepting mail for `example.localhost` (the
# demo site's own domain, protected against spoofing) and delivering it into
# ./unspoof-data/maildir (relative to where you run this), with the default policy.
# Extra arguments go to `unspoof serve` (e.g. --config unspoof.toml). Stop it with Ctrl-C.
#
# The first run builds the release binary (several minutes); cargo shows its progress.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"

# Run from inside cargo (`cargo test` running this script), the environment carries the outer
# package's CARGO_MANIFEST_DIR, CARGO_PKG_* and the like. Build scripts (ring's among them)
# ask to be rerun when those change, so the release binary would be rebuilt every time it is
# built from a shell and from a test in turn. They mean nothing to this build: drop them.
for var in $(compgen -e); do
  case "$var" in
    CARGO_MANIFEST_DIR | CARGO_MANIFEST_PATH | CARGO_MANIFEST_LINKS | CARGO_PKG_* | \
      CARGO_CRATE_NAME | CARGO_BIN_NAME | CARGO_BIN_EXE_* | CARGO_PRIMARY_PACKAGE | \
      CARGO_TARGET_TMPDIR | CARGO_RUSTC_CURRENT_DIR | CARGO_CFG_* | CARGO | OUT_DIR)
      unset "$var" ;;
  esac
done

# cargo's progress goes to the terminal; its messages on stdout name the binary it built
# (wherever the target directory is).
bin="$(cargo build --release --locked --manifest-path "$root/Cargo.toml" -p unspoof --bin unspoof \
  --message-format=json-render-diagnostics |
  sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | tail -n 1)"
[ -x "$bin" ] || { echo "run.sh: the build did not produce the unspoof binary" >&2; exit 1; }
exec "$bin" serve "$@"
