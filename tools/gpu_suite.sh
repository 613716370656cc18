#!/usr/bin/env bash
# The one script the GPU machine runs: every GPU test (each test case in its own process, so one crash
# cannot hide the others), every kernel benchmark, the training benchmark, and the PyTorch anchors in the
# same run. Builds nothing: expects binaries in $BIN (default .devcarry/bin, made by tools/pack_device.sh).
#   bash tools/gpu_suite.sh [tests|bench|train|anchors|all]...
set -uo pipefail
BIN=${BIN:-.devcarry/bin}
ANCH=${ANCH:-.devcarry/anchors}
LOG=${LOG:-/tmp/gpu_suite}
mkdir -p "$LOG"
export LD_LIBRARY_PATH="$BIN/lib:${LD_LIBRARY_PATH:-}"
export NCCL_NVLS_ENABLE=0 OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
SUMMARY="$LOG/summary.txt"
: > "$SUMMARY"
what=${*:-all}
has() { [[ " $what " == *" $1 "* || " $what " == *" all "* ]]; }

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee -a "$SUMMARY"

if has tests; then
  pass=0; fail=0
  while IFS= read -r tc; do
    [ -z "$tc" ] && continue
    # doctest splits filters at commas: escape them so each case is matched whole.
    filt=${tc//,/\\,}
    if timeout 120 "$BIN/gpu_tests" -tc="$filt" > "$LOG/tc.log" 2>&1 && grep -q "test cases: *1 | *1 passed" "$LOG/tc.log"; then
      pass=$((pass + 1)); grep -h "^vit \|rel err" "$LOG/tc.log" | head -5
    else
      fail=$((fail + 1)); echo "FAILED: $tc"; tail -25 "$LOG/tc.log"; echo "FAILED: $tc" >> "$SUMMARY"
    fi
    cat "$LOG/tc.log" >> "$LOG/gpu_tests.log"
  done < <("$BIN/gpu_tests" -ltc 2>/dev/null | sed -n '/^=\+$/,/^=\+$/p' | grep -v '^=' | grep -v '^\[doctest\]')
  echo "gpu_tests: $pass passed, $fail failed" | tee -a "$SUMMARY"
fi

if has bench; then
  for b in "$BIN"/bench_*; do
    [ "$(basename "$b")" = bench_train ] && continue
    echo "== $(basename "$b")"
    timeout 120 "$b" 2>&1 | tee "$LOG/$(basename "$b").log" | grep -E "BENCH|RECOMMEND|FAIL|error|target" | head -40
    grep -E "BENCH|RECOMMEND|target" "$LOG/$(basename "$b").log" >> "$SUMMARY"
  done
fi

if has train; then
  for spec in "vit_base.toml" "vit_base.toml distributed.strategy=no_shard"; do
    timeout 300 "$BIN/bench_train" configs/$spec model.drop_path_rate=0 training.label_smoothing=0 2>&1 | tee -a "$LOG/bench_train.log" | tail -3
  done
  grep ENGINE "$LOG/bench_train.log" >> "$SUMMARY"
fi

if has anchors; then
  (cd "$ANCH" && PYTHONUNBUFFERED=1 timeout 300 python3 anchor_ops.py 2>&1 | grep OPS) | tee -a "$SUMMARY"
  (cd "$ANCH" && PYTHONUNBUFFERED=1 timeout 400 python3 anchor_timm.py 790e12 vit_base_patch16_224:256:eager \
     vit_base_patch16_224:256:compile 2>&1 | grep ANCHOR) | tee -a "$SUMMARY"
fi

echo "================ summary ================"
cat "$SUMMARY"
# Where the device tool collects files (at most 8 come back): the summary and the full logs.
if [ -n "${OUT:-}" ]; then
  cp "$SUMMARY" "$OUT/" 2>/dev/null
  [ -f "$LOG/gpu_tests.log" ] && cp "$LOG/gpu_tests.log" "$OUT/"
  cat "$LOG"/bench_*.log > "$OUT/bench.log" 2>/dev/null
fi
