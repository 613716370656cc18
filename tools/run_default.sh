#!/usr/bin/env bash
# `make run`: trains the default config end to end on Fashion-MNIST (the Debian package
# dataset-fashion-mnist, converted once to packed shards): on every GPU of the machine when there are any
# (one MPI rank per GPU), else a small config on the CPU backend. Then evaluates, checkpoints, plots.
#   tools/run_default.sh BUILD_DIR [CONFIG]
set -euo pipefail
BUILD=${1:-build}
CONFIG=${2:-}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 NCCL_NVLS_ENABLE=${NCCL_NVLS_ENABLE:-0}

"$BUILD/fmnist_convert" --if-missing

gpus=0
if command -v nvidia-smi >/dev/null 2>&1; then gpus=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU' || true); fi
if [ -z "$CONFIG" ]; then
  if [ "$gpus" -gt 0 ]; then CONFIG=configs/fmnist_gpu.toml; else CONFIG=configs/fmnist_cpu.toml; fi
fi
out=$("$BUILD/vit_train" "$CONFIG" --print-config | awk -F'"' '/^output_dir/ {print $2; exit}')
if [ "$gpus" -gt 0 ]; then
  echo "make run: $gpus GPU(s) found: mpirun -np $gpus $BUILD/vit_train $CONFIG"
  mpirun -np "$gpus" --bind-to none "$BUILD/vit_train" "$CONFIG"
else
  echo "make run: no GPU found: $BUILD/vit_train $CONFIG on the CPU backend"
  "$BUILD/vit_train" "$CONFIG"
fi
if [ -x "$BUILD/plot_metrics" ] && [ -f "$out/metrics.jsonl" ]; then
  "$BUILD/plot_metrics" "$out/metrics.jsonl" "$out/curves.png" && echo "make run: curves in $out/curves.png"
fi
echo "make run: metrics in $out/metrics.jsonl"
