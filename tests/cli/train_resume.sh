#!/usr/bin/env bash
# End to end on the CPU backend: training lowers the loss; resume is exact (20 straight steps == 10 steps,
# stop, resume, 10 steps: same checkpoint bytes, same losses) at 1 and 2 ranks; a 2-rank checkpoint
# resumes on 1 and 4 ranks with the same trajectory; the same for a 2x2 hybrid with outer optimizer sharding
# and bf16 gradient reduction; a damaged newest checkpoint falls back to the
# previous one with a warning; SIGTERM checkpoints and exits 0.
#   train_resume.sh BUILD_DIR SOURCE_DIR
set -euo pipefail
B=$(cd "$1" && pwd); S=$(cd "$2" && pwd)
T=$(mktemp -d); trap 'rm -rf "$T"' EXIT
cd "$T"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_btl=self,vader \
       OMPI_MCA_btl_vader_single_copy_mechanism=none OMPI_MCA_rmaps_base_oversubscribe=1 OMP_NUM_THREADS=1
CFG="$S/configs/tests_tiny_cpu.toml"
COMMON="training.steps=20 training.log_interval=1 training.val_interval=0 data.num_workers=2 training.checkpoint.interval=10"
fail() { echo "FAIL: $*"; exit 1; }
run() {  # run NAME NP [overrides...]
  local name=$1 np=$2; shift 2
  if [ "$np" = 1 ]; then "$B/vit_train" "$CFG" $COMMON run.output_dir="$T/$name" "$@" > "$T/$name.log" 2>&1
  else mpirun --oversubscribe -np "$np" "$B/vit_train" "$CFG" $COMMON run.output_dir="$T/$name" "$@" > "$T/$name.log" 2>&1; fi
}
losses() { python3 -c "
import json,sys
for l in open('$T/$1/metrics.jsonl'):
    d=json.loads(l)
    if 'loss' in d: print(d['step'], '%.6f' % d['loss'])"; }

# 1. the loss falls
run straight1 1 training.checkpoint.path="$T/ck_straight1" || { cat "$T/straight1.log"; fail "training run failed"; }
python3 - "$T/straight1/metrics.jsonl" <<'PY' || fail "loss did not fall"
import json, sys
L = [json.loads(l)["loss"] for l in open(sys.argv[1]) if '"loss"' in l]
first, last = sum(L[:3]) / 3, sum(L[-3:]) / 3
print(f"loss first 3 steps {first:.4f}, last 3 steps {last:.4f}")
sys.exit(0 if last < 0.85 * first else 1)
PY

# 2. exact resume at 1 and 2 ranks
for np in 1 2; do
  micro=$((16 / np))
  [ "$np" = 1 ] || run straight$np $np training.micro_batch_size=$micro training.checkpoint.path="$T/ck_straight$np" \
    || { cat "$T/straight$np.log"; fail "straight run ($np ranks)"; }
  [ "$np" = 1 ] && { run s1 1 training.micro_batch_size=16 training.checkpoint.path="$T/ck_straight1b" || fail "straight b"; mv "$T/s1" "$T/straight1b"; }
  ref=$([ "$np" = 1 ] && echo ck_straight1b || echo ck_straight$np)
  run part$np $np training.micro_batch_size=$micro training.checkpoint.path="$T/ck_part$np" training.stop_after_steps=10 \
    || { cat "$T/part$np.log"; fail "first half ($np ranks)"; }
  [ -f "$T/ck_part$np/step_10/COMMITTED" ] || fail "no committed step 10 after stop_after_steps ($np ranks)"
  [ ! -d "$T/ck_part$np/step_20" ] || fail "first half ran past step 10"
  run part$np $np training.micro_batch_size=$micro training.checkpoint.path="$T/ck_part$np" \
    || { cat "$T/part$np.log"; fail "resumed half ($np ranks)"; }
  grep -q "resumed from" "$T/part$np.log" || fail "second half did not resume ($np ranks)"
  for r in $(seq 0 $((np - 1))); do
    cmp "$T/$ref/step_20/rank_$r.bin" "$T/ck_part$np/step_20/rank_$r.bin" \
      || fail "$np ranks: rank $r weights after resume differ from the straight run"
  done
  refdir=$([ "$np" = 1 ] && echo straight1b || echo straight$np)
  diff <(losses $refdir | awk '$1 > 10') <(losses part$np | awk '$1 > 10') || fail "$np ranks: losses after resume differ"
  echo "ok: exact resume at $np rank(s): checkpoint bytes and losses of steps 11-20 identical"
done

# 3. a 2-rank checkpoint continues on 1 and 4 ranks (same global batch 16)
for np in 1 4; do
  mkdir -p "$T/ck_x$np" && cp -r "$T/ck_part2/step_10" "$T/ck_x$np/"
  rm -rf "$T/ck_x$np/step_10/COMMITTED"; cp "$T/ck_part2/step_10/COMMITTED" "$T/ck_x$np/step_10/"
  run x$np $np training.micro_batch_size=$((16 / np)) training.checkpoint.path="$T/ck_x$np" \
    || { cat "$T/x$np.log"; fail "resume of a 2-rank checkpoint on $np ranks"; }
  grep -q "resumed from .*written by 2 ranks" "$T/x$np.log" || fail "did not resume the 2-rank checkpoint on $np ranks"
  python3 - <(losses straight2) <(losses x$np) "$np" <<'PY' || fail "2 -> $np ranks: trajectory differs"
import sys
a = {int(s): float(v) for s, v in (l.split() for l in open(sys.argv[1]))}
b = {int(s): float(v) for s, v in (l.split() for l in open(sys.argv[2]))}
worst = max(abs(a[s] - b[s]) / abs(a[s]) for s in b if s > 10)
print(f"2 -> {sys.argv[3]} ranks: steps 11-20 max relative loss difference {worst:.2e}")
sys.exit(0 if worst < 1e-4 else 1)   # fp32 sums in another order only
PY
done

# 3b. 2x2 hybrid with the optimizer sharded over the outer groups and gradients reduced in bf16: resume is
#     exact at 4 ranks, and the 4-rank checkpoint continues on 1 rank
H="distributed.dp_outer=2 distributed.outer_strategy=shard distributed.grad_reduce_dtype=bf16 training.micro_batch_size=4"
run h4 4 $H training.checkpoint.path="$T/ck_h4" || { cat "$T/h4.log"; fail "hybrid outer-sharded bf16 run"; }
grep -q "optimizer sharded over the outer groups, gradients reduced in bf16" "$T/h4.log" || fail "hybrid run did not say its mode"
run hp4 4 $H training.checkpoint.path="$T/ck_hp4" training.stop_after_steps=10 || { cat "$T/hp4.log"; fail "hybrid first half"; }
run hp4 4 $H training.checkpoint.path="$T/ck_hp4" || { cat "$T/hp4.log"; fail "hybrid resumed half"; }
for r in 0 1 2 3; do
  cmp "$T/ck_h4/step_20/rank_$r.bin" "$T/ck_hp4/step_20/rank_$r.bin" || fail "hybrid: rank $r differs after resume"
done
diff <(losses h4 | awk '$1 > 10') <(losses hp4 | awk '$1 > 10') || fail "hybrid: losses after resume differ"
mkdir -p "$T/ck_h1" && cp -r "$T/ck_hp4/step_10" "$T/ck_h1/"
run h1 1 training.micro_batch_size=16 training.checkpoint.path="$T/ck_h1" || { cat "$T/h1.log"; fail "4 -> 1 hybrid resume"; }
grep -q "resumed from .*written by 4 ranks" "$T/h1.log" || fail "did not resume the hybrid checkpoint on 1 rank"
python3 - <(losses h4) <(losses h1) <<'PY' || fail "hybrid 4 -> 1 rank: trajectory differs"
import sys
a = {int(s): float(v) for s, v in (l.split() for l in open(sys.argv[1]))}
b = {int(s): float(v) for s, v in (l.split() for l in open(sys.argv[2]))}
worst = max(abs(a[s] - b[s]) / abs(a[s]) for s in b if s > 10)
print(f"hybrid 4 -> 1 rank: steps 11-20 max relative loss difference {worst:.2e}")
sys.exit(0 if worst < 2e-2 else 1)   # the 4-rank side rounds its gradients to bf16 on the wire
PY
echo "ok: 2x2 outer-sharded bf16: exact resume at 4 ranks, continues on 1 rank"

# 4. a damaged newest checkpoint: resume falls back to the previous one with a warning
cp -r "$T/ck_straight1" "$T/ck_bad"
truncate -s 1000 "$T/ck_bad/step_20/rank_0.bin"
run bad 1 training.steps=30 training.checkpoint.path="$T/ck_bad" || { cat "$T/bad.log"; fail "run after damage"; }
grep -q "warning: .*step_20" "$T/bad.log" || { cat "$T/bad.log"; fail "no warning naming the damaged step"; }
grep -q "resumed from .*step_10" "$T/bad.log" || fail "did not fall back to step_10"
echo "ok: damaged step_20 skipped with a warning, resumed from step_10"

# 4b. a process killed inside a checkpoint (its file written, no commit yet): the next run resumes from the
# previous committed step and re-saves the interrupted one
VIT_TEST_FAULT=ckptcrash:0:20 "$B/vit_train" "$CFG" $COMMON training.checkpoint.path="$T/ck_crash" \
  run.output_dir="$T/crash" > "$T/crash.log" 2>&1 && fail "the crash hook did not fire"
[ -f "$T/ck_crash/step_10/COMMITTED" ] || fail "step_10 not committed before the crash"
[ -d "$T/ck_crash/step_20" ] && [ ! -f "$T/ck_crash/step_20/COMMITTED" ] || fail "expected an uncommitted step_20"
run crash2 1 training.checkpoint.path="$T/ck_crash" || { cat "$T/crash2.log"; fail "run after the crash"; }
grep -q "resumed from .*step_10" "$T/crash2.log" || { cat "$T/crash2.log"; fail "did not resume from step_10 after the crash"; }
[ -f "$T/ck_crash/step_20/COMMITTED" ] || fail "step_20 not committed by the rerun"
cmp "$T/ck_straight1/step_20/rank_0.bin" "$T/ck_crash/step_20/rank_0.bin" || fail "rerun after the crash differs from the straight run"
echo "ok: killed inside checkpoint 20 -> resumed from step_10, step_20 re-saved identical to the straight run"

# 5. SIGTERM: finish the step, checkpoint, exit 0; the next run continues from there
"$B/vit_train" "$CFG" training.steps=100000 training.log_interval=1 training.val_interval=0 \
  training.checkpoint.path="$T/ck_term" run.output_dir="$T/term" > "$T/term.log" 2>&1 &
pid=$!
for _ in $(seq 1 100); do grep -q "^step .* 3/" "$T/term.log" 2>/dev/null && break; sleep 0.2; done
kill -TERM $pid
wait $pid || fail "SIGTERM run exited non-zero"
grep -q "stop signal received: checkpointed" "$T/term.log" || { cat "$T/term.log"; fail "no checkpoint on SIGTERM"; }
st=$(ls "$T/ck_term" | grep -o 'step_[0-9]*' | sort -t_ -k2 -n | tail -1)
[ -f "$T/ck_term/$st/COMMITTED" ] || fail "SIGTERM checkpoint not committed"
"$B/vit_train" "$CFG" training.steps=100000 training.stop_after_steps=1 training.checkpoint.path="$T/ck_term" \
  run.output_dir="$T/term2" > "$T/term2.log" 2>&1 || fail "resume after SIGTERM"
grep -q "resumed from .*$st" "$T/term2.log" || fail "did not resume from the SIGTERM checkpoint"
echo "ok: SIGTERM -> committed $st, resumed from it"
# 6. evaluation (vit_eval) of a checkpoint: 37 validation images do not divide by 2 ranks x 8: the padded
# slots are not counted, and 1 and 2 ranks give the same sums
for np in 1 2; do
  if [ "$np" = 1 ]; then "$B/vit_eval" "$CFG" data.synthetic_val_samples=37 training.checkpoint.path="$T/ck_straight1" \
      run.output_dir="$T/ev1" > "$T/ev1.log" 2>&1 || { cat "$T/ev1.log"; fail "vit_eval"; }
  else mpirun --oversubscribe -np 2 "$B/vit_eval" "$CFG" data.synthetic_val_samples=37 \
      training.checkpoint.path="$T/ck_straight1" run.output_dir="$T/ev2" > "$T/ev2.log" 2>&1 || { cat "$T/ev2.log"; fail "vit_eval 2 ranks"; }; fi
done
e1=$(grep '^{"step"' "$T/ev1.log"); e2=$(grep '^{"step"' "$T/ev2.log")
echo "$e1" | grep -q '"val_count": 37' || fail "vit_eval did not count 37 images: $e1"
python3 - "$e1" "$e2" <<'PY' || fail "evaluation differs between 1 and 2 ranks: $e1 / $e2"
import json, sys
a, b = json.loads(sys.argv[1]), json.loads(sys.argv[2])
assert a["val_count"] == b["val_count"] == 37 and a["step"] == b["step"] == 20
for k in ("val_loss", "val_top1", "val_top5"):
    assert abs(a[k] - b[k]) <= 1e-6 * max(1.0, abs(a[k])), k
PY
echo "ok: vit_eval on 1 and 2 ranks: $e1"
echo "train_resume: all checks passed"
