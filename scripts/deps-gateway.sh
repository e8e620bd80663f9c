#!/usr/bin/env bash
# Debian packages the gateway's tests need (crates/gateway/tests): swaks as a real SMTP client,
# with Net::SSLeay for its STARTTLS. Python's smtplib comes with python3.
# Idempotent: does nothing when everything is present. Needs root (or sudo) otherwise.
set -euo pipefail

missing=()
command -v swaks >/dev/null 2>&1 || missing+=(swaks)
perl -MNet::SSLeay -e1 >/dev/null 2>&1 || missing+=(libnet-ssleay-perl)
perl -MIO::Socket::SSL -e1 >/dev/null 2>&1 || missing+=(libio-socket-ssl-perl)
command -v python3 >/dev/null 2>&1 || missing+=(python3)

if [ ${#missing[@]} -eq 0 ]; then
  echo "deps-gateway: all present"
  exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
echo "deps-gateway: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
