#!/usr/bin/env bash
# One call on the one-H200 machine (about 3 minutes): the build and the
# "colls" GPU tests only (reduce_scatter, allgather, broadcast through
# gpu_ring and the staged MPI ring, 2-4 processes sharing the GPU), after
# run 14 found the suite asking explain() before the device engine existed.
# Needs .whl/ (carried). Lands in $OUT.
set -uo pipefail
cd "$(dirname "$0")/../.."
T0=$SECONDS
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
  --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
source benchmarks/device_env.sh
bash scripts/build_device.sh > "$OUT/build.log" 2>&1 || { tail -40 "$OUT/build.log"; exit 1; }
echo "== build: $((SECONDS - T0)) s; $(tail -1 "$OUT/build.log")"
ONLY_K="colls" BUILD=0 BUDGET_S=$(( 400 - (SECONDS - T0) )) bash benchmarks/device_gpu.sh \
  > "$OUT/device_gpu.out" 2>&1
echo "== tests: exit $? ($((SECONDS - T0)) s)"
grep -E "passed|failed|FAILED|ERROR|seconds" "$OUT/device_gpu.out" | tail -14
