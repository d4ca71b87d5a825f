#!/usr/bin/env bash
# CPU all-reduce at 4, 8 and 16 ranks on one host (the GPU machine's 16
# cores), one call of about 6 minutes: ringreduce (automatic choice), the ring
# forced, ringreduce over UCX (when built), the parameter server and its sharded
# variant, MPI_Allreduce and gloo side by side. 8 B to 256 MiB (every power of
# two to 64 KiB, then x4), float32 sum, out-of-place. Writes, into $OUT:
#   cpu-<N>rank-<cores>core.json / .png   one pair per world size
#   cpu-scaling.log                       build, every run's tables, the target summary
# and prints the wall time of each part and the ratios the targets need
# (time vs MPI 8 B-64 KiB <= 1.0x, busbw vs MPI 1-256 MiB >= 1.0x, vs gloo >= 2x).
#
#   bash benchmarks/cpu_scaling.sh
#   NPS="2 4 8 16" bash benchmarks/cpu_scaling.sh     (more world sizes; 2 ranks adds ~30 s)
#   BUILD=0 ...                                        (ringreduce._C already built)
#
# Iterations: about 0.15 s of timed calls per size and row (--budget), at
# least 3 and at most 2000, after up to 20 warm-ups; a 256 MiB parameter-server
# call at 16 ranks takes seconds, so the large sizes get the minimum. Each part
# has its own timeout, so one slow world size cannot take the others with it.
set -uo pipefail
cd "$(dirname "$0")/.."
source benchmarks/device_env.sh
PY=${PY:-python3}
NPS=${NPS:-"4 8 16"}
CORES=$(nproc)
SIZES=${SIZES:-8..64K,256K..256Mx4}
ROWS=${ROWS:-ringreduce,ringreduce-ring,ringreduce-ucx,ringreduce-ps,ringreduce-ps-sharded,mpi,gloo}
LOG=$OUT/cpu-scaling.log
t_all=$SECONDS
: > "$LOG"

if [ "${BUILD:-1}" = 1 ]; then
  t=$SECONDS
  # Host-only: the CPU rows need no CUDA, and this builds in a fraction of the time.
  if ! RINGREDUCE_CUDA=0 "$PY" setup.py build_ext --inplace >> "$LOG" 2>&1; then
    tail -30 "$LOG"; exit 1
  fi
  "$PY" -c "import ringreduce._C as c; print('built: mpi', c.has_mpi, 'ucx', getattr(c, 'has_ucx', False))" | tee -a "$LOG"
  echo "== build: $((SECONDS - t)) s"
fi

declare -A LIMIT=([2]=60 [4]=90 [8]=120 [16]=180)
files=()
for N in $NPS; do
  t=$SECONDS
  name=cpu-${N}rank-${CORES}core
  # One rank per core where there are enough; threads per rank: cores / ranks (the driver).
  if [ "$N" -le "$CORES" ]; then BIND=(--bind-to core --map-by core); else BIND=(--oversubscribe --bind-to none); fi
  echo "== $N ranks on $CORES cores ($name)" | tee -a "$LOG"
  timeout -s KILL "${LIMIT[$N]:-240}" mpirun -np "$N" "${BIND[@]}" -x PYTHONPATH -x PYTHONUNBUFFERED \
    "$PY" -m ringreduce.bench --device cpu --sizes "$SIZES" --outofplace-only \
    -w 20 -n 2000 --budget 0.15 --min-iters 3 --no-progress --backends "$ROWS" \
    --json "$OUT/$name.json" --plot "$OUT/$name.png" >> "$LOG" 2>&1
  rc=$?
  [ -f "$OUT/$name.json" ] && files+=("$OUT/$name.json")
  echo "   exit $rc, $((SECONDS - t)) s" | tee -a "$LOG"
done

echo "== targets (out-of-place float32 sum; ratio = ringreduce row / baseline)"
if [ ${#files[@]} -gt 0 ]; then
  "$PY" -m ringreduce.bench.targets "${files[@]}" | tee -a "$LOG"
  echo "== parameter server vs ring (docs/ps-vs-ring.md tables, not written here)"
  "$PY" benchmarks/ps_vs_ring.py --print "${files[@]}" 2>&1 | tee -a "$LOG" | head -40
fi
echo "== total $((SECONDS - t_all)) s"
