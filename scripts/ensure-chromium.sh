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
bash "$(dirname "$0")/apt-install.sh" ensure-chromium chromium
echo "ensure-chromium: installed $("$CHROMIUM" --version 2>/dev/null || echo "$CHROMIUM")"
