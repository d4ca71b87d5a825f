#!/usr/bin/env bash
# One call on the one-H200 machine's 16-core host, CPU only (about 8
# minutes): a host-only build with UCX, then where the shared-memory one-shot
# stops paying (benchmarks/dev/shm_crossover.py, 4/8/16 ranks), then the CPU
# all-reduce at 4, 8 and 16 ranks (benchmarks/cpu_scaling.sh): ringreduce
# (automatic: shared memory on one host), ringreduce over the host transport
# alone (shared_memory=False), the same two over UCX, Open MPI and gloo, side
# by side. Needs .whl/ (carried). Lands in $OUT/run5.tgz, the key records
# beside it.
set -uo pipefail
cd "$(dirname "$0")/../.."
T0=$SECONDS
FINAL=${OUT:-/tmp/out}
export OUT=/tmp/run5
mkdir -p "$OUT" "$FINAL"
trap 'tar czf "$FINAL/run5.tgz" -C /tmp run5; cp "$OUT"/cpu-*rank-*core.json "$OUT"/cpu-scaling.log "$FINAL"/ 2>/dev/null' EXIT
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
  --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
source benchmarks/device_env.sh
PY=python3
RINGREDUCE_CUDA=0 "$PY" setup.py build_ext --inplace > "$OUT/build.log" 2>&1 || { tail -40 "$OUT/build.log"; exit 1; }
"$PY" -c "import ringreduce._C as c; print('built: mpi', c.has_mpi, 'ucx', getattr(c, 'has_ucx', False))"
echo "== build: $((SECONDS - T0)) s"

for N in ${CROSS_NPS:-4 8 16}; do
  echo "== crossover, $N ranks ($((SECONDS - T0)) s)"
  timeout 90 mpirun -np "$N" --bind-to core --map-by core -x PYTHONPATH -x PYTHONUNBUFFERED \
    "$PY" benchmarks/dev/shm_crossover.py --json "$OUT/shm-crossover-${N}rank.json" 2>&1 | grep " B "
done

echo "== CPU scaling ($((SECONDS - T0)) s)"
BUILD=0 NPS="${NPS:-4 8 16}" ROWS=${ROWS:-ringreduce,ringreduce-noshm,ringreduce-ucx,ringreduce-ucx-noshm,mpi,gloo} \
  timeout $(( ${BUDGET_S:-540} - (SECONDS - T0) )) bash benchmarks/cpu_scaling.sh > "$OUT/cpu_scaling.out" 2>&1
grep -E "^== |exit " "$OUT/cpu_scaling.out"; sed -n "/== targets/,/== parameter/p" "$OUT/cpu_scaling.out" | head -90
echo "== done: $((SECONDS - T0)) s"
