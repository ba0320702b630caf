#!/bin/sh
# One complete GPU check + benchmark on the GPU host (no Node.js, no compiler needed there).
# Prepare here (repo root):
#   npx cmake-js compile -O build-gpu --CDNIBBLE_CUDA_ARCHS=90-real --CDNIBBLE_NATIVE_TESTS=ON && npx tsup
#   sh ../shared/gpu/node-bundle.sh      # writes .gpu/node.xz + .gpu/unpack.sh
#   mkdir -p .gpu/gpt2 && tar -C build-gpu --transform 's,.*/,,' -cf - Release/nibble.node test_gpt2_cuda \
#     test_sampling_cuda | xz -9 -T4 > .gpu/gpt2/bins.tar.xz
# (90-real and one xz archive: the carried files plus the repo must stay under the device's
# 64 MiB; the binaries share most of their code and compress to ~6 MB together. Other files
# in the archive, e.g. a second addon for an A/B with ab.sh, land in /tmp too.)
# Run there with carry [.gpu, dist, node_modules/@huggingface/tokenizers]:
#   sh bench/gpu/device-check.sh
# Logs and bench JSON go to $OUT (or /tmp/gpu-out).
OUT=${OUT:-/tmp/gpu-out}
mkdir -p "$OUT"
sh .gpu/unpack.sh >/dev/null || exit 1
xz -dc .gpu/gpt2/bins.tar.xz | tar -C /tmp -xf - || exit 1
/tmp/test_gpt2_cuda > "$OUT/native.log" 2>&1; echo "native rc=$?"; grep -v "^ok" "$OUT/native.log" | tail -4
# int8 decode layers again through the one-kernel GEMV the preparation kernel replaces
NIBBLE_CUDA_INT8_PREP=0 /tmp/test_gpt2_cuda > "$OUT/native-int8-one-kernel.log" 2>&1
echo "native (NIBBLE_CUDA_INT8_PREP=0) rc=$?"; tail -1 "$OUT/native-int8-one-kernel.log"
# 4-bit decode layers with the layernorm fused into the GEMV (off by default)
NIBBLE_CUDA_FUSE_LN_4BIT=1 /tmp/test_gpt2_cuda > "$OUT/native-4bit-fused-ln.log" 2>&1
echo "native (NIBBLE_CUDA_FUSE_LN_4BIT=1) rc=$?"; tail -1 "$OUT/native-4bit-fused-ln.log"
if [ -f /tmp/test_sampling_cuda ]; then
  /tmp/test_sampling_cuda > "$OUT/native-sampling.log" 2>&1; echo "native sampling rc=$?"; tail -3 "$OUT/native-sampling.log"
fi
export NIBBLE_ADDON=/tmp/nibble.node
timeout 150 node --expose-gc test/gpu/check-gpu.mjs --loops 1000 > "$OUT/check.log" 2>&1; echo "check rc=$?"
tail -23 "$OUT/check.log"
timeout 150 node test/gpu/check-sampling.mjs > "$OUT/sampling.log" 2>&1; echo "sampling rc=$?"
grep -A40 "==== check-sampling results" "$OUT/sampling.log" | grep -c "^PASS" | sed 's/^/sampling checks passed: /'
grep -A40 "==== check-sampling results" "$OUT/sampling.log" | grep -v "^PASS" | tail -12
timeout 200 node bench/generate-gpu.mjs --models 124m,xl --json "$OUT/bench.json" > "$OUT/bench.log" 2>&1; echo "bench rc=$?"
tail -6 "$OUT/bench.log"
