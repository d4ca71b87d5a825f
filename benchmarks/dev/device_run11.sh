#!/usr/bin/env bash
# One call on the one-H200 machine's 16-core host, CPU only: after the
# benchmark's MPI-row fix (its NumPy views no longer collide), the small
# calls again (issue 13's target: 8 B-64 KiB no slower than MPI_Allreduce)
# at 4 ranks (twice), 8 and 16, ringreduce and ringreduce-ucx beside Open
# MPI, out of place, float32 sum. Needs .whl/ (carried). Lands in $OUT.
set -uo pipefail
cd "$(dirname "$0")/../.."
T0=$SECONDS
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
  --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
source benchmarks/device_env.sh
RINGREDUCE_CUDA=0 python3 setup.py build_ext --inplace > "$OUT/build.log" 2>&1 || { tail -40 "$OUT/build.log"; exit 1; }
echo "== build: $((SECONDS - T0)) s"
python3 -c "import ringreduce._C as c; print('ucx', c.has_ucx, 'mpi', c.has_mpi)"
small() {  # ranks, name
  RINGREDUCE_TIMEOUT=20 timeout 120 mpirun -np "$1" --bind-to core --map-by core -x PYTHONPATH \
    -x PYTHONUNBUFFERED -x RINGREDUCE_TIMEOUT -x OMPI_MCA_pml -x OMPI_MCA_osc -x LD_LIBRARY_PATH \
    python3 -m ringreduce.bench --device cpu --sizes 8..64K --outofplace-only -w 20 -n 2000 \
    --budget 0.15 --min-iters 3 --no-progress --backends ringreduce,ringreduce-ucx,mpi \
    --json "$OUT/$2.json" > "$OUT/$2.log" 2>&1
  echo "== $2: exit $? ($((SECONDS - T0)) s)"
  grep -E "Error|Timeout|timed out" "$OUT/$2.log" | head -5
}
small 4 cpu-small-4rank-16core-run11a
small 4 cpu-small-4rank-16core-run11b
small 8 cpu-small-8rank-16core-run11
small 16 cpu-small-16rank-16core-run11
echo "== done: $((SECONDS - T0)) s"
