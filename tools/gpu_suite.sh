#!/usr/bin/env bash
# The one script the GPU machine runs: every GPU test (each test case in its own process, so one crash
# cannot hide the others), every kernel benchmark, the training benchmark, and the PyTorch anchors in the
# same run. Builds nothing: expects binaries in $BIN (default .devcarry/bin, made by tools/pack_device.sh).
#   bash tools/gpu_suite.sh [tests|bench|train|attn|parity|fmnist|trainrun|recipe|scaling|many|comm|links|ops|overlap|loader|anchors|all]...
set -uo pipefail
BIN=${BIN:-.devcarry/bin}
# pack_device.sh ships the programs as one archive (the carry limit): unpack it once.
if [ ! -d "$BIN" ] && [ -f .devcarry/bin.tar.xz ]; then
  mkdir -p /tmp/vitbin && tar xJf .devcarry/bin.tar.xz -C /tmp/vitbin && BIN=/tmp/vitbin/bin
fi
ANCH=${ANCH:-.devcarry/anchors}
LOG=${LOG:-/tmp/gpu_suite}
mkdir -p "$LOG"
export LD_LIBRARY_PATH="$BIN/lib:${LD_LIBRARY_PATH:-}"
export NCCL_NVLS_ENABLE=0 OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
SUMMARY="$LOG/summary.txt"
: > "$SUMMARY"
what=${*:-all}

# Runs a command while nvidia-smi samples every GPU's SM clock and board power ten times a second, then prints
# their means over the samples taken while training (> 300 W). The GPUs run power-governed below their boost
# clock, so the clock is part of any comparison between runs (docs/benchmarks.md, run 77). A second sampler (its
# own process, so a field this driver lacks cannot cost the first) adds the temperature and why the clock is held
# down: nvidia-smi's clocks_event_reasons bit mask (4 SW power cap, 8 HW slowdown, 0x20 SW thermal, 0x40 HW thermal,
# 0x80 power brake), as the share of busy samples that had each bit.
with_clocks() {  # with_clocks TAG COMMAND...
  local tag=$1; shift
  nvidia-smi --query-gpu=index,clocks.sm,power.draw --format=csv,noheader,nounits -lms 100 > "$LOG/clocks.csv" 2>/dev/null &
  local sampler=$!
  nvidia-smi --query-gpu=index,temperature.gpu,clocks_event_reasons.active,power.draw --format=csv,noheader,nounits \
    -lms 100 > "$LOG/reasons.csv" 2>/dev/null &
  local sampler2=$!
  "$@"
  kill "$sampler" "$sampler2" 2>/dev/null; wait "$sampler" "$sampler2" 2>/dev/null
  python3 - "$LOG/clocks.csv" "$LOG/reasons.csv" "$tag" <<'PY' | tee -a "$SUMMARY"
import collections, sys
busy, why = collections.defaultdict(list), collections.defaultdict(list)
for path, into in ((sys.argv[1], busy), (sys.argv[2], why)):
    for line in open(path):
        f = [x.strip() for x in line.split(",")]
        try:
            if float(f[-1]) > 300: into[f[0]].append(f[1:])
        except (IndexError, ValueError):
            pass
def gpu(g, v):
    s = f"GPU {g} {sum(float(c) for c, _ in v) / len(v):.0f} MHz {sum(float(w) for _, w in v) / len(v):.0f} W ({len(v)} samples)"
    r = why.get(g)
    if r:
        try:
            temps = [float(t) for t, _, _ in r]
            bits = [int(m, 16) for _, m, _ in r]
            share = {b: sum(1 for m in bits if m & b) / len(bits) for b in (4, 8, 0x20, 0x40, 0x80) if any(m & b for m in bits)}
            s += f" {sum(temps) / len(temps):.0f}-{max(temps):.0f} C reasons " + (
                " ".join(f"{b:#x}:{100 * x:.0f}%" for b, x in share.items()) or "none")
        except ValueError:
            s += " (reasons unreadable: " + ",".join(r[0]) + ")"
    return s
print(f"CLOCKS {sys.argv[3]}: " + ("; ".join(gpu(g, v) for g, v in sorted(busy.items())) or "no samples above 300 W"))
PY
}
has() { [[ " $what " == *" $1 "* || " $what " == *" all "* ]]; }

# The training benchmark on NP ranks (ViT-B/16 b256 per GPU, no drop-path or label smoothing: the anchors'
# settings). Its ENGINE, BLOCKS, PHASES and OPS lines go to the summary, ENGINE renamed to $ETAG when set.
N=$(nvidia-smi -L 2>/dev/null | wc -l)
engine() {  # engine NP [bench_train flags and overrides]
  local pass=(-x NCCL_NVLS_ENABLE=0 -x LD_LIBRARY_PATH)
  [ -n "${VIT_GEMM_AUTOTUNE:-}" ] && pass+=(-x VIT_GEMM_AUTOTUNE)
  [ -n "${NCCL_P2P_DISABLE:-}" ] && pass+=(-x NCCL_P2P_DISABLE)
  mpirun --allow-run-as-root -np "$1" "${pass[@]}" "$BIN/bench_train" "${CFG:-configs/vit_base.toml}" \
    model.drop_path_rate=0 training.label_smoothing=0 "${@:2}" 2>&1 | grep -E "ENGINE|BLOCKS|PHASES|OPS|GEMM" \
    | sed "s/^ENGINE /${ETAG:-ENGINE} /" | tee -a "$SUMMARY"
}
# PyTorch FSDP2 (the anchor) on NP GPUs, batch 256 per GPU: its FSDP2 line goes to the summary.
fsdp2() {  # fsdp2 TIMM_MODEL MODE NP   (MODE eager or compile)
  (cd "$ANCH" && PYTHONUNBUFFERED=1 timeout 400 torchrun --nproc-per-node "$3" anchor_fsdp2.py "$1" 256 "$2" 2>&1 \
    | grep FSDP2) | tee -a "$SUMMARY"
}
# The step without communication: every GPU training alone at the same time, one independent process each (one
# rank: no collectives at all), so the GPUs share the host's heat and power as in the N-GPU job.
alone() {  # alone [bench_train flags and overrides]
  local pids=()
  for ((g = 0; g < N; g++)); do
    CUDA_VISIBLE_DEVICES=$g "$BIN/bench_train" configs/vit_base.toml model.drop_path_rate=0 training.label_smoothing=0 \
      "$@" > "$LOG/alone$g.log" 2>&1 &
    pids+=($!)
  done
  wait "${pids[@]}"  # not a bare wait: with_clocks' samplers run in the background too
  for ((g = 0; g < N; g++)); do
    grep -E "ENGINE|PHASES|GEMM" "$LOG/alone$g.log" | sed "s/^ENGINE /${ETAG:-ENGINE}_ALONE gpu=$g /; s/^PHASES /PHASES gpu=$g /; s/^GEMM /GEMM gpu=$g /" \
      | tee -a "$SUMMARY"
  done
}

# `alone` beside tools/bench_link_trickle: every GPU pair's NVLink carrying BYTES of copy-engine copies every
# PERIOD_US (MODE peer), or the same copies from host memory (MODE host, the control), no kernel (what busy links
# alone cost a training: docs/benchmarks.md run 98).
trickle() {  # trickle BYTES PERIOD_US MODE [bench_train flags and overrides]
  "$BIN/bench_link_trickle" 3600 "$1" "$2" "$3" > "$LOG/trickle.log" 2>&1 &
  local t=$!
  alone "${@:4}"
  kill -TERM "$t"; wait "$t"
  grep -E "TRICKLE|error" "$LOG/trickle.log" | tee -a "$SUMMARY"
}

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee -a "$SUMMARY"

if has tests; then
  pass=0; fail=0
  while IFS= read -r tc; do
    [ -z "$tc" ] && continue
    # doctest splits filters at commas: escape them so each case is matched whole.
    filt=${tc//,/\\,}
    if timeout 120 "$BIN/gpu_tests" -tc="$filt" > "$LOG/tc.log" 2>&1 && grep -q "test cases: *1 | *1 passed" "$LOG/tc.log"; then
      pass=$((pass + 1)); grep -h "^vit \|rel err" "$LOG/tc.log" | head -5
    else
      fail=$((fail + 1)); echo "FAILED: $tc"; tail -25 "$LOG/tc.log"; echo "FAILED: $tc" >> "$SUMMARY"
    fi
    cat "$LOG/tc.log" >> "$LOG/gpu_tests.log"
  done < <("$BIN/gpu_tests" -ltc 2>/dev/null | sed -n '/^=\+$/,/^=\+$/p' | grep -v '^=' | grep -v '^\[doctest\]')
  echo "gpu_tests: $pass passed, $fail failed" | tee -a "$SUMMARY"
fi

if has bench; then
  for b in "$BIN"/bench_*; do
    [ "$(basename "$b")" = bench_train ] && continue
    echo "== $(basename "$b")"
    timeout 120 "$b" 2>&1 | tee "$LOG/$(basename "$b").log" | grep -E "BENCH|RECOMMEND|FAIL|error|target" | head -40
    grep -E "BENCH|RECOMMEND|target" "$LOG/$(basename "$b").log" >> "$SUMMARY"
  done
fi

if has train; then
  for spec in "vit_base.toml" "vit_base.toml distributed.strategy=no_shard"; do
    timeout 300 "$BIN/bench_train" configs/$spec model.drop_path_rate=0 training.label_smoothing=0 2>&1 | tee -a "$LOG/bench_train.log" | tail -3
  done
  grep ENGINE "$LOG/bench_train.log" >> "$SUMMARY"
fi

if has attn; then
  timeout 300 "$BIN/bench_attention" 2>&1 | tee "$LOG/bench_attention.log" | grep -E "BENCH|default|target|FAIL|error" | head -40
  grep -E "BENCH|default|target" "$LOG/bench_attention.log" >> "$SUMMARY"
  PYTHONUNBUFFERED=1 timeout 300 python3 tools/anchor_sdpa_shapes.py 2>&1 | grep SDPA | tee -a "$SUMMARY"
  for v in default 1 3; do
    if [ "$v" = default ]; then unset VIT_ATTN_VARIANT; else export VIT_ATTN_VARIANT=$v; fi
    timeout 300 "$BIN/bench_train" configs/vit_base.toml model.drop_path_rate=0 training.label_smoothing=0 \
      2>&1 | grep ENGINE | sed "s/^/attention variant $v: /" | tee -a "$SUMMARY"
  done
  unset VIT_ATTN_VARIANT
fi

if has parity; then
  # timm parity on the same weights and batch: CPU backend (fp32) and CUDA backend (bf16) vs PyTorch float64.
  PYTHONUNBUFFERED=1 timeout 500 python3 tools/parity.py "$BIN" \
    vit_ti16:configs/vit_tiny.toml vit_s16:configs/vit_small.toml vit_b16:configs/vit_base.toml \
    "nonsquare_p14_avg_nocls:configs/vit_small.toml:model.img_size=[252,196]|model.patch_size=14|model.class_token=false|model.global_pool=avg" \
    "avg_nocls:configs/vit_small.toml:model.class_token=false|model.global_pool=avg" \
    "layer_scale_1e-5:configs/vit_small.toml:model.init_values=1e-5" \
    "qk_norm:configs/vit_small.toml:model.qk_norm=true" \
    recipe_no_dropout:configs/vit_base_patch16_224.toml 2>&1 | tee "$LOG/parity.log" | grep PARITY
  grep PARITY "$LOG/parity.log" >> "$SUMMARY"
fi

if has fmnist; then
  # The default `make run` job on the GPU: Fashion-MNIST to >= 91% test top-1; time-to-accuracy from the log.
  "$BIN/fmnist_convert" --in .devcarry/fmnist
  t0=$(date +%s.%N)
  timeout 420 "$BIN/vit_train" configs/fmnist_gpu.toml run.output_dir="$LOG/fmnist" \
    training.checkpoint.path="$LOG/fmnist/ckpt" 2>&1 | tee "$LOG/fmnist.log" | grep -E "^eval|^step .*(00|50)/|error|done" | tail -40
  t1=$(date +%s.%N)
  echo "fmnist_gpu wall $(python3 -c "print(round($t1 - $t0, 1))") s; $(grep '^eval' "$LOG/fmnist.log" | tail -1)" | tee -a "$SUMMARY"
  awk '/^eval/ {for (i=1;i<=NF;i++) if ($i=="val_top1") {v=$(i+1); sub("%","",v); if (v+0 >= 91 && !done) {print "first eval >= 91% top-1: " $0; done=1}}}' \
    "$LOG/fmnist.log" | tee -a "$SUMMARY"
  "$BIN/plot_metrics" "$LOG/fmnist/metrics.jsonl" "$LOG/fmnist_curves.png" | tee -a "$SUMMARY"
  [ -x "$BIN/vit_eval" ] && timeout 120 "$BIN/vit_eval" configs/fmnist_gpu.toml training.checkpoint.path="$LOG/fmnist/ckpt" 2>&1 | tail -1 | tee -a "$SUMMARY"
fi

if has trainrun; then
  # The real trainer (CPU loader threads making synthetic 224x224 images) on ViT-B/16 batch 256.
  timeout 300 "$BIN/vit_train" configs/vit_base.toml training.steps=60 scheduler.warmup_steps=10 training.log_interval=20 model.drop_path_rate=0 \
    data.num_workers=14 run.output_dir="$LOG/vitb" 2>&1 | tee "$LOG/vitb.log" | grep -E "^step|error|memory plan|total" | tail -8
  grep -E "^step +60/" "$LOG/vitb.log" | sed 's/^/vit_train vit_base: /' >> "$SUMMARY"
  # Out of memory names the buffer and the largest micro-batch that fits.
  timeout 120 "$BIN/vit_train" configs/vit_base.toml training.micro_batch_size=8192 training.steps=1 scheduler.warmup_steps=0 2>&1 | tail -1 | tee -a "$SUMMARY"
fi

if has recipe; then
  # The reference recipe's config exactly as written (every dropout at 0.05 including attention and patch
  # dropout, bf16 gradient reduction, outer optimizer sharding; with one GPU the last two have nothing to
  # reduce) on super-tiny-imagenet-5, all 500 steps with evaluations every 25.
  D=.devcarry/super-tiny-imagenet-5
  t0=$(date +%s.%N)
  timeout 400 "$BIN/vit_train" configs/vit_base_patch16_224.toml data.train_path=$D/train data.val_path=$D/val \
    data.class_map=$D/words.txt training.checkpoint.path="$LOG/recipe/ckpt" training.checkpoint.keep_last=2 \
    run.output_dir="$LOG/recipe" 2>&1 \
    | tee "$LOG/recipe.log" | grep -E "^eval|^step .*(00|50)/|error|warning|resolved|training [0-9]+ steps" | tail -45
  t1=$(date +%s.%N)
  echo "recipe wall $(python3 -c "print(round($t1 - $t0, 1))") s; $(grep '^eval' "$LOG/recipe.log" | tail -1)" | tee -a "$SUMMARY"
  grep -E "^step +500/" "$LOG/recipe.log" | sed 's/^/recipe: /' >> "$SUMMARY"
  "$BIN/plot_metrics" "$LOG/recipe/metrics.jsonl" "$LOG/recipe_curves.png" | tee -a "$SUMMARY"
fi

if has scaling; then
  # Several GPUs of one host: 1 vs N equivalence, then ViT-B/16 b256 per GPU on 1 and N GPUs beside PyTorch
  # FSDP2 (same call): img/s, scaling and per-rank memory against ZeRO-3's 16 B/param/N formula.
  bash tests/gpu/multi_gpu_equivalence.sh "$BIN" 2>&1 | tee "$LOG/equiv.log" | tail -8
  grep -E "EQUIV|TRANSPORT|FAIL|skipped" "$LOG/equiv.log" >> "$SUMMARY"
  bash tests/gpu/multi_gpu_faults.sh "$BIN" 2>&1 | tee "$LOG/faults.log" | grep -E "FAULT|skipped" | tee -a "$SUMMARY"
  for np in 1 $N; do
    for extra in "" "distributed.grad_reduce_dtype=bf16"; do
      with_clocks "bench_train np=$np $extra" engine $np $extra
    done
  done
  # The sustained rate (~10 s warm-up, ~30 s timed): the short window above matches the anchors' but catches the
  # clock before it settles at the 700 W cap. Sustained, the GPUs of a loaded host run hotter and so slower
  # (session 7), so the step without communication is measured the same way: every GPU training alone at once,
  # one independent process each (one rank: no collectives at all).
  sustained=(--warmup 150 --steps 460)
  with_clocks "bench_train np=1 sustained" engine 1 "${sustained[@]}"
  with_clocks "bench_train $N independent 1-GPU runs at once, sustained" alone "${sustained[@]}"
  with_clocks "bench_train np=$N sustained" engine $N "${sustained[@]}"
  # FSDP2 with its clocks too: does its N-GPU step lose the clock to the links as the engine's does (run 98)?
  for mode in eager compile; do
    for np in 1 $N; do with_clocks "FSDP2 $mode np=$np" fsdp2 vit_base_patch16_224 $mode $np; done
  done
  # Scaling = per-GPU img/s on N GPUs / img/s on one, for the engine and for FSDP2 (same call).
  python3 - "$SUMMARY" <<'PY' | tee -a "$SUMMARY"
import re, sys
eng, f2 = {}, {}
for l in open(sys.argv[1]):
    m = re.search(r"ENGINE .*rank=0/(\d+) .*grads=(\w+) img_s=(\d+).* steps=(\d+)", l)
    if m: eng[(m[2] + (" sustained" if int(m[4]) > 20 else ""), int(m[1]))] = int(m[3])
    m = re.search(r"FSDP2 .*gpus=(\d+) .*mode=(\w+) .*img_s_per_gpu=(\d+)", l)
    if m: f2[(m[2], int(m[1]))] = int(m[3])
for name, d in (("engine ZeRO-3 grads", eng), ("FSDP2", f2)):
    for (k, n), v in sorted(d.items()):
        if n > 1 and (k, 1) in d:
            print(f"SCALING {name} {k}: 1 GPU {d[(k, 1)]} img/s, {n} GPUs {v} img/s per GPU = {100 * v / d[(k, 1)]:.1f}%")
# Communication's cost: the N-GPU job against the same GPUs each training alone at the same time (same heat). A
# synchronous job runs at its slowest GPU's pace, so the slowest alone run is the step without communication.
alone = [int(m[1]) for l in open(sys.argv[1]) for m in [re.search(r"ENGINE_ALONE .* img_s=(\d+)", l)] if m]
multi = [v for (k, n), v in eng.items() if k == "fp32 sustained" and n > 1]
if alone and multi:
    slow, mean = min(alone), sum(alone) / len(alone)
    print(f"COMM engine ZeRO-3 fp32 sustained: {len(alone)} GPUs alone at once {'/'.join(map(str, alone))} img/s, "
          f"together {multi[0]} img/s per GPU: step {100 * (slow / multi[0] - 1):+.1f}% against the slowest alone "
          f"({100 * (mean / multi[0] - 1):+.1f}% against their mean)")
PY
fi

if has many && ((N > 2)); then  # more than two GPUs of one host
  # Every GPU count 1, 2, 4 (, 8) up to N, in the order of MANY_PARTS (the most wanted first, so a cut-off call
  # keeps them): vitb: ViT-B/16 b256 per GPU, ZeRO-3, on every count beside FSDP2 (FSDP2_MODES) on the same
  # counts; equiv: the same global batch on every count and the N/2 x 2 hybrids (multi_gpu_equivalence.sh);
  # resume: an N-GPU checkpoint stopped and resumed on N, and continued on 2 (multi_gpu_resume.sh); memory: ZeRO-3
  # per-GPU memory of ViT-L/16 (b256) and ViT-H/14 (b64) on N GPUs against 16 B x params / N + working set;
  # strategies: the other three strategies and the other transports on N; large: ViT-L/16 b256 per GPU, ZeRO-3,
  # on every count (and every transport on N) beside FSDP2. A SCALING table (per-GPU img/s against one GPU) ends it.
  counts=(1); for ((k = 2; k <= N; k *= 2)); do counts+=("$k"); done
  modes=${FSDP2_MODES:-compile}
  large=(training.micro_batch_size=256 training.grad_accum=1)
  vitl() { CFG=configs/vit_large.toml engine "$@"; }
  for part in ${MANY_PARTS:-vitb equiv resume memory strategies large}; do
    case $part in
      vitb)
        for np in "${counts[@]}"; do with_clocks "many vitb np=$np" engine "$np"; done
        for mode in $modes; do
          for np in "${counts[@]}"; do with_clocks "many FSDP2 $mode np=$np" fsdp2 vit_base_patch16_224 "$mode" "$np"; done
        done ;;
      equiv)
        PARTS=${EQUIV_PARTS:-all} bash tests/gpu/multi_gpu_equivalence.sh "$BIN" 2>&1 | tee "$LOG/equiv.log" | tail -4
        grep -E "EQUIV|TRANSPORT|FAIL|skipped" "$LOG/equiv.log" >> "$SUMMARY" ;;
      resume)
        bash tests/gpu/multi_gpu_resume.sh "$BIN" 2>&1 | tee "$LOG/resume.log" | grep -E "RESUME|FAIL|skipped" | tee -a "$SUMMARY" ;;
      memory)
        vitl "$N" --warmup 3 --steps 5 "${large[@]}"
        CFG=configs/vit_huge.toml engine "$N" --warmup 2 --steps 3 model.drop_path_rate=0 training.grad_accum=1 ;;
      strategies)  # with its own one-GPU base, so that a call of this part alone gives scaling
        engine 1
        for st in no_shard optim optim_grads; do engine "$N" distributed.strategy=$st; done
        for tr in copy_engine nccl host_memory; do engine "$N" distributed.transport=$tr; done ;;
      large)
        for np in "${counts[@]}"; do with_clocks "many vitl np=$np" vitl "$np" "${large[@]}"; done
        for tr in nccl host_memory; do vitl "$N" "${large[@]}" distributed.transport=$tr; done
        for np in 1 "$N"; do with_clocks "many FSDP2 vitl np=$np" fsdp2 vit_large_patch16_224 "${modes%% *}" "$np"; done ;;
    esac
  done
  python3 - "$SUMMARY" <<'PY' | tee -a "$SUMMARY"
import re, sys
eng, f2 = {}, {}
for l in open(sys.argv[1]):
    m = re.search(r"^ENGINE model=configs/(\w+)\.toml rank=0/(\d+) bs=(\d+) strategy=(\w+) grads=(\w+) img_s=(\d+).* alloc_GiB=([\d.]+)"
                  r".* zero3_state_formula_GiB=([\d.]+) working_set_GiB=([\d.]+).* steps=(\d+).* transport=(\w+)", l)
    if m:
        model, n, bs, st, gr, ims, alloc, state, ws, steps, tr = m.groups()
        if int(steps) > 100:  # `scaling`'s sustained runs: another window
            continue
        if int(steps) >= 20:  # not the memory runs' few steps
            eng.setdefault((model, bs, st, tr if int(n) > 1 else "-"), {})[int(n)] = int(ims)
        else:
            print(f"MEMORY {model} b{bs} ZeRO-3 on {n} GPUs: {alloc} GiB allocated per GPU; the formula's state "
                  f"16 B x params / {n} = {state} GiB, the rest (working set) {ws} GiB")
    m = re.search(r"FSDP2 model=(\w+) gpus=(\d+) .*mode=(\w+) .*img_s_per_gpu=(\d+)", l)
    if m: f2.setdefault((m[1], m[3]), {})[int(m[2])] = int(m[4])
for (model, bs, st, tr), d in sorted(eng.items()):
    base = eng.get((model, bs, "optim_grads_params", "-"), {}).get(1)
    for n, v in sorted(d.items()):
        if n > 1 and base:
            print(f"SCALING {model} b{bs} {st} ({tr}): 1 GPU {base} img/s, {n} GPUs {v} img/s per GPU = {100 * v / base:.1f}%")
for (model, mode), d in sorted(f2.items()):
    for n, v in sorted(d.items()):
        if n > 1 and 1 in d:
            print(f"SCALING FSDP2 {model} {mode}: 1 GPU {d[1]} img/s, {n} GPUs {v} img/s per GPU = {100 * v / d[1]:.1f}%")
PY
fi

if has overlap && ((N > 1)); then  # several GPUs of one host
  # What a GEMM and a memory-bound kernel lose beside NCCL collectives, copy-engine peer writes or SMs held by
  # spinning CTAs (tools/bench_overlap.cu).
  mpirun --allow-run-as-root -np 2 -x NCCL_NVLS_ENABLE=0 -x LD_LIBRARY_PATH "$BIN/bench_overlap" 2>&1 \
    | tee "$LOG/overlap.log" | grep -E "OVERLAP|error" | tee -a "$SUMMARY"
fi

if has comm && ((N > 1)); then  # several GPUs of one host
  # Communication's cost and the scaling, thermally balanced. Sustained rates follow the GPUs' temperature (session 7,
  # run 82), so a fixed order (one GPU, then all alone, then the job) hands every later run a hotter GPU. Here the
  # N-GPU job first brings the host to its working heat, then the conditions run in a mirrored order per round
  # (A B D C C D B A), which cancels a linear drift, and each condition's mean is compared:
  #   A every GPU alone at once (no communication)    B the N-GPU job (ZeRO-3 defaults)
  #   C one GPU, the others idle (the scaling's base) D the N-GPU job with the least traffic (no backward all-gathers,
  #                                                     bf16 reduce-scatters)
  #   E the N-GPU job over NCCL's kernels (distributed.transport = nccl; the defaults use the copy engines: through
  #     host memory on 2 GPUs, over NVLink on more)
  #   K the N-GPU job with the copy engines over NVLink (distributed.transport = copy_engine)
  #   F as A, with every GPU pair's link carrying copy-engine copies at the job's mean rate (tools/bench_link_trickle)
  #   G as A, with a trickle on the links (64 KiB every ~0.2 ms): link activity without the bytes
  #   H the N-GPU job with its collectives in bursts of BURST units (distributed.comm_burst, default 4), so the
  #     links idle between bursts (if `links` shows that idle gaps of that length let them sleep)
  #   M the N-GPU job through host memory (distributed.transport = host_memory: PCIe, NVLink asleep)
  #   P the N-GPU job over NCCL without its NVLink transport (NCCL_P2P_DISABLE=1: NCCL's kernels through host memory)
  #   Q as A, with every GPU taking copies from host memory at the job's mean rate (PCIe traffic without NVLink)
  ROUNDS=${ROUNDS:-1}
  CONDS=${CONDS:-A B K C}
  read -ra win <<< "${COMM_WIN:---warmup 120 --steps 300} --phases"  # COMM_WIN: a shorter window
  ETAG=COMM_HEAT engine "$N" --warmup 600 --steps 40 > /dev/null
  run_cond() {
    case $1 in
      A) ETAG=COMM_A alone "${win[@]}" ;;
      B) ETAG=COMM_B engine "$N" "${win[@]}" ;;
      C) ETAG=COMM_C engine 1 "${win[@]}" ;;
      D) ETAG=COMM_D engine "$N" "${win[@]}" distributed.reshard_after_forward=false distributed.grad_reduce_dtype=bf16 ;;
      E) ETAG=COMM_E engine "$N" "${win[@]}" distributed.transport=nccl ;;
      F) ETAG=COMM_F trickle 4194304 700 peer "${win[@]}" ;;  # ~5.5 GB/s into each GPU: the 2-GPU ZeRO-3 step's 344 MB per 63 ms
      G) ETAG=COMM_G trickle 65536 200 peer "${win[@]}" ;;
      H) ETAG=COMM_H engine "$N" "${win[@]}" distributed.comm_burst="${BURST:-4}" ;;
      K) ETAG=COMM_K engine "$N" "${win[@]}" distributed.transport=copy_engine ;;
      M) ETAG=COMM_M engine "$N" "${win[@]}" distributed.transport=host_memory ;;
      P) NCCL_P2P_DISABLE=1 ETAG=COMM_P engine "$N" "${win[@]}" distributed.transport=nccl ;;
      Q) ETAG=COMM_Q trickle 4194304 700 host "${win[@]}" ;;
    esac
  }
  read -ra fwd <<< "$CONDS"
  for ((r = 1; r <= ROUNDS; r++)); do
    for c in "${fwd[@]}" $(printf '%s\n' "${fwd[@]}" | tac); do with_clocks "comm round $r $c" run_cond "$c"; done
  done
  python3 - "$SUMMARY" <<'PY' | tee -a "$SUMMARY"
import re, sys
runs = {}  # condition -> the rate of each run (A: its slowest GPU, which paces a synchronous job)
alone = {}  # A: every GPU's rate, one list per run
for l in open(sys.argv[1]):
    m = re.match(r"COMM_(([AFGQ])_ALONE gpu=(\d+)|B|C|D|E|H|K|M|P) .*rank=(\d+)/\d+ .*img_s=(\d+)", l)
    if not m: continue
    if m[2]:  # one line per GPU, GPU 0 first
        if m[3] == "0": alone.setdefault(m[2], []).append([])
        alone[m[2]][-1].append(int(m[5]))
    elif m[4] == "0":
        runs.setdefault(m[1], []).append(int(m[5]))
for c, a in alone.items(): runs[c] = [min(x) for x in a]
mean = {c: sum(v) / len(v) for c, v in runs.items()}
names = {"A": "every GPU alone at once (slowest)", "B": "N-GPU job", "C": "one GPU", "D": "N-GPU job, least traffic",
         "E": "N-GPU job, NCCL kernels", "F": "every GPU alone at once beside link traffic (slowest)",
         "G": "every GPU alone at once beside a link trickle (slowest)", "H": "N-GPU job, collectives in bursts",
         "K": "N-GPU job, copy engines over NVLink", "M": "N-GPU job, host memory", "P": "N-GPU job, NCCL without NVLink",
         "Q": "every GPU alone at once beside host-memory copies at the job's rate (slowest)"}
for c in sorted(runs):
    print(f"BALANCED {names[c]}: {' '.join(map(str, runs[c]))} img/s, mean {mean[c]:.0f}")
if "A" in mean:
    every = [v for run in alone["A"] for v in run]
    for c in "BDEFGHKMPQ":
        if c in mean:
            print(f"BALANCED COMM {names[c]}: step {100 * (mean['A'] / mean[c] - 1):+.1f}% against the slowest GPU alone at once "
                  f"({100 * (sum(every) / len(every) / mean[c] - 1):+.1f}% against all GPUs' mean)")
# Where the time goes (bench_train --phases): each condition's mean ms per step over its runs and GPUs. A run's
# PHASES lines come before its CLOCKS line.
phases, buf = {}, []
for l in open(sys.argv[1]):
    if l.startswith("PHASES"):
        buf.append([float(x) for x in re.findall(r"[a-z_]+ ([\d.]+)", l.split("per step:")[1])])
    m = re.match(r"CLOCKS comm round \d+ (\w):", l)
    if m:
        phases.setdefault(m[1], []).extend(buf); buf = []
for c in sorted(phases):
    if phases[c]:
        ms = [sum(col) / len(col) for col in zip(*phases[c])]
        print(f"BALANCED PHASES {names[c].replace(' (slowest)', '')}: forward {ms[0]:.2f} backward {ms[1]:.2f} reduction_tail {ms[2]:.2f} "
              f"optimizer {ms[3]:.2f} between {ms[4]:.2f} ms")
if "C" in mean:
    for c in "BDEHKMP":
        if c in mean:
            print(f"BALANCED SCALING {names[c]}: {mean[c]:.0f} / {mean['C']:.0f} img/s per GPU = {100 * mean[c] / mean['C']:.1f}%")
PY
fi

if has links && ((N > 1)); then  # several GPUs of one host
  # How often must the links wake to cost the clock? Every GPU alone at once (period 0: no trickle process) and
  # beside 64 KiB copies every PERIODS microseconds (1 s: peer access on, links almost always idle; hostN: the
  # control, the same copies every N us from host memory, copy engines without NVLink), heated first, in mirrored
  # order. If long idle gaps are free, issuing the collectives in bursts (distributed.comm_burst) is the lever.
  read -ra win <<< "${COMM_WIN:---warmup 120 --steps 300}"
  read -ra periods <<< "0 ${PERIODS:-1000000 20000 5000 2000 host2000}"  # run 99: 2 ms costs all, 1 s nothing
  nvidia-smi nvlink -s 2>&1 | awk '/^GPU/ {g = $2} /Link/ {n[g]++; s[g] = $(NF - 1) " " $NF}
    END {for (k in n) print "NVLINK GPU " k " " n[k] " links at " s[k]}' | sort | tee -a "$SUMMARY"
  # What this driver tells (read only) about the links' low-power state and its idle threshold.
  nvidia-smi nvlink -h 2>&1 | grep -iE "pow|pwr|thresh|sleep" | sed 's/^ */NVLINK option: /' | tee -a "$SUMMARY"
  for opt in $(nvidia-smi nvlink -h 2>&1 | grep -oE -- "--get[A-Za-z]*(Pow|Pwr|Thres)[A-Za-z]*" | sort -u); do
    nvidia-smi nvlink "$opt" 2>&1 | head -6 | sed "s/^/NVLINK $opt: /" | tee -a "$SUMMARY"  # "get" only: reads
  done
  ETAG=LINKS_HEAT engine "$N" --warmup 600 --steps 40 > /dev/null
  link_run() {  # link_run PERIOD_US
    case $1 in
      0) ETAG=LINKS_P0 alone "${win[@]}" ;;
      host*) ETAG="LINKS_P$1" trickle 65536 "${1#host}" host "${win[@]}" ;;
      *) ETAG="LINKS_P$1" trickle 65536 "$1" peer "${win[@]}" ;;
    esac
  }
  for p in "${periods[@]}" $(printf '%s\n' "${periods[@]}" | tac); do with_clocks "links $p" link_run "$p"; done
  python3 - "$SUMMARY" <<'PY' | tee -a "$SUMMARY"
import re, sys
rate, clock = {}, {}  # period -> per run: the slowest GPU's img/s; every GPU's MHz
run = []
for l in open(sys.argv[1]):
    m = re.match(r"LINKS_P(\w+)_ALONE gpu=(\d+) .*img_s=(\d+)", l)
    if m: run.append(int(m[3]))
    m = re.match(r"CLOCKS links (\w+): (.*)", l)
    if m:
        p = m[1]
        if run: rate.setdefault(p, []).append(min(run))
        clock.setdefault(p, []).extend(float(x) for x in re.findall(r"GPU \d+ (\d+) MHz", m[2]))
        run = []
base = sum(rate.get("0", [0])) / max(1, len(rate.get("0", [])))
for p in sorted(rate, key=lambda k: (k != "0", k.startswith("host"), -int(k.removeprefix("host")))):
    r, c = rate[p], clock.get(p, [])
    mean = sum(r) / len(r)
    cost = f"step {100 * (base / mean - 1):+.1f}% against no trickle" if p != "0" and base else "the base"
    what = ("no trickle" if p == "0" else f"64 KiB every {p.removeprefix('host')} us" +
            (" from the host (no NVLink)" if p.startswith("host") else " over NVLink"))
    print(f"LINKS {what}: slowest GPU {' '.join(map(str, r))} img/s, mean {mean:.0f}, "
          f"SM clock mean {sum(c) / max(1, len(c)):.0f} MHz: {cost}")
PY
fi

if has ops && ((N > 1)); then
  # Which kinds of op the N-GPU step's extra time lands on: every tape node timed (bench_train --ops, steps
  # synchronised) with every GPU alone at once (A) and in the N-GPU job (B), in the order A B B A after heating.
  win=(--warmup 150 --steps 100 --ops)
  : > "$LOG/ops.txt"
  ETAG=OPS_HEAT engine "$N" --warmup 400 --steps 20 > /dev/null
  for c in A B B A; do
    if [ "$c" = A ]; then ETAG=OPS_A alone "${win[@]}"; grep -h "^OPS rank=0/1" "$LOG"/alone*.log | sed 's/^/A /' >> "$LOG/ops.txt"
    else ETAG=OPS_B engine "$N" "${win[@]}" | grep "^OPS rank=0/" | sed 's/^/B /' >> "$LOG/ops.txt"; fi
  done
  python3 - "$LOG/ops.txt" <<'PY' | tee -a "$SUMMARY"
import collections, re, sys
ms = collections.defaultdict(lambda: collections.defaultdict(list))  # (cond, phase) -> kind -> values
for l in open(sys.argv[1]):
    m = re.match(r"([AB]) OPS rank=\S+ (\w+) ([\d.]+) ms per step:(.*)", l)
    if not m: continue
    ms[(m[1], m[2])]["(all)"].append(float(m[3]))
    for k, v in re.findall(r" (\S+) ([\d.]+) \(\d+\)", m[4]): ms[(m[1], m[2])][k].append(float(v))
mean = lambda v: sum(v) / len(v) if v else 0.0
for ph in ("forward", "backward", "reduction_tail", "optimizer"):
    a, b = ms[("A", ph)], ms[("B", ph)]
    rows = sorted(set(a) | set(b), key=lambda k: -abs(mean(b[k]) - mean(a[k])))
    print(f"OPS {ph} (ms per step, every GPU alone at once -> the N-GPU job): " + ", ".join(
        f"{k} {mean(a[k]):.3f} -> {mean(b[k]):.3f}" for k in rows if mean(a[k]) + mean(b[k]) > 0.005))
PY
fi

if has loader; then
  (cd "$ANCH" && PYTHONUNBUFFERED=1 timeout 300 python3 anchor_loader.py seedimg /tmp/corpus 6000 2>&1 | grep LOADER) | tee -a "$SUMMARY"
  timeout 200 "$BIN/bench_loader" --folder /tmp/corpus --workers 16 2>&1 | grep BENCH | tee -a "$SUMMARY"
fi

if has anchors; then
  (cd "$ANCH" && PYTHONUNBUFFERED=1 timeout 300 python3 anchor_ops.py 2>&1 | grep OPS) | tee -a "$SUMMARY"
  (cd "$ANCH" && PYTHONUNBUFFERED=1 timeout 400 python3 anchor_timm.py 790e12 vit_base_patch16_224:256:eager \
     vit_base_patch16_224:256:compile 2>&1 | grep ANCHOR) | tee -a "$SUMMARY"
fi

echo "================ summary ================"
cat "$SUMMARY"
# Where the device tool collects files (at most 8 come back): the summary and the full logs.
if [ -n "${OUT:-}" ]; then
  cp "$SUMMARY" "$OUT/" 2>/dev/null
  [ -f "$LOG/gpu_tests.log" ] && cp "$LOG/gpu_tests.log" "$OUT/"
  cat "$LOG"/bench_*.log > "$OUT/bench.log" 2>/dev/null
  [ -f "$LOG/fmnist_curves.png" ] && cp "$LOG/fmnist_curves.png" "$OUT/"
  [ -f "$LOG/fmnist/metrics.jsonl" ] && cp "$LOG/fmnist/metrics.jsonl" "$OUT/fmnist_metrics.jsonl"
  cat "$LOG"/fmnist.log "$LOG"/vitb.log > "$OUT/train.log" 2>/dev/null
  [ -f "$LOG/parity.log" ] && cp "$LOG/parity.log" "$OUT/"
  [ -f "$LOG/recipe_curves.png" ] && cp "$LOG/recipe_curves.png" "$OUT/"
  [ -f "$LOG/recipe.log" ] && cp "$LOG/recipe.log" "$OUT/"
  cat "$LOG"/equiv.log "$LOG"/resume.log > "$OUT/multi.log" 2>/dev/null
fi
