# Sourced by the multi-GPU scripts of tests/gpu (GPU machine):
#   source "$(dirname "$0")/multi_gpu_common.sh" SCRIPT_NAME BIN_DIR
# sets BIN, N (the visible GPUs; the script is skipped below 2), T (a scratch folder, removed on exit) and GB, and
# defines vit_run.
BIN=$2
N=$(nvidia-smi -L | wc -l)
[ "$N" -ge 2 ] || { echo "$1: needs >= 2 GPUs, found $N: skipped"; exit 0; }
T=$(mktemp -d); trap 'rm -rf "$T"' EXIT
GB=64
# Runs whose losses can be compared across rank counts: dropouts and drop path off (their masks are keyed per
# rank-local tensor), no label smoothing, a loss every step.
COMPARABLE="training.log_interval=1 training.val_interval=0 scheduler.warmup_steps=5 model.drop_path_rate=0
  model.drop_rate=0 model.proj_drop_rate=0 model.attn_drop_rate=0 model.pos_drop_rate=0 training.label_smoothing=0"
# vit_run NAME NP [overrides]: ViT-B/16 on synthetic images, global batch GB over NP GPUs, into $T/NAME (its log
# $T/NAME.log, appended to); TUNE=0 turns GEMM autotuning off, so that two runs pick the same kernels.
vit_run() {
  local name=$1 np=$2; shift 2
  timeout 300 mpirun --allow-run-as-root -np "$np" -x NCCL_NVLS_ENABLE=0 -x LD_LIBRARY_PATH -x VIT_GEMM_AUTOTUNE="${TUNE:-1}" \
    "$BIN/vit_train" configs/vit_base.toml $COMPARABLE training.micro_batch_size=$((GB / np)) run.output_dir="$T/$name" \
    "$@" >> "$T/$name.log" 2>&1 || { tail -20 "$T/$name.log"; echo "FAIL: $name ($np GPUs)"; return 1; }
}
