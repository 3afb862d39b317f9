#!/usr/bin/env bash
# int8 before / after prepacking the many-row products' weights (int8_gemm's pack cache), interleaved
# twice on a quiet machine. BEFORE / AFTER: blip2 binaries built without / with it.
# Usage: BEFORE=... AFTER=... bash bench/results/2026-12-05-int8-prepack/run.sh
set -euo pipefail
OUT=$(dirname "$0")
P="--preset vitl-opt125m --repeats 3 --train-batch 0 --json --dtype int8"
for i in 1 2; do
  "$BEFORE" bench $P > "$OUT/before-$i.json"
  "$AFTER" bench $P > "$OUT/after-$i.json"
done
echo done
