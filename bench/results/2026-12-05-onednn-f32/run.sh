#!/usr/bin/env bash
# Before (BEFORE=binary of 740718d) and after (build/bin/blip2) the float32 products on the OpenMP
# pool, interleaved, then the eager-torch peer at its best setting (its default). Quiet machine.
# Usage: BEFORE=/path/to/old/blip2 bash bench/results/2026-12-05-onednn-f32/run.sh   (from the repository root)
set -euo pipefail
OUT=$(dirname "$0"); A=build/bin/blip2; B=${BEFORE:?set BEFORE to the binary built at 740718d}
P="--preset vitl-opt125m --repeats 3 --train-batch 0 --json"
lscpu > "$OUT/lscpu.txt"
$B bench $P --dtype int8 > "$OUT/before-int8.json"
$A bench $P --dtype int8 > "$OUT/after-int8.json"
$B bench $P --dtype bfloat16 --bf16-gemm fp32 > "$OUT/before-bf16-widened.json"
$A bench $P --dtype bfloat16 --bf16-gemm fp32 > "$OUT/after-bf16-widened.json"
$A bench $P --dtype float32 > "$OUT/after-fp32.json"
$A bench $P --dtype bfloat16 > "$OUT/after-bf16-native.json"
/usr/bin/python3 bench/torch_peer.py --preset vitl-opt125m --repeats 3 --json > "$OUT/peer-default.json"
echo done
