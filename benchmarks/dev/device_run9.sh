#!/usr/bin/env bash
# One short call on the one-H200 machine's 16-core host, CPU only (about 2
# minutes): a host-only build, then 4 and 8 ranks, 8 B to 64 KiB, ringreduce
# beside MPI_Allreduce, after the latency path lost a helper call (the
# small-call misses of run 8). Lands in $OUT.
set -uo pipefail
cd "$(dirname "$0")/../.."
T0=$SECONDS
source benchmarks/device_env.sh
RINGREDUCE_CUDA=0 RINGREDUCE_UCX=0 python3 setup.py build_ext --inplace > "$OUT/build.log" 2>&1 || { tail -40 "$OUT/build.log"; exit 1; }
echo "== build: $((SECONDS - T0)) s"
for N in 4 8; do
  timeout 60 mpirun -np "$N" --bind-to core --map-by core -x PYTHONPATH -x PYTHONUNBUFFERED \
    python3 -m ringreduce.bench --device cpu --sizes 8..64K --outofplace-only -w 20 -n 2000 \
    --budget 0.15 --min-iters 3 --no-progress --backends ringreduce,mpi \
    --json "$OUT/cpu-small-${N}rank-16core.json" > "$OUT/small-$N.log" 2>&1
  echo "== $N ranks: exit $?"; grep -A18 "ringreduce vs mpi" "$OUT/small-$N.log" | head -19
done
echo "== done: $((SECONDS - T0)) s"
