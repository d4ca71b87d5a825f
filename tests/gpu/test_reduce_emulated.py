"""The device reduction kernels' index arithmetic, run on the CPU (no GPU needed).

Compiles csrc/reduce/reduce_kernels.cuh with tests/gpu/reduce_emulator.cc, which runs every
thread of every block of each launch through the real dispatch, split and grid sizing, for
every reducible dtype x legal op and the avg division, and compares the bytes with
CpuReducer's, poison around the span included. The device's arithmetic itself is compared
on a GPU by test_reduce_gpu.py.
"""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent


def _cuda_include() -> Path | None:
    nvcc = shutil.which("nvcc") or "/usr/local/cuda/bin/nvcc"
    for inc in (Path(nvcc).resolve().parent.parent / "include", Path("/usr/local/cuda/include")):
        if (inc / "cuda_runtime.h").exists() and (inc / "cuda_fp16.h").exists():
            return inc
    return None


@pytest.fixture(scope="module")
def emulator(tmp_path_factory) -> Path:
    cxx = shutil.which("g++") or shutil.which("c++")
    inc = _cuda_include()
    if cxx is None or inc is None:
        pytest.skip("needs g++ and the CUDA headers")
    exe = tmp_path_factory.mktemp("reduce") / "reduce_emulator"
    cmd = [cxx, "-std=c++17", "-O1", "-w", f"-I{ROOT / 'csrc'}", f"-I{inc}",
           str(HERE / "reduce_emulator.cc"), str(ROOT / "csrc" / "reduce" / "reduce_cpu.cc"),
           "-o", str(exe)]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-4000:]
    return exe


def test_reduce_kernels_emulated(emulator):
    """Heads, vectors, tails and block shares cover every element once; nothing else is written."""
    p = subprocess.run([str(emulator), "1"], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0 and "REDUCE EMULATOR OK" in p.stdout, p.stdout[-4000:] + p.stderr[-2000:]
