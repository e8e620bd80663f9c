#!/usr/bin/env bash
# Debian packages the milter's tests need (crates/milter/tests/postfix.rs): Postfix, which the
# test starts itself with a private config dir on loopback ports, and swaks to send through it.
# Postfix is preseeded to "No configuration", so installing it sets up no system instance and
# nothing listens on port 25. Idempotent: does nothing when both are present. Needs root (or
# sudo) otherwise.
set -euo pipefail

missing=()
[ -x /usr/sbin/postfix ] || missing+=(postfix)
command -v swaks >/dev/null 2>&1 || missing+=(swaks)

if [ ${#missing[@]} -eq 0 ]; then
  echo "deps-milter: all present"
  exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
echo "deps-milter: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
if [[ " ${missing[*]} " == *" postfix "* ]]; then
  # debconf-set-selections comes with debconf (always installed on Debian).
  echo "postfix postfix/main_mailer_type select No configuration" | $SUDO debconf-set-selections
fi
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
