#!/usr/bin/env bash
# System libraries the Python wheels need but do not ship. Installs only what is missing.
#   libusb-1.0-0   open3d's wheel links it (ImportError without it)
#   libportaudio2  sounddevice's live microphone backend
#   prometheus     the Prometheus server and promtool the monitoring tests start and check
#   chromium, chromium-driver  headless browser for the demo page tests
#   iproute2       `ip`, with which tests/cluster builds hosts from network namespaces
set -euo pipefail
PACKAGES=(libusb-1.0-0 libportaudio2 prometheus chromium chromium-driver iproute2 "$@")
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
echo "installing system packages: ${missing[*]}"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "need root (or sudo) to apt-get install: ${missing[*]}" >&2; exit 1; }
  SUDO=sudo
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
