#!/usr/bin/env bash
# `make check`: every test (unit + integration on real servers) via ctest,
# then a bounded libFuzzer run on the proxy's protocol decoder.
set -euo pipefail
BUILD=${1:-build}
cd "$(dirname "$0")/.."
start=$(date +%s)
# Integration tests start PostgreSQL clusters; two at a time fits 2 cores.
(cd "$BUILD" && ctest --output-on-failure --timeout 900 -j 2)
if [ -x scripts/fuzz.sh ]; then
  bash scripts/fuzz.sh "${PGSHIFT_FUZZ_SECONDS:-30}"
fi
echo "make check: all green in $(( $(date +%s) - start )) s"
