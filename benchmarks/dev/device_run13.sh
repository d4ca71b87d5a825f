#!/usr/bin/env bash
# One call on the one-H200 machine (about 8 minutes): the CUDA+UCX build;
# the GPU tests but the >2^31 element one, with 2-4 processes sharing the
# GPU, after gpu_ring took reduce_scatter, allgather and broadcast (the new
# "colls" tests) and its counters became per link; then where an eager
# call's time goes (benchmarks/dev/eager_parts.py) and the eager benchmark
# beside one torch launch. Needs .whl/ (carried). Lands in $OUT.
set -uo pipefail
cd "$(dirname "$0")/../.."
T0=$SECONDS
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
  --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
source benchmarks/device_env.sh
bash scripts/build_device.sh > "$OUT/build.log" 2>&1 || { tail -40 "$OUT/build.log"; exit 1; }
echo "== build: $((SECONDS - T0)) s; $(tail -1 "$OUT/build.log")"

ONLY_K="mismatch or dead_or_stopped or matrix or ordering or capture or colls" BUILD=0 \
  BUDGET_S=$(( 470 - (SECONDS - T0) )) bash benchmarks/device_gpu.sh > "$OUT/device_gpu.out" 2>&1
echo "== tests: exit $? ($((SECONDS - T0)) s)"
grep -E "passed|failed|FAILED|ERROR" "$OUT/device_gpu.out" | tail -14

timeout 40 python3 benchmarks/dev/eager_parts.py 7 400 > "$OUT/eager-parts-1xh200.json" 2> "$OUT/eager-parts.err"
echo "== eager parts: exit $? ($((SECONDS - T0)) s)"; cat "$OUT/eager-parts-1xh200.json"; tail -3 "$OUT/eager-parts.err"
timeout $(( 575 - (SECONDS - T0) )) python3 -m ringreduce.bench --device cuda --sizes 8..64Kx8 -w 5 -n 400 \
  --budget 0.05 --min-iters 50 --no-progress --backends ringreduce,launch \
  --json "$OUT/eager-1xh200-run13.json" > "$OUT/eager.log" 2>&1
echo "== eager bench: exit $? ($((SECONDS - T0)) s)"; tail -22 "$OUT/eager.log"
