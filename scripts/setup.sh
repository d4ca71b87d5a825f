#!/usr/bin/env bash
# Sets up everything ringreduce needs on a fresh Debian/Ubuntu machine:
# Open MPI (Debian packages), a virtual environment in .venv with the Python
# packages, and the build of the extension (with CUDA+NCCL when nvcc is found).
# Idempotent: a second run only rebuilds what changed.
#
#   RINGREDUCE_CUDA=auto|1|0   build the CUDA+NCCL part (default auto: when nvcc is found)
#   RINGREDUCE_UCX=auto|1|0    install the libucx-cu13 wheel and build the UCX transport
#                              (default auto: skipped cleanly when the wheel cannot be installed)
#   TORCH_SPEC=...             the torch requirement (default torch==2.13.0)
#   PYTHON=python3             the interpreter the venv is made from
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\n== %s\n' "$*" >&2; }
SUDO=""
[ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null && SUDO="sudo"

if ! command -v mpicc >/dev/null || ! command -v mpirun >/dev/null; then
  log "installing Open MPI from Debian's packages"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq openmpi-bin libopenmpi-dev >/dev/null
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  log "creating .venv"
  "$PY" -m venv .venv
fi
VPY=.venv/bin/python
"$VPY" -m pip install -q --upgrade pip >/dev/null 2>&1 || true

log "installing Python packages"
"$VPY" -m pip install -q "${TORCH_SPEC:-torch==2.13.0}" numpy pybind11 mpi4py matplotlib \
  scikit-learn pytest pytest-timeout pytest-xdist expecttest setuptools wheel

CUDA_MODE=${RINGREDUCE_CUDA:-auto}
if [ "$CUDA_MODE" != "0" ] && command -v nvcc >/dev/null; then
  # nccl.h and libnccl for the CUDA build come from NVIDIA's wheel.
  "$VPY" -c "import nvidia.nccl" 2>/dev/null || "$VPY" -m pip install -q nvidia-nccl-cu13
fi

UCX_MODE=${RINGREDUCE_UCX:-auto}
if [ "$UCX_MODE" != "0" ] && ! "$VPY" -c "import libucx" 2>/dev/null; then
  # UCX 1.22 (libucp, libucs, libuct, ucx_info) from the RAPIDS wheel; it needs no GPU.
  if ! "$VPY" -m pip install -q libucx-cu13; then
    if [ "$UCX_MODE" = "1" ]; then
      echo "RINGREDUCE_UCX=1 but the libucx-cu13 wheel could not be installed" >&2
      exit 1
    fi
    log "libucx-cu13 could not be installed: building without the UCX transport"
    UCX_MODE=0
  fi
fi

log "building ringreduce (RINGREDUCE_CUDA=$CUDA_MODE, RINGREDUCE_UCX=$UCX_MODE)"
RINGREDUCE_CUDA=$CUDA_MODE RINGREDUCE_UCX=$UCX_MODE "$VPY" -m pip install -q --no-build-isolation --no-deps -e .
"$VPY" -c "import ringreduce._C as c; print('ringreduce built: mpi =', c.has_mpi, ', cuda =', c.has_cuda)"
