#!/usr/bin/env bash
# Builds pgshift-proxy's protocol decoder fuzz target with clang
# (-fsanitize=fuzzer,address) into build-fuzz/ and runs it for SECONDS
# (default 30). Exit status is non-zero when the fuzzer finds a crash.
set -euo pipefail
SECONDS_TO_RUN="${1:-30}"
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
OUT="$ROOT/build-fuzz"
CXX="${FUZZ_CXX:-$(command -v clang++ || command -v clang++-14)}"
mkdir -p "$OUT/corpus"
"$CXX" -std=c++20 -O1 -g -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
  -I "$ROOT/src" \
  "$ROOT/src/proxy/fuzz/decoder_fuzz.cc" "$ROOT/src/proxy/protocol.cc" \
  "$ROOT/src/proxy/scram.cc" "$ROOT/src/common/status.cc" \
  -lcrypto $(pkg-config --libs icu-uc) -o "$OUT/proxy_decoder_fuzz"
# Seeds: a startup packet followed by a few typical messages.
printf '\x00\x00\x00\x17\x00\x03\x00\x00user\x00app\x00\x00\x00Q\x00\x00\x00\x0dselect 1\x00' \
  > "$OUT/corpus/seed-startup-query"
printf 'P\x00\x00\x00\x14s1\x00select 1\x00\x00\x00B\x00\x00\x00\x0e\x00s1\x00\x00\x00\x00\x00\x00S\x00\x00\x00\x04' \
  > "$OUT/corpus/seed-extended"
printf 'E\x00\x00\x00\x15SFATAL\x00C28000\x00\x00' > "$OUT/corpus/seed-error"
echo "fuzz: running proxy_decoder_fuzz for ${SECONDS_TO_RUN}s"
set +e
"$OUT/proxy_decoder_fuzz" -max_total_time="$SECONDS_TO_RUN" -max_len=4096 -print_final_stats=1 \
  -timeout=10 -artifact_prefix="$OUT/" "$OUT/corpus" > "$OUT/last-run.log" 2>&1
status=$?
set -e
tail -n 6 "$OUT/last-run.log"
if [ "$status" -ne 0 ]; then
  echo "fuzz: FAILED (status $status); reproducer in $OUT/crash-*" >&2
  exit "$status"
fi
echo "fuzz: OK, no crash in ${SECONDS_TO_RUN}s"
