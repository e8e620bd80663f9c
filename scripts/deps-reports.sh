#!/usr/bin/env bash
# What the DMARC report tests need (crates/reports/tests, crates/cli/tests/dmarc*.rs):
# - Dovecot's IMAP server (dovecot-imapd), which the IMAP test starts itself with a private
#   config on a loopback port and a temporary mail dir. Installed without starting the system
#   instance (a policy-rc.d that says "not now" for the length of the install).
# - parsedmarc (PyPI) in a virtualenv at $UNSPOOF_PARSEDMARC_VENV (default
#   target/parsedmarc-venv): the peer parser of the round-trip test and of the benchmark
#   (scripts/bench-dmarc.sh).
# Idempotent: does nothing when both are present. Needs root (or sudo) for the Debian part.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

if [ ! -x /usr/sbin/dovecot ] || [ ! -e /usr/lib/dovecot/imap ]; then
  echo "deps-reports: installing dovecot-imapd"
  export DEBIAN_FRONTEND=noninteractive
  policy=/usr/sbin/policy-rc.d
  made_policy=""
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$policy" >/dev/null
    $SUDO chmod 755 "$policy"
    made_policy=1
  fi
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends dovecot-core dovecot-imapd
  if [ -n "$made_policy" ]; then $SUDO rm -f "$policy"; fi
else
  echo "deps-reports: dovecot present"
fi

venv="${UNSPOOF_PARSEDMARC_VENV:-target/parsedmarc-venv}"
if [ -x "$venv/bin/parsedmarc" ] && "$venv/bin/python" -c 'import parsedmarc' >/dev/null 2>&1; then
  echo "deps-reports: parsedmarc present in $venv"
else
  echo "deps-reports: installing parsedmarc into $venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check "parsedmarc==11.1.0"
fi
"$venv/bin/python" -c 'import parsedmarc; print("deps-reports: parsedmarc", parsedmarc.__version__)'
