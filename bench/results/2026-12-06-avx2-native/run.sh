#!/usr/bin/env bash
# A CPU without AVX-512 (AMD EPYC, AVX2 + FMA, no AVX-512, no VNNI, no native bf16), measured as it
# is: no ISA caps. The same runs as 2026-12-05-avx2-capped (which emulated such a CPU on a Zen 4),
# one after the other on a quiet machine, with the eager-torch peer last.
# Usage: bash bench/results/2026-12-06-avx2-native/run.sh   (from the repository root, after scripts/build)
set -euo pipefail
OUT=$(dirname "$0"); A=build/bin/blip2
P="--preset vitl-opt125m --repeats 3 --train-batch 0 --json"
lscpu > "$OUT/lscpu.txt"
$A -v bench $P --dtype float32 > "$OUT/blip2-fp32.json" 2> "$OUT/blip2-fp32.log"
$A -v bench $P --dtype float32 --fp32-gemm onednn > "$OUT/blip2-fp32-onednn.json" 2> "$OUT/blip2-fp32-onednn.log"
$A -v bench $P --dtype bfloat16 > "$OUT/blip2-bf16.json" 2> "$OUT/blip2-bf16.log"
$A -v bench $P --dtype int8 > "$OUT/blip2-int8.json" 2> "$OUT/blip2-int8.log"
/usr/bin/python3 bench/torch_peer.py --preset vitl-opt125m --repeats 3 --json > "$OUT/peer-default.json"
echo done
