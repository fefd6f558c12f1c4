#!/usr/bin/env bash
# Headless Chromium for tests/test_dashboards.py (Debian package "chromium"). Idempotent and
# non-interactive; .ci/run calls it (as root). Without root or without network it says so and
# exits 0: the dashboard test then skips with that reason instead of failing.
set -euo pipefail
if [ -x /usr/bin/chromium ]; then
  exit 0
fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "setup_browser.sh: chromium is missing; install it as root: apt-get install -y chromium" >&2
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
if ! { apt-get update -qq && apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core; } >/tmp/setup_browser.log 2>&1; then
  echo "setup_browser.sh: could not install chromium (see /tmp/setup_browser.log); dashboard tests will skip" >&2
  exit 0
fi
echo "chromium installed: $(/usr/bin/chromium --version 2>/dev/null || echo '?')"
