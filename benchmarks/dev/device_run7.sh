#!/usr/bin/env bash
# One call on the one-H200 machine's 16-core host, CPU only (about 5
# minutes): a host-only build with UCX; the shared-memory round size at 16
# ranks (RINGREDUCE_SHM_ROUND_BYTES 256K, 512K, 1M, beside MPI_Allreduce,
# 64 KiB to 16 MiB); then the CPU all-reduce at 4, 8 and 16 ranks
# (benchmarks/cpu_scaling.sh): ringreduce (automatic), the host transport
# alone, the same two over UCX, Open MPI and gloo, side by side. Needs .whl/
# (carried). Lands in $OUT/run7.tgz, the key records beside it.
set -uo pipefail
cd "$(dirname "$0")/../.."
T0=$SECONDS
FINAL=${OUT:-/tmp/out}
export OUT=/tmp/run7
mkdir -p "$OUT" "$FINAL"
trap 'tar czf "$FINAL/run7.tgz" -C /tmp run7; cp "$OUT"/cpu-*rank-*core.json "$FINAL"/ 2>/dev/null' EXIT
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
  --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
source benchmarks/device_env.sh
PY=python3
RINGREDUCE_CUDA=0 "$PY" setup.py build_ext --inplace > "$OUT/build.log" 2>&1 || { tail -40 "$OUT/build.log"; exit 1; }
echo "== build: $((SECONDS - T0)) s"

for RB in 256K 512K 1M; do
  echo "== round bytes $RB, 16 ranks ($((SECONDS - T0)) s)"
  RINGREDUCE_SHM_ROUND_BYTES=$RB timeout 60 mpirun -np 16 --bind-to core --map-by core \
    -x PYTHONPATH -x PYTHONUNBUFFERED -x RINGREDUCE_SHM_ROUND_BYTES \
    "$PY" -m ringreduce.bench --device cpu --sizes 64K..16Mx4 --outofplace-only -w 20 -n 2000 \
    --budget 0.15 --min-iters 3 --no-progress --backends ringreduce,mpi \
    --json "$OUT/round-$RB-16rank.json" > "$OUT/round-$RB.log" 2>&1
  grep -A8 "ringreduce vs mpi" "$OUT/round-$RB.log" | head -9
done

echo "== CPU scaling ($((SECONDS - T0)) s)"
BUILD=0 NPS="4 8 16" ROWS=ringreduce,ringreduce-noshm,ringreduce-ucx,ringreduce-ucx-noshm,mpi,gloo \
  timeout $(( 560 - (SECONDS - T0) )) bash benchmarks/cpu_scaling.sh > "$OUT/cpu_scaling.out" 2>&1
grep -E "^== |exit " "$OUT/cpu_scaling.out"; sed -n "/== targets/,/== parameter/p" "$OUT/cpu_scaling.out" | head -40
echo "== done: $((SECONDS - T0)) s"
