#!/usr/bin/env bash
# The scale-out tests start their own redis-server (test/redis.ts) and an nginx in front of
# several gateways (test/cluster.ts), from Debian's packages. This installs them with
# apt-get when missing; run by `npm test` (pretest) and .ci/run. Installing starts nothing
# the tests use: each test starts its own on a free port and stops it.
set -euo pipefail

missing=()
command -v redis-server >/dev/null 2>&1 || [ -x /usr/bin/redis-server ] || missing+=(redis-server)
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing+=(nginx)

if [ ${#missing[@]} -eq 0 ]; then
  echo "ensure-redis: redis-server and nginx are installed"
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "ensure-redis: ${missing[*]} missing and installing needs root: run 'sudo apt-get install -y ${missing[*]}' (Debian) once" >&2
  exit 1
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "ensure-redis: ${missing[*]} missing and this system has no apt-get: install them so they are on PATH" >&2
  exit 1
fi
echo "ensure-redis: installing ${missing[*]} (apt-get update && apt-get install -y ${missing[*]})"
export DEBIAN_FRONTEND=noninteractive
apt-get update
# policy-rc.d keeps the packages' own services from starting: the tests start their own.
printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
trap 'rm -f /usr/sbin/policy-rc.d' EXIT
apt-get install -y "${missing[@]}"
echo "ensure-redis: installed ${missing[*]}"
