#!/bin/sh
# The decode step's kernel timeline as it runs inside the CUDA graph (native/cuda/probe.cuh), on
# the GPU host. Needs an addon built with the probe (cmake -DNIBBLE_CUDA_PROBE=ON, carried as
# /tmp/nibble_probe.node in .gpu/gpt2/bins.tar.xz), the carried Node.js (device-check.sh) and
# the bench checkpoints (written here if missing):
#   sh bench/gpu/probe-run.sh ["xl fp16 1" "xl nf4 1" ...]
# Prints bench/gpu/probe.py's tables for each case (model, mode, batch).
OUT=${OUT:-/tmp/gpu-out}
mkdir -p "$OUT"
sh .gpu/unpack.sh >/dev/null && xz -dc .gpu/gpt2/bins.tar.xz | tar -C /tmp -xf - || exit 1
export NIBBLE_ADDON=${NIBBLE_ADDON:-/tmp/nibble_probe.node}
node bench/generate-gpu.mjs --write-only --models 124m,xl >/dev/null 2>&1 || exit 1
[ "$#" -gt 0 ] || set -- "xl fp16 1" "xl nf4 1" "xl int8 1" "124m nf4 1" "xl nf4 8"
for spec in "$@"; do
  set -- $spec
  f=$OUT/probe-$1-$2-$3.bin
  NIBBLE_CUDA_PROBE=$f timeout 120 node bench/gpu/profile-step.mjs "/tmp/nibble-bench/gpt2-$1-random-f16" "$2" "$3" 24 > "$f.log" 2>&1
  echo "== $spec"
  python3 bench/gpu/probe.py "$f" || tail -3 "$f.log"
  rm -f "$f" "$f.names" "$f.log"
done
