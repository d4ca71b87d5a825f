"""The CUDA-IPC all-reduce kernels (csrc/ipc/): one-shot, two-shot and the GPU ring.

test_ipc_emulated runs anywhere with g++ and the CUDA headers: it compiles the real kernels
against a CPU emulator (tests/gpu/ipc_emulator.cc) and runs them under random schedules:
all three kernels back to back, graph-style replays numbered on the device, and calls that
differ between ranks (which must end in the mismatch code on every rank, never a hang).
test_ipc_on_gpus needs >= 2 peer GPUs and a CUDA build with _C.IpcAllreduce; it runs
tests/gpu/ipc_worker.py under mpirun with a hard timeout.
"""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(HERE.parent))
from conftest import needs_mpi, run_mpi  # noqa: E402

WORKER = HERE / "ipc_worker.py"


def _cuda_include() -> Path | None:
    nvcc = shutil.which("nvcc") or "/usr/local/cuda/bin/nvcc"
    for inc in (Path(nvcc).resolve().parent.parent / "include", Path("/usr/local/cuda/include")):
        if (inc / "cuda_fp16.h").exists() and (inc / "cuda_bf16.h").exists():
            return inc
    return None


def _gpu_count() -> int:
    try:
        import torch
    except ImportError:
        return 0
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def _has_ipc() -> bool:
    try:
        from ringreduce import _C
    except ImportError:
        return False
    return hasattr(_C, "IpcAllreduce")


@pytest.fixture(scope="module")
def emulator(tmp_path_factory) -> Path:
    cxx = shutil.which("g++") or shutil.which("c++")
    inc = _cuda_include()
    if cxx is None or inc is None:
        pytest.skip("needs g++ and the CUDA headers (cuda_fp16.h, cuda_bf16.h)")
    exe = tmp_path_factory.mktemp("ipc") / "ipc_emulator"
    cmd = [cxx, "-std=c++17", "-O1", "-w", f"-I{ROOT / 'csrc'}", f"-I{inc}",
           str(HERE / "ipc_emulator.cc"), "-o", str(exe)]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-4000:]
    return exe


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_ipc_emulated(emulator, seed):
    """Layout, flag protocol, device-side call state and fingerprint check: bitwise results
    under random interleavings, no deadlock, mismatches caught on every rank."""
    p = subprocess.run([str(emulator), str(seed), "40"], capture_output=True, text=True,
                       timeout=300)
    assert p.returncode == 0 and "EMULATOR OK" in p.stdout, p.stdout[-4000:] + p.stderr[-2000:]


@pytest.mark.gpu
@needs_mpi
@pytest.mark.parametrize("np_", [2, 4])
def test_ipc_on_gpus(np_):
    """Values, bitwise rank agreement and back-to-back races on real GPUs."""
    pytest.importorskip("mpi4py")
    if _gpu_count() < np_:
        pytest.skip(f"needs {np_} GPUs, found {_gpu_count()}")
    if not _has_ipc():
        pytest.skip("ringreduce._C was built without IpcAllreduce")
    p = run_mpi(np_, WORKER, "--mode", "check", timeout=900,
                env={"NCCL_NVLS_ENABLE": "0"})
    if "SKIP:" in p.stdout:
        pytest.skip(p.stdout.strip().splitlines()[-1])
    assert p.stdout.count("IPC CHECK OK") == np_, p.stdout[-4000:] + p.stderr[-2000:]
