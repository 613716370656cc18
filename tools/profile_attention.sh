#!/usr/bin/env bash
# Nsight Compute on the GPU machine: one ViT-B/16 b256 training step's attention kernels (the public wgmma
# forward and backward) inside bench_train, with the sections that say what bounds them. Builds
# nothing: expects .devcarry/bin.tar.xz from tools/pack_device.sh (BINS=bench_train). Full reports go to $OUT.
#   bash tools/profile_attention.sh [kernel-regex ...]
set -uo pipefail
mkdir -p /tmp/vitbin && tar xJf .devcarry/bin.tar.xz -C /tmp/vitbin
B=/tmp/vitbin/bin; export LD_LIBRARY_PATH=$B/lib
NCU=$(command -v ncu || ls /usr/local/cuda*/bin/ncu 2>/dev/null | head -1)
[ -n "$NCU" ] || { echo "profile_attention: no ncu on this machine"; exit 1; }
for k in ${*:-wg_fwd_kernel wg_bwd_kernel}; do
  # launch-skip 24: past the first two steps' 12 layers (warm-up, plans built)
  timeout 250 "$NCU" --kernel-name "regex:$k" --launch-skip 24 --launch-count 1 --section SpeedOfLight \
    --section Occupancy --section LaunchStats --section WarpStateStats --section MemoryWorkloadAnalysis \
    --section ComputeWorkloadAnalysis "$B/bench_train" configs/vit_base.toml model.drop_path_rate=0 \
    training.label_smoothing=0 > "${OUT:-/tmp}/ncu_$k.txt" 2>&1
  echo "== $k"
  grep -E "Duration|Throughput|Occupancy|Registers Per|Block Limit (Reg|Shared)|Warp Cycles Per Issued|Issued Ipc|Hit Rate" \
    "${OUT:-/tmp}/ncu_$k.txt" | head -20
done
