#!/usr/bin/env bash
# GPU machine, one call: build, the GPU test suite (both transports, the IPC
# path and the ring), the NCCL fault tests, and a smoke run of the benchmark.
#   bash benchmarks/device_tests.sh      (logs under $OUT)
set -uo pipefail
cd "$(dirname "$0")/.."
source benchmarks/device_env.sh
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee "$OUT/gpus.txt"
bash scripts/build_device.sh > "$OUT/build.log" 2>&1 || { tail -30 "$OUT/build.log"; exit 1; }
tail -1 "$OUT/build.log"
echo "== GPU tests"
timeout 420 python3 -m pytest tests/gpu tests/faults/test_faults_gpu.py tests/test_device_choice.py -v -rs \
  2>&1 | tee "$OUT/gpu_tests.log" | grep -E "PASS|FAIL|SKIP|ERROR|passed|failed" | tail -40
echo "== bench smoke"
timeout 90 mpirun -np 2 --bind-to none -x PYTHONPATH -x NCCL_NVLS_ENABLE -x TORCH_SYMM_MEM_DISABLE_MULTICAST -x NVSHMEM_DISABLE_NVLS \
  python3 -m ringreduce.bench --device cuda -b 8 -e 4M -f 64 -w 2 -n 5 --no-progress \
  --backends ringreduce-nccl,ringreduce-mpi,nccl,torch-nccl,mpi-naive 2>&1 | grep -v Warning | tail -30
