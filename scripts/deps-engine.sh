#!/usr/bin/env bash
# Debian packages the signed-mail code and its tests need: libssl-dev and pkg-config to build
# the `openssl` crate (S/MIME verification through OpenSSL's CMS, crates/signature), and the
# real tools the tests sign messages with: GnuPG (gpg) and OpenSSL (`openssl cms -sign`),
# see crates/engine/tests/signed/make.sh.
# Idempotent: does nothing when everything is present. Needs root (or sudo) otherwise.
set -euo pipefail

missing=()
command -v gpg >/dev/null 2>&1 || missing+=(gnupg)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
command -v pkg-config >/dev/null 2>&1 || missing+=(pkg-config)
pkg-config --exists openssl 2>/dev/null || missing+=(libssl-dev)

if [ ${#missing[@]} -eq 0 ]; then
  echo "deps-engine: all present"
  exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
echo "deps-engine: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get -o DPkg::Lock::Timeout=600 update -qq
$SUDO apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${missing[@]}"
