#!/usr/bin/env bash
# The browser tests (test/plugins/status-page.test.ts) drive Debian's Chromium at
# /usr/bin/chromium through playwright-core, which downloads no browser of its own. This
# installs it with apt-get when it is missing; run by `npm test` (pretest) and .ci/run.
set -euo pipefail

CHROMIUM=/usr/bin/chromium

if [ -x "$CHROMIUM" ]; then
  echo "ensure-chromium: $CHROMIUM is installed ($("$CHROMIUM" --version 2>/dev/null || echo 'version unknown'))"
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "ensure-chromium: $CHROMIUM is missing and installing it needs root: run 'sudo apt-get install -y chromium' (Debian) once" >&2
  exit 1
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "ensure-chromium: $CHROMIUM is missing and this system has no apt-get: install Chromium so that $CHROMIUM runs it" >&2
  exit 1
fi
echo "ensure-chromium: $CHROMIUM is missing; installing Debian's chromium package (apt-get update && apt-get install -y chromium)"
export DEBIAN_FRONTEND=noninteractive
apt-get update
apt-get install -y chromium
echo "ensure-chromium: installed $("$CHROMIUM" --version 2>/dev/null || echo "$CHROMIUM")"
