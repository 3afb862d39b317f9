#!/usr/bin/env bash
# blip2 bench and the eager-torch peer (bench/torch_peer.py) one after the other on a quiet machine.
# Usage: bash bench/results/2026-12-05-torch-peer/run.sh [PRESET] [REPEATS]  (from the repository root)
set -euo pipefail
P=${1:-vitl-opt125m}; N=${2:-3}
OUT=$(dirname "$0"); B=build/bin/blip2; PY=/usr/bin/python3
lscpu > "$OUT/lscpu.txt"
$PY bench/torch_peer.py --check ../shared/golden/opt > "$OUT/peer-golden-check.json"
for d in float32 int8; do
  $B bench --preset "$P" --repeats "$N" --dtype $d --json > "$OUT/blip2-$P-$d.json"
done
$PY bench/torch_peer.py --preset "$P" --repeats "$N" --json > "$OUT/peer-$P-default.json"
$PY bench/torch_peer.py --preset "$P" --repeats "$N" --threads 2 --json > "$OUT/peer-$P-t2.json"
OPENBLAS_NUM_THREADS=1 $PY bench/torch_peer.py --preset "$P" --repeats "$N" --threads 2 --json > "$OUT/peer-$P-t2-blas1.json"
OPENBLAS_NUM_THREADS=1 $PY bench/torch_peer.py --preset "$P" --repeats "$N" --json > "$OUT/peer-$P-t1-blas1.json"
echo done
