#!/usr/bin/env bash
# install-deps.sh installs the Debian packages that Rhizome's tests and lab
# use, when they are missing: real BGP peers (BIRD 2, FRR, gobgpd), iproute2,
# ping, nftables, and qemu + busybox for the IPIP VM test (test/ipipvm). It
# runs as root (apt) and never starts the daemons as
# system services: the tests start their own copies inside namespaces.
set -euo pipefail

PACKAGES=(bird2 frr gobgpd iproute2 iputils-ping nftables procps kmod protobuf-compiler iptables qemu-system-x86 busybox-static)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "deps: all packages present"
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "deps: missing ${missing[*]}; run as root to install them" >&2
  exit 1
fi
echo "deps: installing ${missing[*]}"
# Keep package scripts from starting bird/frr as services in the host
# namespace (they would take TCP 179): policy-rc.d answering 101 forbids it.
guard=""
if [ ! -e /usr/sbin/policy-rc.d ]; then
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
  chmod +x /usr/sbin/policy-rc.d
  guard=/usr/sbin/policy-rc.d
fi
trap '[ -n "$guard" ] && rm -f "$guard"' EXIT
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends "${missing[@]}"
