#!/bin/bash
# Fuzzes the image decode path under AddressSanitizer + UndefinedBehaviorSanitizer: compiles
# tools/fuzz_decode.cpp with the data sources it needs directly with g++ (a separate small executable, so
# the main build stays unsanitized), runs thousands of random and mutated inputs, and fails on any
# sanitizer report.   usage: fuzz_decode.sh BUILD_DIR SOURCE_DIR   (env: FUZZ_ITERS, FUZZ_SEED)
#
# One exception, inside stb_image.h only: the arithmetic checks shift-exponent, shift-base and
# signed-integer-overflow. Debian's stb_image 2.27 shifts by out-of-range amounts and overflows ints
# while decoding corrupt JPEG entropy data (fixed upstream in 2.28); the results are garbage pixels of a
# corrupt file, not memory accesses, and we cannot patch a system header. Every memory check (ASan) and
# every other UBSan check (bounds, alignment, null, ...) stays fatal, in stb_image too; that is how the
# stb 2.27 Huffman-table overflow was found, which data/decode.cpp now screens out before stb runs.
set -euo pipefail
BUILD=${1:?build dir}
SRC=${2:?source dir}
STB=$(sed -n 's/^STB_INCLUDE_DIR:PATH=//p' "$BUILD/CMakeCache.txt" 2>/dev/null || true)
STB=${STB:-/usr/include/stb}
OUT="$BUILD/fuzz_decode_asan"
LOG="$BUILD/fuzz_decode_asan.log"
SUPP="$BUILD/fuzz_decode_ubsan.supp"
printf 'shift-exponent:stb_image.h\nshift-base:stb_image.h\nsigned-integer-overflow:stb_image.h\n' >"$SUPP"
g++ -std=c++20 -O1 -g -fsanitize=address,undefined -fno-sanitize-recover=all \
  -fsanitize-recover=shift,signed-integer-overflow -fno-omit-frame-pointer \
  -I"$SRC" -I"$STB" \
  "$SRC/tools/fuzz_decode.cpp" "$SRC/data/decode.cpp" "$SRC/data/image.cpp" "$SRC/data/resample.cpp" \
  "$SRC/data/transforms.cpp" -lz -o "$OUT"
status=0
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1:suppressions="$SUPP" \
  "$OUT" "${FUZZ_ITERS:-20000}" "${FUZZ_SEED:-1}" >"$LOG" 2>&1 || status=$?
cat "$LOG"
if [ $status -ne 0 ] || grep -qE "runtime error|AddressSanitizer|LeakSanitizer" "$LOG"; then
  echo "FAIL: fuzz_decode found a problem (exit $status); see $LOG"
  exit 1
fi
echo "PASS: fuzz_decode, no sanitizer report"
