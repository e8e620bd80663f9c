#!/usr/bin/env bash
# What the audit's tests need (crates/audit/tests, crates/cli/tests/audit.rs): Knot DNS as the
# real authoritative server (the tests write their own knot.conf and zones and start knotd on a
# loopback address), its keymgr for the signed zones, Unbound as the validating resolver in
# front of it (the DNSSEC/AD-bit path), and checkdmarc from PyPI, run beside `unspoof audit` on
# the same zones. Idempotent: does nothing when everything is present. Needs root (or sudo).
set -euo pipefail

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

missing=()
[ -x /usr/sbin/knotd ] || missing+=(knot)
command -v kdig >/dev/null 2>&1 || missing+=(knot-dnsutils)
[ -x /usr/sbin/unbound ] || missing+=(unbound)
command -v python3 >/dev/null 2>&1 || missing+=(python3 python3-pip)

if [ ${#missing[@]} -gt 0 ]; then
  echo "deps-audit: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  # The packages' own services are not wanted: the tests start their private instances.
  echo exit 101 | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
  $SUDO chmod +x /usr/sbin/policy-rc.d
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
  $SUDO rm -f /usr/sbin/policy-rc.d
  # Installed services that started anyway would hold port 53 on loopback.
  for svc in knot unbound; do
    if [ -x "/etc/init.d/$svc" ]; then $SUDO "/etc/init.d/$svc" stop >/dev/null 2>&1 || true; fi
  done
else
  echo "deps-audit: knot, kdig and unbound present"
fi

# checkdmarc, pinned so the side-by-side comparison stays reproducible.
CHECKDMARC_VERSION="6.0.4"
if ! python3 -m checkdmarc --help >/dev/null 2>&1 && ! command -v checkdmarc >/dev/null 2>&1; then
  echo "deps-audit: installing checkdmarc $CHECKDMARC_VERSION"
  python3 -m pip install --quiet "checkdmarc==$CHECKDMARC_VERSION" \
    || python3 -m pip install --quiet --break-system-packages "checkdmarc==$CHECKDMARC_VERSION"
else
  echo "deps-audit: checkdmarc present"
fi
