#!/usr/bin/env bash
# One call on the one-H200 machine (about 7.5 minutes): the build, the device
# reduction's rate and parity checks (after the switch to ordinary loads),
# eager calls in place against one launch, the GPU tests but the >2^31
# element one (2-4 processes sharing the GPU), then CPU all-reduce at 16
# ranks: ringreduce (automatic), over UCX, and Open MPI side by side. Needs .whl/ (carried). Lands in
# $OUT/run4.tgz, the key records beside it.
set -uo pipefail
cd "$(dirname "$0")/../.."
T0=$SECONDS
FINAL=${OUT:-/tmp/out}
export OUT=/tmp/run4
mkdir -p "$OUT" "$FINAL"
trap 'tar czf "$FINAL/run4.tgz" -C /tmp run4; cp "$OUT"/reduce-rate-1xh200.json "$OUT"/gpu-1xh200.json "$OUT"/eager-1xh200.json "$OUT"/cpu-16rank-16core.json "$FINAL"/ 2>/dev/null' EXIT
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
  --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
source benchmarks/device_env.sh
PY=python3
bash scripts/build_device.sh > "$OUT/build.log" 2>&1 || { tail -40 "$OUT/build.log"; exit 1; }
echo "== build: $((SECONDS - T0)) s; $(tail -1 "$OUT/build.log")"

echo "== reduce rate"
timeout 100 "$PY" benchmarks/reduce_rate.py --mib 256 --iters 20 --warmup 3 \
  --json "$OUT/reduce-rate-1xh200.json" > "$OUT/rate.log" 2>&1
echo "rate exit $?"; grep -E "float|bfloat|worst" "$OUT/rate.log" | head -30

echo "== eager small calls, one process, against one launch ($((SECONDS - T0)) s)"
timeout 60 "$PY" -m ringreduce.bench --device cuda --sizes 8..64Kx8 -w 5 -n 200 --budget 0.05 \
  --min-iters 20 --no-progress --backends ringreduce,torch-nccl,launch \
  --json "$OUT/eager-1xh200.json" > "$OUT/eager.log" 2>&1
echo "eager exit $?"

echo "== GPU tests but the slow one ($((SECONDS - T0)) s)"
ONLY_K="mismatch or dead_or_stopped or matrix or ordering or capture" BUILD=0 BUDGET_S=240 \
  bash benchmarks/device_gpu.sh > "$OUT/device_gpu.out" 2>&1
grep -E "passed|failed|FAILED" "$OUT/device_gpu.out" | tail -12

echo "== CPU scaling ($((SECONDS - T0)) s)"
BUILD=0 NPS="16" SIZES=8..64Kx8,1M..64Mx4 ROWS=ringreduce,ringreduce-ucx,mpi \
  timeout $(( 450 - (SECONDS - T0) )) bash benchmarks/cpu_scaling.sh > "$OUT/cpu_scaling.out" 2>&1
tail -45 "$OUT/cpu_scaling.out"
echo "== done: $((SECONDS - T0)) s"
