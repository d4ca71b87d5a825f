#!/usr/bin/env bash
# Second GPU call: build with the IPC path, check it, time it against NCCL.
set -uo pipefail
cd "$(dirname "$0")/.."
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export PYTHONPATH=$PWD OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
MPI=(mpirun -np 2 --bind-to none -x NCCL_NVLS_ENABLE -x TORCH_SYMM_MEM_DISABLE_MULTICAST -x NVSHMEM_DISABLE_NVLS -x PYTHONPATH)
time bash scripts/build_device.sh > "$OUT/build.log" 2>&1 || { tail -30 "$OUT/build.log"; exit 1; }
echo "== ipc check"; timeout 200 "${MPI[@]}" python3 tests/gpu/ipc_worker.py --mode check 2>&1 | tee "$OUT/ipc_check.log" | grep -v "^\[" | tail -8
echo "== ipc time"; timeout 150 "${MPI[@]}" python3 tests/gpu/ipc_worker.py --mode time --json "$OUT/ipc_time.json" 2>&1 | tee "$OUT/ipc_time.log" | grep -v Warning | tail -30
echo "== quick"; timeout 120 "${MPI[@]}" python3 benchmarks/quick_gpu.py 2>&1 | grep -v Warning | tail -8
