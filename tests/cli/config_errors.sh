#!/usr/bin/env bash
# vit_train refuses bad configuration input with a non-zero exit and ONE line on stderr that names the
# problem (the file, key or flag), and --print-config prints a resolved config that reads back unchanged.
# Usage: config_errors.sh BUILD_DIR SOURCE_DIR
set -u
build=${1:?build dir}
src=${2:?source dir}
exe="$build/vit_train"

if [[ ! -x "$exe" ]]; then
  echo "SKIP: $exe does not exist yet"
  exit 0
fi
if ! "$exe" --help >/dev/null 2>&1; then
  echo "SKIP: $exe does not accept --help yet (placeholder trainer)"
  exit 0
fi

cd "$src" || exit 1
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
failures=0

# expect_error NAME FRAGMENT... -- ARGS...: non-zero exit, exactly one non-empty stderr line holding
# every fragment.
expect_error() {
  local name=$1; shift
  local fragments=()
  while [[ $1 != -- ]]; do fragments+=("$1"); shift; done
  shift
  "$exe" "$@" >"$tmp/out" 2>"$tmp/err"
  local rc=$?
  local lines
  lines=$(grep -c . "$tmp/err")
  local ok=1
  if [[ $rc -eq 0 ]]; then echo "FAIL [$name]: exit 0, expected an error"; ok=0; fi
  if [[ $lines -ne 1 ]]; then echo "FAIL [$name]: stderr has $lines lines, expected 1:"; sed 's/^/    /' "$tmp/err"; ok=0; fi
  for f in "${fragments[@]}"; do
    if ! grep -qF -- "$f" "$tmp/err"; then echo "FAIL [$name]: stderr lacks '$f': $(head -c 400 "$tmp/err")"; ok=0; fi
  done
  if [[ $ok -eq 1 ]]; then echo "ok   [$name]: $(head -n 1 "$tmp/err")"; else failures=$((failures + 1)); fi
}

cfg=configs/tests_tiny_cpu.toml
printf '[model]\nembed_dimm = 64\n' >"$tmp/unknown_key.toml"
printf '[model\ndepth = 2\n' >"$tmp/malformed.toml"
printf '[model]\ndepth = "two"\n' >"$tmp/wrong_type.toml"

expect_error "missing file" "cannot open config" "no_such_config.toml" -- "$tmp/no_such_config.toml"
expect_error "unknown key in file" "unknown_key.toml" "model.embed_dimm" "model.embed_dim" -- "$tmp/unknown_key.toml"
expect_error "malformed TOML" "malformed.toml:1:" "malformed TOML" -- "$tmp/malformed.toml"
expect_error "wrong type in file" "model.depth" "expects an integer" -- "$tmp/wrong_type.toml"
expect_error "override without =" "override 'model.depth'" "key=value" -- "$cfg" model.depth
expect_error "unknown override key" "model.embed_dimm" "did you mean 'model.embed_dim'" -- "$cfg" model.embed_dimm=3
expect_error "override out of range" "model.depth = 0" "out of range" -- "$cfg" model.depth=0
expect_error "cross-field check" "model.num_heads = 5" "not divisible" -- "$cfg" model.num_heads=5
expect_error "unknown flag" "--bogus" -- "$cfg" --bogus
expect_error "no config" "missing config" -- model.depth=3

# --print-config: exit 0, the override applied, and the printed TOML reads back to the same text.
if "$exe" "$cfg" model.depth=3 --print-config >"$tmp/resolved.toml" 2>"$tmp/err"; then
  if grep -qx 'depth = 3' "$tmp/resolved.toml" && grep -qx '\[model\]' "$tmp/resolved.toml"; then
    if "$exe" "$tmp/resolved.toml" --print-config >"$tmp/again.toml" 2>>"$tmp/err" && cmp -s "$tmp/resolved.toml" "$tmp/again.toml"; then
      echo "ok   [print-config round trip]"
    else
      echo "FAIL [print-config round trip]: printing the printed config changed it"; failures=$((failures + 1))
    fi
  else
    echo "FAIL [print-config]: output lacks [model] / depth = 3"; failures=$((failures + 1))
  fi
else
  echo "FAIL [print-config]: non-zero exit: $(head -c 400 "$tmp/err")"; failures=$((failures + 1))
fi

if [[ $failures -ne 0 ]]; then
  echo "$failures check(s) failed"
  exit 1
fi
echo "all config error checks passed"
