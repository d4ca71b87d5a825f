#!/usr/bin/env bash
# First GPU call: build, GPU tests (not the slow one), a quick timing.
set -uo pipefail
cd "$(dirname "$0")/.."
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export PYTHONPATH=$PWD OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
nvidia-smi topo -m | head -5
time bash scripts/build_device.sh 2>&1 | tail -5
timeout 120 mpirun -np 2 python3 benchmarks/quick_gpu.py 2>&1 | tee "$OUT/quick_gpu.log" | grep -v "^\[" | tail -12
timeout 300 python3 -m pytest tests/gpu tests/test_device_choice.py -q -m "not slow" 2>&1 | tee "$OUT/gpu_tests.log" | tail -30
