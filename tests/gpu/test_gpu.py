"""GPU tests: two ranks under mpirun, each on its own GPU. Skipped without
a CUDA build, two GPUs, or mpirun. Each test runs tests/gpu/worker.py on both
ranks under a hard timeout and checks what every rank reports.

Run on the GPU machine: bash scripts/build_device.sh && python3 -m pytest tests/gpu -v
(add -m slow for the > 2^31-element case only, or -m "not slow" to leave it out)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ringreduce import _C

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
# Ranks per launch: RINGREDUCE_TEST_GPUS, default 2 (the 4-GPU run sets 4).
NRANKS = int(os.environ.get("RINGREDUCE_TEST_GPUS", "2"))

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not _C.has_cuda, reason="ringreduce was built without CUDA"),
    pytest.mark.skipif(_C.has_cuda and _C.cuda_device_count() < NRANKS,
                       reason=f"needs {NRANKS} GPUs"),
    pytest.mark.skipif(shutil.which("mpirun") is None, reason="needs mpirun"),
]


def launch(suite: str, backend: str, lib: str, timeout: int, algo: str = "auto") -> list:
    env = dict(os.environ, RINGREDUCE_ALGO=algo)
    env.update(NCCL_NVLS_ENABLE="0", TORCH_SYMM_MEM_DISABLE_MULTICAST="1",
               NVSHMEM_DISABLE_NVLS="1",
               PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")])))
    cmd = ["mpirun", "--allow-run-as-root", "--oversubscribe", "--bind-to", "none",
           "-np", str(NRANKS)]
    for var in ("NCCL_NVLS_ENABLE", "TORCH_SYMM_MEM_DISABLE_MULTICAST", "NVSHMEM_DISABLE_NVLS",
                "PYTHONPATH", "RINGREDUCE_MPI_DEVICE_PATH", "RINGREDUCE_ALGO"):
        if var in env:
            cmd += ["-x", var]
    cmd += [sys.executable, str(HERE / "worker.py"), suite, backend, lib]
    try:
        proc = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"{' '.join(cmd)} hung for {timeout} s\n{e.stdout}\n{e.stderr}")
    reports = [json.loads(line[len("RESULT "):]) for line in proc.stdout.splitlines()
               if line.startswith("RESULT ")]
    assert proc.returncode == 0 and len(reports) == NRANKS, (
        f"exit {proc.returncode}, {len(reports)} reports\n{proc.stdout[-4000:]}\n"
        f"{proc.stderr[-4000:]}")
    skipped = [r["skipped"] for r in reports if r["skipped"]]
    if skipped:
        pytest.skip(skipped[0])
    return reports


def check(reports: list, at_least: int) -> None:
    failures = [f for r in reports for f in r["failures"]]
    assert not failures, "\n".join(failures[:40])
    for r in reports:
        assert r["checked"] >= at_least, f"only {r['checked']} cases ran, expected {at_least}"


# counts {0,1,N-1,N,N+1,1000003} (5 distinct for N=2) x 8 dtypes x 5 ops x 2 placements
MATRIX_CASES = 5 * 8 * 5 * 2


@pytest.mark.parametrize("backend,algo", [("nccl", "auto"), ("nccl", "ring"), ("mpi", "auto")])
@pytest.mark.parametrize("lib", ["torch", "cupy"])
def test_allreduce_matrix(backend, algo, lib):
    """NCCL engine with the IPC fast path (auto) and forced onto the ring."""
    reports = launch("matrix", backend, lib, timeout=540, algo=algo)
    # CuPy has no bfloat16: its matrix has one dtype fewer.
    check(reports, MATRIX_CASES if lib == "torch" else MATRIX_CASES * 7 // 8)
    engine = {"nccl": "nccl", "mpi": "mpi-"}[backend]
    assert any(e.startswith(engine) for e in reports[0]["engines"]), reports[0]["engines"]
    if backend == "nccl":  # the IPC path really ran under auto, and was really off under ring
        assert reports[0]["path"].startswith("ipc") == (algo == "auto"), reports[0]["path"]


@pytest.mark.parametrize("backend,algo", [("default", "auto"), ("nccl", "auto"), ("nccl", "ring"),
                                          ("mpi", "auto")])
def test_stream_ordering(backend, algo):
    reports = launch("ordering", backend, "torch", timeout=300, algo=algo)
    check(reports, 7 if backend == "mpi" else 8)


@pytest.mark.slow
def test_more_than_2g_int8_elements():
    check(launch("large", "nccl", "torch", timeout=540), 1)
