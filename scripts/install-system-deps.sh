#!/usr/bin/env bash
# Installs the Debian packages the tests use when they are missing (only possible as root).
# Without root, missing parts make their tests skip, or fail under GATED_REQUIRE_SYSTEM=1.
set -euo pipefail

declare -A binary_of=(
  [mosquitto]=/usr/sbin/mosquitto
  [mosquitto-clients]=/usr/bin/mosquitto_sub
  [socat]=/usr/bin/socat
  [mbpoll]=/usr/bin/mbpoll
  [postgresql]=/usr/bin/pg_ctlcluster
  # The console's browser tests (Playwright drives this Chromium; it downloads no browser).
  [chromium]=/usr/bin/chromium
)
missing=()
for package in "${!binary_of[@]}"; do
  [ -x "${binary_of[$package]}" ] || missing+=("$package")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
  echo "install-system-deps: not root; missing Debian packages: ${missing[*]}" >&2
  exit 0
fi
echo "install-system-deps: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# policy-rc.d keeps Debian from starting a system mosquitto on port 1883 (or a PostgreSQL cluster)
# behind our back: the tests start their own.
if [ ! -e /usr/sbin/policy-rc.d ]; then
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
  chmod +x /usr/sbin/policy-rc.d
  trap 'rm -f /usr/sbin/policy-rc.d' EXIT
fi
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
