#!/usr/bin/env bash
# Fresh machine → test results: venv + install (same pins as the demo), then the whole suite.
# Extra arguments go to pytest (e.g. -k settings, -m "not slow").
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
bash scripts/setup_browser.sh   # headless Chromium for the dashboard test (root + apt; else it skips)
exec .venv/bin/python -m pytest "$@"
