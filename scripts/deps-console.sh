#!/usr/bin/env bash
# Headless Chromium and its WebDriver for the console's browser tests
# (crates/console/tests/browser.rs): Debian's chromium and chromium-driver.
# Idempotent: does nothing when both are installed. Needs root (or sudo) otherwise.
set -euo pipefail

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then
  echo "deps-console: $(chromium --version 2>/dev/null | head -n1), chromedriver present"
  exit 0
fi

echo "deps-console: installing chromium chromium-driver"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get -o DPkg::Lock::Timeout=600 update -qq
$SUDO apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends chromium chromium-driver fonts-dejavu-core
command -v chromedriver >/dev/null 2>&1 || { echo "deps-console: chromedriver missing" >&2; exit 1; }
echo "deps-console: $(chromium --version 2>/dev/null | head -n1) installed"
