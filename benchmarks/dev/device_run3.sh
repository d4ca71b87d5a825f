#!/usr/bin/env bash
# One call on the one-H200 machine (9.5 minutes at most): the CUDA+NCCL+UCX
# build, the device reduction's
# rate on every dtype x op against the copy rate, the GPU tests with 2, 3
# and 4 processes sharing the GPU (benchmarks/device_gpu.sh), and the eager
# small-call cost of one process against one torch kernel launch.
# Needs the libucx wheel in .whl/ (carried). Everything lands in $OUT/run3.tgz
# (the device tool brings back at most 8 files), the key records beside it.
set -uo pipefail
cd "$(dirname "$0")/../.."
T0=$SECONDS
FINAL=${OUT:-/tmp/out}
export OUT=/tmp/run3
mkdir -p "$OUT" "$FINAL"
trap 'tar czf "$FINAL/run3.tgz" -C /tmp run3; cp "$OUT"/reduce-rate-1xh200.json "$OUT"/reduce-variants.json "$OUT"/gpu-1xh200.json "$OUT"/eager-1xh200.json "$FINAL"/ 2>/dev/null' EXIT
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
  --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
source benchmarks/device_env.sh
PY=python3
bash scripts/build_device.sh > "$OUT/build.log" 2>&1 || { tail -40 "$OUT/build.log"; exit 1; }
echo "== build: $((SECONDS - T0)) s; $(tail -1 "$OUT/build.log")"

echo "== kernel shapes for the sum (float32, 256 MiB)"
nvcc -O3 -std=c++17 -arch=sm_90 benchmarks/dev/reduce_variants.cu -o /tmp/rv > "$OUT/rv-build.log" 2>&1 \
  && timeout 60 /tmp/rv > "$OUT/reduce-variants.json" 2>&1
cat "$OUT/reduce-variants.json"

echo "== reduce rate"
timeout 100 "$PY" benchmarks/reduce_rate.py --mib 256 --iters 20 --warmup 3 \
  --json "$OUT/reduce-rate-1xh200.json" > "$OUT/rate.log" 2>&1
echo "rate exit $?"; tail -25 "$OUT/rate.log"

echo "== eager small calls, one process, against one launch"
timeout 90 "$PY" -m ringreduce.bench --device cuda --sizes 8..64Kx4 -w 5 -n 200 --budget 0.05 \
  --min-iters 20 --no-progress --backends ringreduce,torch-nccl,launch --outofplace-only --graph \
  --json "$OUT/eager-1xh200.json" > "$OUT/eager.log" 2>&1
echo "eager exit $?"; grep -v "^#" "$OUT/eager.log" | tail -16

LEFT=$(( 550 - (SECONDS - T0) ))
echo "== GPU tests, ${LEFT} s left"
BUILD=0 BUDGET_S=$LEFT bash benchmarks/device_gpu.sh > "$OUT/device_gpu.out" 2>&1
tail -40 "$OUT/device_gpu.out"
echo "== done: $((SECONDS - T0)) s"
