#!/usr/bin/env bash
# Faults end the job in bounded time with a message naming the rank: a rank that stalls (its peers wait in a
# collective) and a rank that dies. Configs that differ between ranks are refused before any work.
#   faults.sh BUILD_DIR SOURCE_DIR
set -uo pipefail
B=$(cd "$1" && pwd); S=$(cd "$2" && pwd)
T=$(mktemp -d); trap 'rm -rf "$T"' EXIT
cd "$T"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_btl=self,vader \
       OMPI_MCA_btl_vader_single_copy_mechanism=none OMPI_MCA_rmaps_base_oversubscribe=1 OMP_NUM_THREADS=1
CFG="$S/configs/tests_tiny_cpu.toml"
fail() { echo "FAIL: $*"; exit 1; }

t0=$(date +%s)
VIT_TEST_FAULT=stall:1:3 timeout 120 mpirun --oversubscribe -np 2 "$B/vit_train" "$CFG" training.steps=50 \
  distributed.timeout_s=4 run.output_dir="$T/stall" > "$T/stall.log" 2>&1
rc=$?; t1=$(date +%s)
[ $rc -ne 0 ] || fail "a stalled rank did not fail the job"
[ $rc -ne 124 ] || { cat "$T/stall.log"; fail "stalled job hung until the test's timeout"; }
grep -q "rank [01] made no progress for [0-9]* s during \"step 3" "$T/stall.log" || { cat "$T/stall.log"; fail "no message naming the rank and the step"; }
echo "ok: stalled rank -> job ended in $((t1 - t0)) s: $(grep -m1 'made no progress' "$T/stall.log" | cut -c1-150)"

t0=$(date +%s)
VIT_TEST_FAULT=exit:0:3 timeout 120 mpirun --oversubscribe -np 2 "$B/vit_train" "$CFG" training.steps=50 \
  distributed.timeout_s=4 run.output_dir="$T/die" > "$T/die.log" 2>&1
rc=$?; t1=$(date +%s)
[ $rc -ne 0 ] && [ $rc -ne 124 ] || { cat "$T/die.log"; fail "a dead rank did not end the job in bounded time (rc $rc)"; }
echo "ok: dead rank -> job ended in $((t1 - t0)) s (rc $rc)"

# A config that differs between ranks (here: an environment-dependent override) is refused up front.
cat > "$T/differ.sh" <<EOS
#!/usr/bin/env bash
exec "$B/vit_train" "$CFG" training.steps=2 run.seed=\${OMPI_COMM_WORLD_RANK} run.output_dir="$T/differ"
EOS
chmod +x "$T/differ.sh"
timeout 60 mpirun --oversubscribe -np 2 "$T/differ.sh" > "$T/differ.log" 2>&1 && fail "ranks with different configs were accepted"
grep -q "resolved a different config than rank 0" "$T/differ.log" || { cat "$T/differ.log"; fail "no message about differing configs"; }
echo "ok: differing configs refused: $(grep -m1 'different config' "$T/differ.log" | cut -c1-120)"
