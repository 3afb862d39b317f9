#!/usr/bin/env bash
# Vision batch 8 per image before / after running many images in chunks (bfb5490), interleaved
# twice on a quiet machine. BEFORE / AFTER: blip2 binaries built without / with the change.
# Usage: BEFORE=... AFTER=... bash bench/results/2026-12-05-vision-chunks/run.sh
set -euo pipefail
OUT=$(dirname "$0")
P="--preset vitl-opt125m --repeats 3 --train-batch 0 --json"
for i in 1 2; do
  for d in float32 int8; do
    "$BEFORE" bench $P --dtype $d > "$OUT/before-$d-$i.json"
    "$AFTER" bench $P --dtype $d > "$OUT/after-$d-$i.json"
  done
done
echo done
