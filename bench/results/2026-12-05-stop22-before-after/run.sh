#!/usr/bin/env bash
# This stop's engine before / after, one after the other on a quiet machine. BEFORE: a build whose
# inference engine is the stop's start (d110f76; the binary used was 6c9e023's, which adds only
# shapes ViT pretraining code); AFTER: the stop's end.
# Usage: BEFORE=... AFTER=... bash bench/results/2026-12-05-stop22-before-after/run.sh
set -euo pipefail
OUT=$(dirname "$0")
P="--preset vitl-opt125m --repeats 3 --train-batch 0 --json"
for d in float32 int8; do
  "$BEFORE" bench $P --dtype $d > "$OUT/before-$d.json"
  "$AFTER" bench $P --dtype $d > "$OUT/after-$d.json"
done
echo done
# then once more for int8 in the other order (after first): after-int8-2.json, before-int8-2.json
