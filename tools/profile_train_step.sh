#!/usr/bin/env bash
# Where one ViT training step's time goes, kernel by kernel: Nsight Compute times every kernel of one timed
# bench_train step (bench_train brackets it with cudaProfilerStart/Stop) and tools/profile_train_step.py sums
# them by kernel. Kernels run one at a time under ncu, so the sum is the step's serial GPU time; compare it
# with bench_train's step ms to see the gaps. Builds nothing: expects .devcarry/bin.tar.xz (BINS=bench_train).
#   bash tools/profile_train_step.sh [CONFIG.toml [key=value ...]]
set -uo pipefail
[ -d /tmp/vitbin/bin ] || { mkdir -p /tmp/vitbin && tar xJf .devcarry/bin.tar.xz -C /tmp/vitbin; }
B=/tmp/vitbin/bin; export LD_LIBRARY_PATH=$B/lib
NCU=$(command -v ncu || ls /usr/local/cuda*/bin/ncu 2>/dev/null | head -1)
[ -n "$NCU" ] || { echo "profile_train_step: no ncu on this machine"; exit 1; }
cfg=${1:-configs/vit_base.toml}; shift || true
args=${*:-model.drop_path_rate=0 training.label_smoothing=0}
csv=${OUT:-/tmp}/train_step_kernels.csv
timeout 400 "$NCU" --profile-from-start off --clock-control none --cache-control none \
  --metrics gpu__time_duration.sum --csv --print-units base --print-kernel-base function \
  "$B/bench_train" "$cfg" $args > "$csv" 2> "${csv%.csv}.err" || { tail -5 "${csv%.csv}.err"; exit 1; }
python3 tools/profile_train_step.py "$csv"
