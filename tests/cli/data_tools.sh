#!/bin/bash
# The dataset tools end to end: fmnist_convert on the installed Fashion-MNIST (skipped if the package is
# missing), pack_dataset on the shared super-tiny-imagenet-5 (skipped if absent), bad arguments refused.
#   usage: data_tools.sh BUILD_DIR SOURCE_DIR
set -euo pipefail
BUILD=${1:?build dir}
SRC=${2:?source dir}
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
fail() { echo "FAIL: $*"; exit 1; }

if [ -e /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then
  (cd "$T" && "$BUILD/fmnist_convert") || fail "fmnist_convert"
  # 64-byte header + 60000 × 784 pixels + 60000 × 24-byte index + the 10 class names.
  size=$(stat -c %s "$T/runs/data/fmnist_train.vitpack")
  [ "$size" -gt $((64 + 60000 * 784 + 60000 * 24)) ] || fail "fmnist_train.vitpack is $size bytes"
  [ -s "$T/runs/data/fmnist_test.vitpack" ] || fail "no fmnist_test.vitpack"
  (cd "$T" && "$BUILD/fmnist_convert" --if-missing) | grep -q "exist" || fail "--if-missing did not skip"
  "$BUILD/fmnist_convert" --in "$T/nowhere" --train "$T/x.vitpack" --test "$T/y.vitpack" 2>"$T/err" && fail "missing input accepted"
  grep -q "dataset-fashion-mnist" "$T/err" || fail "unhelpful error: $(cat "$T/err")"
else
  echo "dataset-fashion-mnist not installed: fmnist_convert check skipped"
fi

TINY=${VIT_SHARED_DIR:-$SRC/../shared/data}/super-tiny-imagenet-5
if [ -d "$TINY" ]; then
  "$BUILD/pack_dataset" --format tiny_imagenet --train "$TINY" --out "$T/tiny.vitpack" --threads 2 | tee "$T/log"
  grep -q "250 images" "$T/log" || fail "pack_dataset train"
  "$BUILD/pack_dataset" --format tiny_imagenet --train "$TINY" --split val --classes n04507155,n03404251 \
    --out "$T/val" --shard-images 40 --short-side 32 --channels 1 | tee "$T/log"
  grep -q "100 images .* in 3 file(s)" "$T/log" || fail "pack_dataset val shards"
  [ "$(ls "$T/val"/*.vitpack | wc -l)" = 3 ] || fail "expected 3 shards"
else
  echo "super-tiny-imagenet-5 not found: pack_dataset check skipped"
fi
"$BUILD/pack_dataset" --format folder --train "$T/none" --out "$T/z.vitpack" 2>"$T/err" && fail "missing folder accepted"
grep -q "not a directory" "$T/err" || fail "unhelpful error: $(cat "$T/err")"
"$BUILD/pack_dataset" --bogus 2>/dev/null && fail "unknown argument accepted"
echo "PASS: data tools"
