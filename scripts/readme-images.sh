#!/usr/bin/env bash
# The README's pictures, made from real runs: the browser tests' screenshots of the
# web view and the dashboard test's drawing of every panel, written to docs/images/.
set -euo pipefail
cd "$(dirname "$0")/.."
make -s jars
scripts/system-deps.sh --test
DUROOT_SCREENSHOTS=docs/images .venv/bin/pytest -q tests/web/test_browser.py tests/deploy/test_dashboard.py \
    tests/deploy/test_usage_dashboard.py
ls -l docs/images
