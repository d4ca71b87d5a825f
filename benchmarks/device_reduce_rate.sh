#!/usr/bin/env bash
# GPU machine, one call: build, the device reduction's rate on every dtype x op
# (JSON under $OUT), then the device-vs-host parity tests.
#   bash benchmarks/device_reduce_rate.sh      (logs under $OUT)
set -uo pipefail
cd "$(dirname "$0")/.."
source benchmarks/device_env.sh
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,clocks.mem --format=csv,noheader \
  | tee "$OUT/gpus.txt"
# The two .cu files are the slow part of the build: compile them side by side
# first, where setup.py will find them up to date.
PY=${PYTHON:-python3}
TMP=build/temp.linux-x86_64-cpython-$("$PY" -c 'import sys; print(f"{sys.version_info[0]}{sys.version_info[1]}")')
NCCL_INC=$("$PY" -c 'import nvidia.nccl, os; print(os.path.join(list(nvidia.nccl.__path__)[0], "include"))' 2>/dev/null || echo /usr/include)
mkdir -p "$TMP"
start=$(date +%s)
for src in csrc/reduce/reduce_cuda.cu csrc/ipc/ipc_allreduce.cu; do
  nvcc -c "$src" -o "$TMP/$(basename "$src" .cu).o" -O3 -std=c++17 -Xcompiler -fPIC,-fvisibility=hidden \
    -Icsrc "-I$NCCL_INC" -DRR_HAVE_CUDA=1 -gencode arch=compute_90,code=sm_90 \
    -gencode arch=compute_90,code=compute_90 -Xptxas -v > "$OUT/nvcc-$(basename "$src" .cu).log" 2>&1 &
done
wait
bash scripts/build_device.sh > "$OUT/build.log" 2>&1 || { tail -30 "$OUT/build.log"; exit 1; }
echo "build: $(( $(date +%s) - start )) s; $(tail -1 "$OUT/build.log")"
echo "== rate"
"$PY" benchmarks/reduce_rate.py --json "$OUT/reduce-rate-1xh200.json" "$@" 2>&1 | tee "$OUT/rate.log"
echo "== parity tests"
timeout 300 "$PY" -m pytest -q -x tests/gpu/test_reduce_gpu.py 2>&1 | tee "$OUT/tests.log" | tail -15
