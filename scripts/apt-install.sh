#!/usr/bin/env bash
# Installs Debian packages a test needs, for scripts/ensure-chromium.sh and
# scripts/ensure-redis.sh: `apt-install.sh <caller> <package>...`. Fails with a line saying what
# to do when this is not root or has no apt-get. The packages' own services are not started
# (policy-rc.d): a test starts its own on a free port and stops it.
set -euo pipefail

who=$1
shift
if [ "$(id -u)" -ne 0 ]; then
  echo "$who: $* missing, and installing needs root: run 'sudo apt-get install -y $*' (Debian) once" >&2
  exit 1
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "$who: $* missing, and this system has no apt-get: install them so they are on PATH" >&2
  exit 1
fi
echo "$who: installing $* (apt-get update && apt-get install -y $*)"
export DEBIAN_FRONTEND=noninteractive
apt-get update
if [ ! -e /usr/sbin/policy-rc.d ]; then
  printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
  trap 'rm -f /usr/sbin/policy-rc.d' EXIT
fi
apt-get install -y "$@"
