#!/bin/bash
# plot_metrics end to end: a small metrics file (falling loss, evaluations, a malformed line) becomes a PNG
# of the requested size; missing, unusable input and an unwritable output are refused with exit 1.
#   usage: plot_metrics.sh BUILD_DIR SOURCE_DIR
set -euo pipefail
BUILD=${1:?build dir}
TOOL=$BUILD/plot_metrics
if [ ! -x "$TOOL" ]; then
  echo "SKIP: $TOOL not built"
  exit 0
fi
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
fail() { echo "FAIL: $*"; exit 1; }

# 40 training lines with a falling loss and a warm-up-then-decay lr, an evaluation every 10 steps, one
# line of garbage, one with an unknown string-valued key (ignored) and a blank line (not an error).
M=$T/metrics.jsonl
: >"$M"
for i in $(seq 1 40); do
  loss=$(awk -v i="$i" 'BEGIN { printf "%.6f", 2.3 / (1 + 0.1 * i) }')
  lr=$(awk -v i="$i" 'BEGIN { printf "%.6e", (i < 5 ? i / 5 : (45 - i) / 40) * 1e-3 }')
  echo "{\"step\": $i, \"epoch\": 0.01, \"loss\": $loss, \"lr\": $lr, \"grad_norm\": 1.2, \"img_per_s\": 300.0, \"mfu\": 0.001, \"mem_mib\": 23.0, \"data_wait_frac\": 0.01}" >>"$M"
  if [ $((i % 10)) = 0 ]; then
    echo "{\"step\": $i, \"val_loss\": $loss, \"val_top1\": 0.$((50 + i)), \"val_top5\": 0.$((58 + i)), \"val_count\": 10000}" >>"$M"
  fi
done
echo '{"step": 41, "loss": oops}' >>"$M"
echo '{"step": 42, "phase": "train", "loss": 0.9}' >>"$M"
echo >>"$M"

# Width and height of a PNG from its IHDR chunk (big-endian at bytes 16..23).
png_size() {
  od -An -tu1 -j16 -N8 "$1" | awk '{ printf "%d %d", (($1 * 256 + $2) * 256 + $3) * 256 + $4, (($5 * 256 + $6) * 256 + $7) * 256 + $8 }'
}
check_png() {  # FILE W H
  [ -s "$1" ] || fail "no PNG written at $1"
  [ "$(od -An -tx1 -N8 "$1" | tr -d ' \n')" = 89504e470d0a1a0a ] || fail "$1 does not start with the PNG signature"
  [ "$(od -An -c -j12 -N4 "$1" | tr -d ' \n')" = IHDR ] || fail "$1 has no IHDR chunk first"
  [ "$(png_size "$1")" = "$2 $3" ] || fail "$1 is $(png_size "$1"), expected $2 $3"
}

"$TOOL" "$M" "$T/a.png" --width 640 --height 900 >"$T/out" || fail "plot_metrics exited $?: $(cat "$T/out")"
cat "$T/out"
check_png "$T/a.png" 640 900
grep -q "1 malformed" "$T/out" || fail "the malformed line was not counted: $(cat "$T/out")"
grep -q "steps 1\.\.42" "$T/out" || fail "expected steps 1..42 (the unknown key must be ignored): $(cat "$T/out")"

"$TOOL" "$M" "$T/b.png" >/dev/null || fail "default size"
check_png "$T/b.png" 1000 1200
"$TOOL" "$M" "$T/c.png" --height 333 --width 421 >/dev/null || fail "odd size"
check_png "$T/c.png" 421 333

# The image holds the curves, not just a background: decode it (zlib + PNG row filters) and count colours.
if command -v python3 >/dev/null; then
  python3 - "$T/c.png" <<'EOF' || fail "decoded image check"
import struct, sys, zlib
data = open(sys.argv[1], "rb").read()
pos, idat, w = 8, b"", 0
while pos < len(data):
    n, kind = struct.unpack(">I4s", data[pos:pos + 8])
    body = data[pos + 8:pos + 8 + n]
    if kind == b"IHDR":
        w, h, depth, ctype = struct.unpack(">IIBB", body[:10])
        assert (depth, ctype) == (8, 2), f"expected 8-bit RGB, got depth {depth} colour type {ctype}"
    elif kind == b"IDAT":
        idat += body
    pos += 12 + n
raw, stride, prev, colours = zlib.decompress(idat), 3 * w, bytearray(3 * w), set()
assert len(raw) == h * (stride + 1), f"{len(raw)} bytes of pixel data for {w}x{h}"
for y in range(h):
    f, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
    for i in range(stride):
        a = line[i - 3] if i >= 3 else 0
        b, c = prev[i], (prev[i - 3] if i >= 3 else 0)
        if f == 1: line[i] = (line[i] + a) & 255
        elif f == 2: line[i] = (line[i] + b) & 255
        elif f == 3: line[i] = (line[i] + (a + b) // 2) & 255
        elif f == 4:
            p = a + b - c
            pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
            line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
    colours.update(bytes(line[i:i + 3]) for i in range(0, stride, 3))
    prev = line
assert bytes((255, 255, 255)) in colours, "no white background"
# Five series colours plus text, grid and frame: far more than a handful of distinct colours.
assert len(colours) > 20, f"only {len(colours)} distinct colours: nothing drawn?"
print(f"decoded {w}x{h}: {len(colours)} distinct colours")
EOF
else
  echo "python3 not found: decoded image check skipped"
fi

# Errors: one line naming the file, exit 1.
set +e
"$TOOL" "$T/missing.jsonl" "$T/x.png" 2>"$T/err"
rc=$?
set -e
[ $rc = 1 ] || fail "missing input gave exit $rc, expected 1"
grep -q "missing.jsonl" "$T/err" || fail "error does not name the file: $(cat "$T/err")"
[ "$(wc -l <"$T/err")" = 1 ] || fail "error is not one line: $(cat "$T/err")"
[ ! -e "$T/x.png" ] || fail "a PNG was written for a missing input"

printf 'not json\n{"loss": 1.0}\n' >"$T/bad.jsonl"
set +e
"$TOOL" "$T/bad.jsonl" "$T/x.png" 2>"$T/err"
rc=$?
set -e
[ $rc = 1 ] || fail "file without a usable line gave exit $rc, expected 1"
grep -q "bad.jsonl" "$T/err" || fail "error does not name the file: $(cat "$T/err")"

set +e
"$TOOL" "$M" "$T/no/such/dir/x.png" 2>"$T/err"
rc=$?
set -e
[ $rc = 1 ] || fail "unwritable output gave exit $rc, expected 1"
grep -q "no/such/dir/x.png" "$T/err" || fail "error does not name the output: $(cat "$T/err")"

"$TOOL" "$M" "$T/x.png" --width 12 2>/dev/null && fail "width 12 accepted"
echo "PASS: plot_metrics"
