#!/bin/sh
# Where a decode step's kernels spend their time (ncu sections: speed of light, occupancy,
# warp states; the stall reasons in cycles per issued instruction, those above 0.05), for a few
# launches of the kernels matching a name, on the GPU host:
#   sh bench/gpu/ncu-detail.sh "<model> <mode> <batch>" <kernel regex> <launches to skip> <count>
# e.g. sh bench/gpu/ncu-detail.sh "xl nf4 1" k_decode_gemv 192 4
# Needs the carried Node.js, addon and checkpoints as profile.sh. Full report: $OUT/ncu-detail-*.log
OUT=${OUT:-/tmp/gpu-out}
mkdir -p "$OUT"
set -- $1 "$2" "$3" "$4"
m=$1 mode=$2 b=$3 kre=$4 skip=$5 count=$6
log="$OUT/ncu-detail-$m-$mode-b$b-$kre.log"
NIBBLE_CUDA_GRAPH=0 timeout 240 ncu --clock-control none --cache-control none -k "regex:$kre" \
  --launch-skip "$skip" --launch-count "$count" --section SpeedOfLight --section LaunchStats --section Occupancy \
  --section WarpStateStats --section SchedulerStats --section MemoryWorkloadAnalysis \
  --metrics "regex:smsp__average_warps_issue_stalled_.*_per_issue_active\.ratio" \
  node bench/gpu/profile-step.mjs "/tmp/nibble-bench/gpt2-$m-random-f16" "$mode" "$b" > "$log" 2>&1
echo "== $m $mode B=$b $kre (rc=$?)"
grep -E "^  [a-zA-Z_].*\(|Duration|Memory Throughput|DRAM Throughput|Registers Per|Achieved Occupancy|Theoretical Occupancy|Waves Per SM|Grid Size|Dynamic Shared|Block Limit|Issued Warp|No Eligible|Active Warps Per|Eligible Warps|Warp Cycles Per Issued|Stall|L1/TEX Hit|L2 Hit|stalled_" "$log" |
  sed 's/smsp__average_warps_issue_stalled_/stalled: /; s/_per_issue_active.ratio//' |
  awk '!/stalled: / || $NF + 0 > 0.05' | head -300
