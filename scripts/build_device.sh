#!/usr/bin/env bash
# Builds ringreduce._C with CUDA, NCCL and MPI in place, on the GPU machine
# (no network). Usage: bash scripts/build_device.sh   (PYTHON=... to override)
set -euo pipefail
cd "$(dirname "$0")/.."

# NVLink multicast stays off on the shared machines.
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1

PYTHON=${PYTHON:-python3}
export CUDA_ARCHS=${CUDA_ARCHS:-90}
export RINGREDUCE_CUDA=1

# setup.py takes the CUDA home from nvcc's location: prefer the real toolkit
# over wrapper scripts elsewhere on PATH.
for d in /usr/local/cuda/bin /usr/local/cuda-13.0/bin; do
  if [ -x "$d/nvcc" ]; then export PATH="$d:$PATH"; break; fi
done

# setup.py finds NCCL in the nvidia-nccl wheel first (the one torch loads, so
# one process never holds two NCCLs), then in /usr/include.
echo "build_device: python=$("$PYTHON" -c 'import sys; print(sys.executable)') nvcc=$(command -v nvcc)"

"$PYTHON" setup.py build_ext --inplace
"$PYTHON" -c "import ringreduce._C as c; print('built: has_cuda', c.has_cuda, 'has_mpi', c.has_mpi, 'gpus', c.cuda_device_count(), 'nccl', c.nccl_version)"
