#!/bin/sh
# Same-run A/B of kernel switches (environment variables) on the GPU host, configurations
# alternated so a drifting host clock or a busy CPU shows as spread, not as a difference:
#   sh bench/gpu/ab.sh ROUNDS "xl fp16 1" "xl nf4 8" -- "base:NIBBLE_CUDA_FUSED_LN=0" "fused:"
# Each case is "<model> <mode> <batch>"; each configuration "<label>:<VAR=value ...>".
# Needs the carried Node.js and addon (device-check.sh) and the bench checkpoints
# (bench/generate-gpu.mjs --write-only). Prints one line per run: label case decode queued.
rounds=$1; shift
cases=""
while [ "$#" -gt 0 ] && [ "$1" != "--" ]; do cases="$cases|$1"; shift; done
shift
r=1
while [ "$r" -le "$rounds" ]; do
  for conf in "$@"; do
    label=${conf%%:*}; vars=${conf#*:}
    echo "$cases" | tr '|' '\n' | while read -r m mode b; do
      [ -z "$m" ] && continue
      res=$(env $vars node bench/gpu/ab-step.mjs "/tmp/nibble-bench/gpt2-$m-random-f16" "$mode" "$b" 2>&1 | tail -1)
      echo "$label $m $mode B=$b $res"
    done
  done
  r=$((r + 1))
done
