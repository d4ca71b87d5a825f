#!/usr/bin/env bash
# One call on the one-H200 machine's 16-core host, CPU only (about 3
# minutes): a host-only build with UCX, then the CPU all-reduce at 4, 8 and
# 16 ranks with 1 MiB shared-memory rounds
# (benchmarks/cpu_scaling.sh): ringreduce (automatic), the host transport
# alone, the same two over UCX, Open MPI and gloo, side by side. Needs .whl/
# (carried). Lands in $OUT/run8.tgz, the key records beside it.
set -uo pipefail
cd "$(dirname "$0")/../.."
T0=$SECONDS
FINAL=${OUT:-/tmp/out}
export OUT=/tmp/run8
mkdir -p "$OUT" "$FINAL"
trap 'tar czf "$FINAL/run8.tgz" -C /tmp run8; cp "$OUT"/cpu-*rank-*core.json "$FINAL"/ 2>/dev/null' EXIT
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
  --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
source benchmarks/device_env.sh
PY=python3
RINGREDUCE_CUDA=0 "$PY" setup.py build_ext --inplace > "$OUT/build.log" 2>&1 || { tail -40 "$OUT/build.log"; exit 1; }
echo "== build: $((SECONDS - T0)) s"

echo "== CPU scaling ($((SECONDS - T0)) s)"
BUILD=0 NPS="4 8 16" ROWS=ringreduce,ringreduce-noshm,ringreduce-ucx,ringreduce-ucx-noshm,mpi,gloo \
  timeout $(( 560 - (SECONDS - T0) )) bash benchmarks/cpu_scaling.sh > "$OUT/cpu_scaling.out" 2>&1
grep -E "^== |exit " "$OUT/cpu_scaling.out"; sed -n "/== targets/,/== parameter/p" "$OUT/cpu_scaling.out" | head -40
echo "== done: $((SECONDS - T0)) s"
