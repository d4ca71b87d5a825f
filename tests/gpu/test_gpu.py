"""GPU tests: 2, 3 and 4 processes under mpirun on the GPUs there are. With
fewer GPUs than processes the ranks share them (one GPU: all of them), map
each other's memory with CUDA IPC, and device buffers go to the host-path
engine: the IPC algorithms, everything else staged over MPI. With a GPU per
rank the NCCL engine serves them, and the NCCL-only checks run too.

Every test runs tests/gpu/worker.py on every rank under a hard timeout and
checks what each rank reports. Everything skips without a CUDA build, a GPU,
mpirun or mpi4py. On the GPU machine: bash scripts/build_device.sh &&
python3 -m pytest tests/gpu -v  (-m slow: the > 2^31-element case only).
RINGREDUCE_TEST_NPROCS=2,3,4 picks the process counts.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ringreduce import _C

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
NPROCS = [int(v) for v in os.environ.get("RINGREDUCE_TEST_NPROCS", "2,3,4").split(",") if v]
GPUS = _C.cuda_device_count() if _C.has_cuda else 0
IPC_ALGOS = ["ipc_one_shot", "ipc_two_shot", "gpu_ring"]
SAFE_ENV = {"NCCL_NVLS_ENABLE": "0", "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1",
            "NVSHMEM_DISABLE_NVLS": "1"}


def _has(module: str) -> bool:
    try:
        __import__(module)
        return True
    except ImportError:
        return False


pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not _C.has_cuda, reason="ringreduce was built without CUDA"),
    pytest.mark.skipif(GPUS == 0, reason="needs a GPU"),
    pytest.mark.skipif(shutil.which("mpirun") is None, reason="needs mpirun"),
    pytest.mark.skipif(not _has("mpi4py"), reason="needs mpi4py"),
]


def mpirun(np_: int, script: Path, *args: str, env: dict | None = None,
           mpirun_args: tuple = ()) -> list:
    e = dict(os.environ, **SAFE_ENV, PYTHONUNBUFFERED="1", OMPI_ALLOW_RUN_AS_ROOT="1",
             OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1", OMPI_MCA_btl="self,vader",
             OMPI_MCA_rmaps_base_oversubscribe="1")
    e["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    e.update(env or {})
    cmd = ["mpirun", "--bind-to", "none", "-np", str(np_), *mpirun_args]
    for var in sorted(set(SAFE_ENV) | set(env or {}) | {"PYTHONPATH", "PYTHONUNBUFFERED"}):
        cmd += ["-x", var]
    return cmd + [sys.executable, str(script), *args], e


def time_left(default: int) -> int:
    """A launch's limit: `default` seconds, or less when RINGREDUCE_TEST_DEADLINE
    (epoch seconds, set by benchmarks/device_gpu.sh) is near, so pytest itself
    ends in time and reports; a launch with too little time left is skipped."""
    deadline = float(os.environ.get("RINGREDUCE_TEST_DEADLINE", "0") or 0)
    if deadline <= 0:
        return default
    left = int(deadline - time.time()) - 5
    if left < 15:
        pytest.skip(f"the time budget of this run is spent ({left} s left)")
    return min(default, left)


def launch(np_: int, jobs: str, backend: str = "default", lib: str = "torch",
           timeout: int = 240, env: dict | None = None) -> list:
    cmd, e = mpirun(np_, HERE / "worker.py", jobs, backend, lib, env=env)
    timeout = time_left(timeout)
    try:
        p = subprocess.run(cmd, env=e, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as x:
        out = x.stdout.decode() if isinstance(x.stdout, bytes) else (x.stdout or "")
        pytest.fail(f"{jobs} on {np_} ranks ({lib}) hung for {timeout} s\n{out[-3000:]}")
    reports = [json.loads(line[len("RESULT "):]) for line in p.stdout.splitlines()
               if line.startswith("RESULT ")]
    assert len(reports) == np_ and (p.returncode == 0 or "mismatch" in jobs), (
        f"exit {p.returncode}, {len(reports)} reports\n{p.stdout[-4000:]}\n{p.stderr[-4000:]}")
    skipped = [r["skipped"] for r in reports if r["skipped"]]
    if skipped:
        pytest.skip(skipped[0])
    # Where the time went, for whoever tunes the suite (shown with -rA or on failure).
    print(f"{jobs} on {np_} ranks ({lib}): seconds {reports[0].get('seconds')}")
    return reports


def shares_gpu(np_: int) -> bool:
    return GPUS < np_


def jobs_for(np_: int, lib: str) -> str:
    """Everything of one process count and library, in one launch: capture and
    ordering first (quick), then the matrix of every device path. "torch-colls":
    the other collectives, in a launch of their own (torch tensors)."""
    if lib == "torch-colls":
        return "colls:gpu_ring,colls:mpi/ring"
    if lib == "cupy":
        return ",".join([f"capture:{a}" for a in IPC_ALGOS] + ["matrix:" + "+".join(IPC_ALGOS)])
    own = not shares_gpu(np_)
    jobs = [f"capture:{a}" for a in IPC_ALGOS + (["ring"] if own else [])]
    jobs += ["ordering:auto", "ordering:gpu_ring"]
    jobs.append("matrix:" + "+".join(IPC_ALGOS + ["mpi/ring"] + (["ring"] if own else [])))
    return ",".join(jobs)


_LAUNCHES: dict = {}


def results_of(np_: int, lib: str) -> list:
    """One launch per process count and library; each test reads its own
    jobs. A launch that failed, hung or skipped is not repeated per test."""
    key = (np_, lib)
    if key not in _LAUNCHES:
        try:
            lib_arg = "torch" if lib == "torch-colls" else lib
            _LAUNCHES[key] = ("ok", launch(np_, jobs_for(np_, lib), "default", lib_arg, timeout=300))
        except BaseException as e:  # noqa: BLE001 - pytest's fail and skip outcomes too
            _LAUNCHES[key] = ("raised", e)
    kind, value = _LAUNCHES[key]
    if kind == "raised":
        raise value
    return value


def failures_of(reports: list, prefix: str = "") -> list:
    return [f for r in reports for f in r["failures"] if f.startswith(prefix) or "Traceback" in f]


def checked(reports: list, job: str) -> list:
    return [r["checked"].get(job, 0) for r in reports]


def cupy_here(np_: int, lib: str) -> None:
    if lib == "cupy" and np_ != NPROCS[0]:
        pytest.skip("CuPy runs at the smallest process count only (time)")


# ---- every device path, on shared or own GPUs ------------------------------------

@pytest.mark.parametrize("lib", ["torch", "cupy"])
@pytest.mark.parametrize("algo", IPC_ALGOS)
@pytest.mark.parametrize("np_", NPROCS)
def test_allreduce_matrix_ipc(np_, algo, lib):
    """counts {0,1,N-1,N,N+1,1000003} x dtypes x ops x placement, float64
    references, the same bits on every rank and on a rerun."""
    cupy_here(np_, lib)
    reports = results_of(np_, lib)
    bad = failures_of(reports, f"matrix:{algo} ")
    assert not bad, "\n".join(bad[:30])
    assert reports[0]["checked"]
    if shares_gpu(np_):
        assert reports[0]["path"] == "staged", reports[0]


@pytest.mark.parametrize("np_", NPROCS)
def test_allreduce_matrix_staged_mpi(np_):
    """Device buffers through MPI (not CUDA-aware): the ring over the pinned
    staging pipeline (a second communicator, backend "mpi"), every dtype."""
    reports = results_of(np_, "torch")
    bad = failures_of(reports, "matrix:mpi/ring ")
    assert not bad, "\n".join(bad[:30])
    assert reports[0].get("mpi_path") in ("staged", "direct"), reports[0]


@pytest.mark.parametrize("algo", ["gpu_ring", "mpi/ring"])
@pytest.mark.parametrize("np_", NPROCS)
def test_colls_reduce_scatter_allgather_broadcast(np_, algo):
    """reduce_scatter, allgather and broadcast on device buffers: gpu_ring (the
    selector's choice, checked) and the staged MPI ring, every dtype, counts
    {0,1,N-1,N,N+1,64N,1000003}; for gpu_ring also one CUDA graph of all
    three replayed 20 times."""
    reports = results_of(np_, "torch-colls")
    bad = failures_of(reports, f"colls:{algo}")
    assert not bad, "\n".join(bad[:30])
    counts = len({0, 1, np_ - 1, np_, np_ + 1, 64 * np_, 1000003})
    graph = 20 * 3 if algo == "gpu_ring" else 0
    # per count and dtype: 2 ops x 2 outputs (reduce_scatter), 3 allgathers, 2 broadcasts
    assert checked(reports, f"colls:{algo}") == [counts * 8 * 9 + graph] * np_, reports[0]["checked"]


@pytest.mark.parametrize("np_", NPROCS)
def test_ucx_device_path(np_):
    """backend 'ucx' (bootstrapped through MPI here): device buffers straight to UCX's CUDA
    transports (path 'ucx'), every collective forced onto the ring over them: the
    all-reduce matrix, then reduce_scatter, allgather and broadcast."""
    from ringreduce import _C

    if not hasattr(_C, "add_ucx_device_engine"):
        pytest.skip("ringreduce._C was built without UCX")
    reports = launch(np_, "matrix:ring,colls:ring", "ucx", "torch", timeout=300,
                     env={"RINGREDUCE_ALGO": "ring", "RINGREDUCE_UCX_DEVICE_PATH": "ucx"})
    bad = failures_of(reports)
    assert not bad, "\n".join(bad[:30])
    assert reports[0]["path"] == "ucx", reports[0]
    counts = len({0, 1, np_ - 1, np_, np_ + 1, 64 * np_, 1000003})
    assert checked(reports, "colls:ring") == [counts * 8 * 9] * np_, reports[0]["checked"]
    assert all(c > 0 for c in checked(reports, "matrix:ring")), reports[0]["checked"]


@pytest.mark.parametrize("algo", ["auto", "gpu_ring"])
@pytest.mark.parametrize("np_", NPROCS)
def test_stream_ordering(np_, algo):
    reports = results_of(np_, "torch")
    bad = failures_of(reports, f"ordering:{algo}")
    assert not bad, "\n".join(bad[:20])
    assert checked(reports, f"ordering:{algo}") == [7] * np_, reports[0]["checked"]


@pytest.mark.parametrize("lib", ["torch", "cupy"])
@pytest.mark.parametrize("algo", IPC_ALGOS)
@pytest.mark.parametrize("np_", NPROCS)
def test_graph_capture(np_, algo, lib):
    """Captured once, replayed 100 times with new inputs: right every time."""
    cupy_here(np_, lib)
    reports = results_of(np_, lib)
    bad = failures_of(reports, f"capture:{algo}")
    assert not bad, "\n".join(bad[:20])
    assert checked(reports, f"capture:{algo}") == [101] * np_, reports[0]["checked"]


MISMATCHES = [(2, "gpu_ring", "count"), (3, "ipc_two_shot", "count"), (4, "ipc_one_shot", "count"),
              (2, "ipc_two_shot", "dtype"), (4, "gpu_ring", "dtype"), (3, "ipc_one_shot", "dtype")]


@pytest.mark.parametrize("np_,algo,kind", MISMATCHES)
def test_mismatch_in_band(np_, algo, kind):
    """Rank 0's call differs: CollectiveMismatch on every rank, found by the
    kernels' first barrier (the count case gives rank 0 fewer blocks)."""
    if np_ not in NPROCS:
        pytest.skip(f"{np_} processes not selected")
    reports = launch(np_, f"mismatch:{algo}", "default", "torch", timeout=120,
                     env={"RR_TEST_MISMATCH": kind})
    bad = failures_of(reports)
    assert not bad, "\n".join(bad[:20])
    for r in reports:
        assert r["error"] == "CollectiveMismatch", r
        assert "fingerprint" in r["message"] or "aborted" in r["message"], r


FAULT_WORKER = ROOT / "tests" / "faults" / "fault_worker.py"
FAULT_TIMEOUT = 5.0


@pytest.mark.parametrize("mode,algo", [("stop_cuda", "gpu_ring"), ("kill_cuda", "")])
def test_dead_or_stopped_peer(mode, algo):
    """A stopped or killed peer: CollectiveTimeout within the timeout + 5 s,
    and every later call raises too."""
    env = {"RINGREDUCE_ALGO": algo} if algo else {}
    cmd, e = mpirun(2, FAULT_WORKER, mode, str(FAULT_TIMEOUT), env=env,
                    mpirun_args=("--mca", "orte_abort_on_non_zero_status", "0"))
    try:
        p = subprocess.run(cmd, env=e, cwd=ROOT, capture_output=True, text=True,
                           timeout=time_left(60))
        stdout, stderr = p.stdout, p.stderr
    except subprocess.TimeoutExpired as x:  # a stopped rank can keep mpirun waiting
        stdout = x.stdout.decode() if isinstance(x.stdout, bytes) else (x.stdout or "")
        stderr = x.stderr.decode() if isinstance(x.stderr, bytes) else (x.stderr or "")
    out = {}
    for line in stdout.splitlines():
        if line.startswith("RESULT "):
            res = json.loads(line[7:])
            out[res["rank"]] = res
    assert 0 in out, f"the survivor must report\n{stdout[-3000:]}\n{stderr[-3000:]}"
    res = out[0]
    assert res["error"] == "CollectiveTimeout", res
    assert res["seconds"] <= FAULT_TIMEOUT + 5, res
    assert "rank 0" in res["message"] and "allreduce" in res["message"], res
    assert res["later_error"] == "CollectiveTimeout", res


@pytest.mark.slow
def test_more_than_2g_int8_elements():
    reports = launch(2, "large:auto", "default", "torch", timeout=240)
    bad = failures_of(reports)
    assert not bad, "\n".join(bad)


# ---- NCCL: one GPU per rank only (NCCL refuses two ranks on one GPU) ---------------

@pytest.mark.parametrize("np_", NPROCS)
def test_nccl_ring_matrix(np_):
    if shares_gpu(np_):
        pytest.skip(f"NCCL needs a GPU per rank ({np_} ranks, {GPUS} GPUs)")
    reports = results_of(np_, "torch")
    bad = failures_of(reports, "matrix:ring ")
    assert not bad, "\n".join(bad[:30])
    assert reports[0]["path"] == "nccl", reports[0]


@pytest.mark.parametrize("np_", NPROCS)
def test_nccl_graph_capture(np_):
    if shares_gpu(np_):
        pytest.skip(f"NCCL needs a GPU per rank ({np_} ranks, {GPUS} GPUs)")
    reports = results_of(np_, "torch")
    bad = failures_of(reports, "capture:ring")
    assert not bad, "\n".join(bad[:20])
    assert checked(reports, "capture:ring") == [101] * np_, reports[0]["checked"]
