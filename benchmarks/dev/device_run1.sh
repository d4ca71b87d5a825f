#!/usr/bin/env bash
# Development run on the one-H200 machine: the reduction rate of every
# dtype x op and the device-vs-host parity tests, then a first look at small
# host all-reduces at 16 and 8 CPU ranks against MPI (to set the selector's
# thresholds). Everything lands in $OUT/run1.tgz.
set -uo pipefail
cd "$(dirname "$0")/../.."
FINAL=$OUT
export OUT=/tmp/run1
mkdir -p "$OUT"
timeout 420 bash benchmarks/device_reduce_rate.sh
source benchmarks/device_env.sh
for N in 16 8; do
  timeout 75 mpirun -np $N --bind-to core --map-by core -x PYTHONPATH python3 -m ringreduce.bench \
    --device cpu --sizes 8..2M --outofplace-only -w 3 -n 200 --budget 0.1 --min-iters 5 --no-progress \
    --backends ringreduce,mpi --json "$OUT/cpu-small-${N}rank.json" > "$OUT/cpu-small-${N}rank.log" 2>&1
  python3 -m ringreduce.bench.targets "$OUT/cpu-small-${N}rank.json" 2>&1 | tail -30
done
tar czf "$FINAL/run1.tgz" -C /tmp run1
