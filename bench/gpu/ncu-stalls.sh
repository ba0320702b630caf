#!/bin/sh
# What the warps of a decode kernel wait on, per issued instruction (ncu's
# smsp__average_warps_issue_stalled_*_per_issue_active metrics; kernels serialized, no graph),
# for a few launches of the kernels matching a name, on the GPU host:
#   sh bench/gpu/ncu-stalls.sh "<model> <mode> <batch>" <kernel regex> <launches to skip> <count>
# e.g. sh bench/gpu/ncu-stalls.sh "xl nf4 8" k_decode_mma 40 4   (one XL layer's four GEMVs)
# Needs the carried Node.js and addon (device-check.sh); writes the checkpoints if missing.
# Prints the reasons above 0.05 cycles an instruction; full log: $OUT/ncu-stalls-*.log
OUT=${OUT:-/tmp/gpu-out}
mkdir -p "$OUT"
set -- $1 "$2" "$3" "$4"
m=$1 mode=$2 b=$3 kre=$4 skip=$5 count=$6
sh .gpu/unpack.sh >/dev/null && xz -dc .gpu/gpt2/bins.tar.xz | tar -C /tmp -xf - || exit 1
export NIBBLE_ADDON=${NIBBLE_ADDON:-/tmp/nibble.node}
node bench/generate-gpu.mjs --write-only --models "$m" >/dev/null 2>&1 || exit 1
log="$OUT/ncu-stalls-$m-$mode-b$b-$kre.log"
NIBBLE_CUDA_GRAPH=0 timeout 240 ncu --clock-control none --cache-control none -k "regex:$kre" \
  --launch-skip "$skip" --launch-count "$count" \
  --metrics "regex:smsp__average_warps_issue_stalled_.*_per_issue_active\.ratio" \
  node bench/gpu/profile-step.mjs "/tmp/nibble-bench/gpt2-$m-random-f16" "$mode" "$b" > "$log" 2>&1
echo "== $m $mode B=$b $kre (rc=$?)"
grep -E "$kre|stalled" "$log" | grep -v "==PROF==" | sed 's/smsp__average_warps_issue_stalled_//; s/_per_issue_active.ratio//' |
  awk -v k="$kre" '$0 ~ k {print substr($0, 1, 100); next} $NF + 0 > 0.05 {print}'
