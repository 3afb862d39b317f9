#!/usr/bin/env bash
# Every precision of blip2 bench and the eager-torch peer at its best setting (its default), one
# after the other on a quiet machine: the ratios of docs/performance.md "Against HuggingFace".
# Usage: bash bench/results/2026-12-05-final/run.sh   (from the repository root, after scripts/build)
set -euo pipefail
OUT=$(dirname "$0"); A=build/bin/blip2
P="--preset vitl-opt125m --repeats 3 --train-batch 0 --json"
lscpu > "$OUT/lscpu.txt"
/usr/bin/python3 bench/torch_peer.py --check ../shared/golden/opt > "$OUT/peer-golden-check.json"
$A bench $P --dtype float32 > "$OUT/blip2-fp32.json"
$A bench $P --dtype float32 --fp32-gemm openblas > "$OUT/blip2-fp32-openblas.json"
$A bench $P --dtype int8 > "$OUT/blip2-int8.json"
$A bench $P --dtype bfloat16 > "$OUT/blip2-bf16-native.json"
$A bench $P --dtype bfloat16 --bf16-gemm fp32 > "$OUT/blip2-bf16-widened.json"
/usr/bin/python3 bench/torch_peer.py --preset vitl-opt125m --repeats 3 --json > "$OUT/peer-default.json"
echo done
