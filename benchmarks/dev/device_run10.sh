#!/usr/bin/env bash
# Run 9's 4-rank call stopped after 128 B (killed at 60 s); the same call
# twice more with RINGREDUCE_TIMEOUT=20, so a stuck rank names itself. Lands
# in $OUT.
set -uo pipefail
cd "$(dirname "$0")/../.."
T0=$SECONDS
source benchmarks/device_env.sh
RINGREDUCE_CUDA=0 RINGREDUCE_UCX=0 python3 setup.py build_ext --inplace > "$OUT/build.log" 2>&1 || { tail -40 "$OUT/build.log"; exit 1; }
echo "== build: $((SECONDS - T0)) s"
for K in 1 2; do
  RINGREDUCE_TIMEOUT=20 timeout 50 mpirun -np 4 --bind-to core --map-by core -x PYTHONPATH \
    -x PYTHONUNBUFFERED -x RINGREDUCE_TIMEOUT \
    python3 -m ringreduce.bench --device cpu --sizes 8..64K --outofplace-only -w 20 -n 2000 \
    --budget 0.15 --min-iters 3 --no-progress --backends ringreduce,mpi \
    --json "$OUT/cpu-small-4rank-16core-$K.json" > "$OUT/small-4-$K.log" 2>&1
  echo "== try $K: exit $? ($((SECONDS - T0)) s)"; grep -E "Error|error|Timeout|timed out|rank [0-9]" "$OUT/small-4-$K.log" | head -8
  grep "time at 8" "$OUT/small-4-$K.log"
done
