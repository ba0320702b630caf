#!/bin/bash
# One device run, from the repository root on the GPU host: the native CUDA tests, the torch
# baselines and the kernel benchmark, all logs and JSON under $OUT (or bench/out).
# The binaries travel in .devbin/ as .xz (built here with
#   cmake -S . -B build-cuda -G Ninja -DNIBBLE_NATIVE_TESTS=ON -DNIBBLE_CUDA=ON && cmake --build build-cuda
# then bench/kernels/pack_bins.sh).
set -o pipefail
OUTDIR=${OUT:-bench/out}
mkdir -p "$OUTDIR"
BIN=.devbin
for f in test_quant_cuda bench_quant_cuda; do
  if [ -f "$BIN/$f.xz" ]; then
    python3 -c "import lzma,sys; open('/tmp/$f','wb').write(lzma.open('$BIN/$f.xz').read())" && chmod +x /tmp/$f
  else
    cp "$BIN/$f" /tmp/$f
  fi
done
nvidia-smi --query-gpu=name,clocks.sm,clocks.mem,temperature.gpu,power.draw --format=csv
/tmp/test_quant_cuda "$@" > "$OUTDIR/test.log" 2>&1
trc=$?
grep -E "FAIL|summary|seed|exception" "$OUTDIR/test.log" | head -60
PYTHONUNBUFFERED=1 python3 bench/kernels/baselines.py "$OUTDIR/baselines.json" 2>&1 | tee "$OUTDIR/baselines.log"
/tmp/bench_quant_cuda --baselines "$OUTDIR/baselines.json" --json "$OUTDIR/bench.json" 2>&1 | tee "$OUTDIR/bench.log"
brc=$?
echo "test exit $trc, bench exit $brc"
exit $(( trc != 0 || brc != 0 ))
