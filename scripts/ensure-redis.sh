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
bash "$(dirname "$0")/apt-install.sh" ensure-redis "${missing[@]}"
echo "ensure-redis: installed ${missing[*]}"
