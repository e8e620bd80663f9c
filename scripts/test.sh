#!/usr/bin/env bash
# The whole test suite, as a newcomer or CI runs it on a fresh machine:
# installs what the tests need (Debian packages, Python modules), then runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."

for deps in scripts/deps-*.sh; do
  [ -e "$deps" ] || continue
  echo "== $deps"
  bash "$deps"
done

echo "== cargo test --workspace"
cargo test --workspace --locked --no-fail-fast -- --color never
