#!/usr/bin/env bash
# This AVX-512 CPU timed as an AVX2-only one (no AVX-512, no native bf16, no VNNI): every library
# capped to AVX2 at once: our kernels (BLIP2_MAX_ISA), oneDNN (DNNL_MAX_CPU_ISA), OpenBLAS
# (OPENBLAS_CORETYPE) and libtorch's ATen kernels (ATEN_CPU_CAPABILITY); the eager-torch peer under
# the same caps. One after the other on a quiet machine. Zen 4 runs a 512-bit FMA as two 256-bit
# halves, so this is the AVX2 code paths at this core's speed, not any particular older CPU.
# Usage: bash bench/results/2026-12-05-avx2-capped/run.sh   (from the repository root, after scripts/build)
set -euo pipefail
OUT=$(dirname "$0"); A=build/bin/blip2
export BLIP2_MAX_ISA=avx2 DNNL_MAX_CPU_ISA=AVX2 OPENBLAS_CORETYPE=Haswell ATEN_CPU_CAPABILITY=avx2
P="--preset vitl-opt125m --repeats 3 --train-batch 0 --json"
lscpu > "$OUT/lscpu.txt"; env | grep -E "^(BLIP2_MAX_ISA|DNNL_MAX_CPU_ISA|OPENBLAS_CORETYPE|ATEN_CPU_CAPABILITY)=" > "$OUT/caps.txt"
$A bench $P --dtype float32 > "$OUT/blip2-fp32.json"
$A bench $P --dtype float32 --fp32-gemm onednn > "$OUT/blip2-fp32-onednn.json"
$A bench $P --dtype bfloat16 > "$OUT/blip2-bf16.json"
$A bench $P --dtype int8 > "$OUT/blip2-int8.json"
/usr/bin/python3 bench/torch_peer.py --preset vitl-opt125m --repeats 3 --json > "$OUT/peer-default.json"
echo done
