#!/usr/bin/env bash
nvidia-smi -L; nvidia-smi --query-gpu=name,memory.total,driver_version,power.limit --format=csv,noheader
nvidia-smi topo -m | head -6
export LOG=/tmp/suite
timeout ${T:-540} env MANY_PARTS="${PARTS_:-vitb equiv resume memory}" bash tools/gpu_suite.sh many > $OUT/suite.out 2>&1
cp $LOG/summary.txt $OUT/; cat $LOG/equiv.log $LOG/resume.log > $OUT/multi.log 2>/dev/null
grep -vE "^GEMM|^BLOCKS" $LOG/summary.txt
