#!/usr/bin/env bash
# Faults on 2 GPUs (GPU machine, run by tools/gpu_suite.sh scaling): with each one-host transport (copy engines
# over NVLink, and host memory over PCIe, the 2-GPU default: both wait on a peer's flag in a stream) a rank
# that stalls or dies must still end the job in bounded time, the stall with the watchdog's message naming the
# rank and the step.
#   [TRANSPORTS="copy_engine host_memory"] multi_gpu_faults.sh BIN_DIR
set -uo pipefail
source "$(dirname "$0")/multi_gpu_common.sh" multi_gpu_faults "$1"
RUN=(configs/vit_base.toml training.steps=50 scheduler.warmup_steps=5 training.micro_batch_size=16
     training.val_interval=0 distributed.timeout_s=20)
bad=0
for tr in ${TRANSPORTS:-copy_engine host_memory}; do
t0=$(date +%s)
timeout 240 mpirun --allow-run-as-root -np 2 -x NCCL_NVLS_ENABLE=0 -x LD_LIBRARY_PATH -x VIT_TEST_FAULT=stall:1:3 \
  "$BIN/vit_train" "${RUN[@]}" distributed.transport="$tr" run.output_dir="$T/stall_$tr" > "$T/stall.log" 2>&1
rc=$?; t1=$(date +%s)
if [ $rc -eq 0 ] || [ $rc -eq 124 ] || ! grep -q "rank [01] made no progress for [0-9]* s during \"step 3" "$T/stall.log"; then
  tail -5 "$T/stall.log"; echo "FAULT FAIL ($tr): a stalled rank on $N GPUs (rc $rc)"; bad=1
else
  echo "FAULT ok ($tr): stalled rank on GPUs -> job ended in $((t1 - t0)) s: $(grep -m1 'made no progress' "$T/stall.log" | cut -c1-120)"
fi
t0=$(date +%s)
timeout 240 mpirun --allow-run-as-root -np 2 -x NCCL_NVLS_ENABLE=0 -x LD_LIBRARY_PATH -x VIT_TEST_FAULT=exit:0:3 \
  "$BIN/vit_train" "${RUN[@]}" distributed.transport="$tr" run.output_dir="$T/die_$tr" > "$T/die.log" 2>&1
rc=$?; t1=$(date +%s)
if [ $rc -eq 0 ] || [ $rc -eq 124 ]; then
  tail -5 "$T/die.log"; echo "FAULT FAIL ($tr): a dead rank on GPUs did not end the job in bounded time (rc $rc)"; bad=1
else
  echo "FAULT ok ($tr): dead rank on GPUs -> job ended in $((t1 - t0)) s (rc $rc)"
fi
done
exit $bad
