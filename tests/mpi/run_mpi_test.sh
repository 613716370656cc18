#!/usr/bin/env bash
# Runs one multi-rank test binary under mpirun with 1, 2 and 4 ranks (oversubscribed: CI has 2 cores).
set -euo pipefail
bin="$1"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
# Loopback only: no network interfaces needed, no warnings about them.
export OMPI_MCA_btl=self,vader OMPI_MCA_btl_vader_single_copy_mechanism=none OMPI_MCA_rmaps_base_oversubscribe=1
export OMP_NUM_THREADS=1
for n in ${VIT_MPI_RANKS:-1 2 4}; do
  echo "== $(basename "$bin") with $n rank(s)"
  timeout 300 mpirun --oversubscribe -np "$n" "$bin"
done
