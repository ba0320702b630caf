#!/bin/sh
# Per-kernel GPU times of a few decode steps (ncu), on the GPU host, with the carried
# Node.js and addon (see device-check.sh for what to carry):
#   sh bench/gpu/profile.sh "124m nf4" "xl fp16" "xl nf4 8" ...   (third word: batch rows, default 1)
# Logs go to $OUT/ncu-<model>-<mode>.log; a one-line-per-kernel table is printed.
OUT=${OUT:-/tmp/gpu-out}
mkdir -p "$OUT"
sh .gpu/unpack.sh >/dev/null || exit 1
xz -dc .gpu/gpt2/bins.tar.xz | tar -C /tmp -xf - || exit 1
export NIBBLE_ADDON=/tmp/nibble.node
node bench/generate-gpu.mjs --write-only --models 124m,xl > /dev/null || exit 1
for spec in "$@"; do
  set -- $spec
  b=${3:-1}
  log="$OUT/ncu-$1-$2-b$b.log"
  NIBBLE_CUDA_GRAPH=0 timeout 240 ncu --clock-control none --cache-control none --metrics gpu__time_duration.sum \
    --print-summary per-kernel node bench/gpu/profile-step.mjs "/tmp/nibble-bench/gpt2-$1-random-f16" "$2" "$b" > "$log" 2>&1
  echo "== $1 $2 B=$b (rc=$?): kernel | launches | avg us"
  # ncu's summary: a kernel's name line, then "gpu__time_duration.sum  unit  min  max  avg" rows.
  awk '/^  [a-zA-Z_].*\(/ {name=$0; sub(/^ +/, "", name); sub(/\(.*/, "", name)} /Invocations/ {}
       /gpu__time_duration.sum/ {u=$2; v=$NF; gsub(",", "", v); if (u=="nsecond") v=v/1000; if (u=="msecond") v=v*1000; printf "%-60s %8.2f\n", substr(name,1,60), v}' "$log" | sort -k2 -n -r | head -25
done
