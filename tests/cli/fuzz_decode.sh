#!/bin/bash
# Fuzzes the image decode path under AddressSanitizer + UndefinedBehaviorSanitizer: compiles
# tools/fuzz_decode.cpp with the data sources it needs directly with g++ (a separate small executable, so
# the main build stays unsanitized), runs a few thousand random and mutated inputs, and fails on any
# sanitizer report.   usage: fuzz_decode.sh BUILD_DIR SOURCE_DIR
set -euo pipefail
BUILD=${1:?build dir}
SRC=${2:?source dir}
STB=$(sed -n 's/^STB_INCLUDE_DIR:PATH=//p' "$BUILD/CMakeCache.txt" 2>/dev/null || true)
STB=${STB:-/usr/include/stb}
OUT="$BUILD/fuzz_decode_asan"
LOG="$BUILD/fuzz_decode_asan.log"
g++ -std=c++20 -O1 -g -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer \
  -I"$SRC" -I"$STB" -I"${CUDA_INC:-/usr/local/cuda/include}" \
  "$SRC/tools/fuzz_decode.cpp" "$SRC/data/decode.cpp" "$SRC/data/image.cpp" "$SRC/data/resample.cpp" \
  "$SRC/data/transforms.cpp" -lz -o "$OUT"
status=0
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  "$OUT" "${FUZZ_ITERS:-3000}" "${FUZZ_SEED:-1}" >"$LOG" 2>&1 || status=$?
cat "$LOG"
if [ $status -ne 0 ] || grep -qE "runtime error|AddressSanitizer|LeakSanitizer" "$LOG"; then
  echo "FAIL: fuzz_decode found a problem (exit $status); see $LOG"
  exit 1
fi
echo "PASS: fuzz_decode, no sanitizer report"
