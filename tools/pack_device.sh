#!/usr/bin/env bash
# Copies what the GPU machine needs into .devcarry/ (git-ignored; name it in the device tool's `carry`):
# stripped binaries, the one shared library the GPU machine lacks (toml++), and the PyTorch anchors.
set -euo pipefail
BUILD=${1:-build}
DST=.devcarry
rm -rf "$DST" && mkdir -p "$DST/bin/lib" "$DST/anchors"
# BINS: which programs to take (the carry limit is 64 MiB in all); default: everything.
for f in ${BINS:-vit_train vit_eval fmnist_convert plot_metrics ckpt_tool gpu_tests test_comm_transport bench_train "$BUILD"/bench_*}; do
  f=$(basename "$f")
  [ -x "$BUILD/$f" ] && strip -o "$DST/bin/$f" "$BUILD/$f"
done
cp -L /usr/lib/x86_64-linux-gnu/libtomlplusplus.so.3 "$DST/bin/lib/"
cp ../shared/anchors/*.py "$DST/anchors/" 2>/dev/null || cp "${VIT_SHARED_DIR:-../shared}"/anchors/*.py "$DST/anchors/"
# Fashion-MNIST's IDX files (the GPU machine has no Debian package) and the loader anchor's seed pictures.
[ "${FMNIST:-1}" = 1 ] && mkdir -p "$DST/fmnist" && cp /usr/share/datasets/fashion-mnist/*.gz "$DST/fmnist/"
cp -r "${VIT_SHARED_DIR:-../shared}/anchors/seedimg" "$DST/anchors/"
# The reference recipe's dataset (5 MB), for gpu_suite.sh's recipe section.
[ "${RECIPE_DATA:-1}" = 1 ] && cp -r "${VIT_SHARED_DIR:-../shared}/data/super-tiny-imagenet-5" "$DST/"
# The carry limit is 64 MiB; CUDA binaries compress about 6x, so the programs travel as one xz archive that
# gpu_suite.sh unpacks.
tar cf - -C "$DST" bin | xz -T2 -6 > "$DST/bin.tar.xz" && rm -rf "$DST/bin"
du -sh "$DST"
