#!/usr/bin/env bash
# One call on the one-H200 machine (about 8 minutes): the CUDA+UCX build, the
# GPU tests but the >2^31 element one (2-4 processes sharing the GPU: the
# shared-memory change must leave them as they were), then the CPU
# all-reduce at 4, 8 and 16 ranks with the one-shot limit measured in run 5:
# ringreduce (automatic), the host transport alone, the same two over UCX,
# Open MPI and gloo, side by side. Needs .whl/ (carried). Lands in
# $OUT/run6.tgz, the key records beside it.
set -uo pipefail
cd "$(dirname "$0")/../.."
T0=$SECONDS
FINAL=${OUT:-/tmp/out}
export OUT=/tmp/run6
mkdir -p "$OUT" "$FINAL"
trap 'tar czf "$FINAL/run6.tgz" -C /tmp run6; cp "$OUT"/cpu-*rank-*core.json "$OUT"/gpu-tests-1xh200.log "$FINAL"/ 2>/dev/null' EXIT
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
  --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
source benchmarks/device_env.sh
bash scripts/build_device.sh > "$OUT/build.log" 2>&1 || { tail -40 "$OUT/build.log"; exit 1; }
echo "== build: $((SECONDS - T0)) s; $(tail -1 "$OUT/build.log")"

echo "== GPU tests but the slow one ($((SECONDS - T0)) s)"
ONLY_K="mismatch or dead_or_stopped or matrix or ordering or capture" BUILD=0 BUDGET_S=250 \
  bash benchmarks/device_gpu.sh > "$OUT/device_gpu.out" 2>&1
grep -E "passed|failed|FAILED" "$OUT/device_gpu.out" | tail -12

echo "== CPU scaling ($((SECONDS - T0)) s)"
BUILD=0 NPS="4 8 16" ROWS=ringreduce,ringreduce-noshm,ringreduce-ucx,ringreduce-ucx-noshm,mpi,gloo \
  timeout $(( 560 - (SECONDS - T0) )) bash benchmarks/cpu_scaling.sh > "$OUT/cpu_scaling.out" 2>&1
grep -E "^== |exit " "$OUT/cpu_scaling.out"; sed -n "/== targets/,/== parameter/p" "$OUT/cpu_scaling.out" | head -40
echo "== done: $((SECONDS - T0)) s"
