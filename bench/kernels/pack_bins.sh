#!/bin/bash
# Packs the native test and bench binaries (stripped, xz) into .devbin/ for a device run:
# together they stay far under the 64 MiB a run may carry.
set -e
BUILD=${1:-build-cuda}
mkdir -p .devbin
for f in test_quant_cuda bench_quant_cuda; do
  cp "$BUILD/$f" ".devbin/$f"
  strip ".devbin/$f"
  xz -f -9 -T2 ".devbin/$f"
done
ls -la .devbin
