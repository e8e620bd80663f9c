#!/usr/bin/env bash
# Debian packages the command line's tests need (crates/cli/tests): git for the README test's
# clean clone, iproute2 for its network namespace, man-db to read the man page (`man -l`),
# systemd for `systemd-analyze verify` of the installed unit. (The README test's DNS server,
# Knot, comes from scripts/deps-audit.sh, which keeps its system service from starting.)
# Idempotent: does nothing when everything is present. Needs root (or sudo) otherwise.
set -euo pipefail

missing=()
command -v git >/dev/null 2>&1 || missing+=(git)
command -v ip >/dev/null 2>&1 || missing+=(iproute2)
command -v man >/dev/null 2>&1 || missing+=(man-db)
command -v systemd-analyze >/dev/null 2>&1 || missing+=(systemd)

if [ ${#missing[@]} -eq 0 ]; then
  echo "deps-cli: all present"
  exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
echo "deps-cli: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
