"""One rank of a GPU test, run under mpirun by tests/gpu/test_gpu.py.

Usage: worker.py JOBS BACKEND LIB
  JOBS     comma-separated SUITE:ALGO, run in order in one process, e.g.
           capture:gpu_ring,ordering:auto,matrix:ipc_one_shot+gpu_ring+mpi/ring
           SUITE  matrix | ordering | capture | mismatch | large | timing | colls
                  (colls: reduce_scatter, allgather, broadcast; worker_colls.py)
           ALGO   auto | ipc_one_shot | ipc_two_shot | gpu_ring | ring | mpi/ring
                  (forced per call; mpi/ring: the ring over a second communicator
                  created with backend "mpi", i.e. the staged device path)
  BACKEND  default (NCCL/IPC, or the host-path engine when ranks share a GPU) | mpi
  LIB      torch | cupy
Ranks use GPU local_rank % device_count: with fewer GPUs than ranks they
share one, map each other's memory with CUDA IPC, and device buffers go to
the host-path engine (the IPC algorithms; everything else staged over MPI).
Rank 0 prints one line "RESULT <json>" per rank: {"checked": {job: n}, "seconds":
{job: s}, "failures": ["SUITE:ALGO ...", ...], "skipped": reason-or-null, ...}.
Results are also compared between ranks bit for bit (SHA-256 digests
through an MPI allgather).
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
import time
import traceback
from pathlib import Path

import numpy as np

# mpi4py first: it initialises MPI, and ringreduce then reuses it.
from mpi4py import MPI  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "workers"))
import ringreduce as rr  # noqa: E402
from common import EPS, make_input, reference, tolerance  # noqa: E402
from worker_colls import run_colls  # noqa: E402

WORLD = MPI.COMM_WORLD
FLOATS = ["float16", "bfloat16", "float32"]
RING_DTYPES = ["float16", "bfloat16", "float32", "float64", "int8", "uint8", "int32", "int64"]
OPS = ["sum", "prod", "min", "max", "avg"]
INT_OPS = OPS + ["band", "bor", "bxor"]


def dtypes_for(algo: str, lib: str) -> list:
    names = FLOATS if algo.startswith("ipc_") else RING_DTYPES
    return [d for d in names if not (lib == "cupy" and d == "bfloat16")]


def ops_for(dtype: str, algo: str) -> list:
    # Bitwise ops on the ring kernel only: the staged and NCCL paths reduce
    # with CudaReducer, which has no bitwise kernels yet.
    return INT_OPS if dtype.startswith(("int", "uint")) and algo == "gpu_ring" else OPS


def counts_for(n: int) -> list:
    # RR_TEST_BIG: a smaller "large" count for the worker's own CPU check.
    return sorted({0, 1, max(n - 1, 0), n, n + 1, int(os.environ.get("RR_TEST_BIG", 1000003))})


def bitwise_reference(inputs: list, op: str) -> np.ndarray:
    acc = inputs[0].astype(np.int64)
    for x in inputs[1:]:
        v = x.astype(np.int64)
        acc = acc & v if op == "band" else acc | v if op == "bor" else acc ^ v
    return acc.astype(np.float64)


class Lib:
    """Device arrays of one library, converted to and from float64 NumPy."""

    def __init__(self, name: str, device: int) -> None:
        self.name, self.device = name, device
        if name == "torch-cpu":  # host tensors: checks this worker itself without a GPU
            import torch

            self.mod = torch
        elif name == "torch":
            import torch

            self.mod = torch
            torch.cuda.set_device(device)
        else:
            import cupy

            self.mod = cupy
            cupy.cuda.Device(device).use()

    def to_device(self, a64: np.ndarray, dtype: str):
        if self.name.startswith("torch"):
            # A copy: the inputs are reused by every algorithm of the matrix.
            t = self.mod.from_numpy(a64).to(getattr(self.mod, dtype), copy=True)
            return t if self.device < 0 else t.to(f"cuda:{self.device}")
        return self.mod.asarray(a64.astype(dtype))

    def poisoned(self, count: int, dtype: str):
        """An output whose every element would show if left unwritten."""
        v = np.full(count, 77.0)
        return self.to_device(v, dtype)

    def to_host(self, x) -> np.ndarray:
        if self.name.startswith("torch"):
            return x.to(self.mod.float64).cpu().numpy()
        return self.mod.asnumpy(x).astype(np.float64)

    def raw(self, x) -> bytes:
        if self.name.startswith("torch"):
            t = x.detach().reshape(-1)
            return t.view(self.mod.uint8).cpu().numpy().tobytes() if t.numel() else b""
        return self.mod.asnumpy(x).tobytes()

    def sync(self) -> None:
        if self.device < 0:
            return
        if self.name == "torch":
            self.mod.cuda.synchronize()
        else:
            self.mod.cuda.Device(self.device).synchronize()


def expected(inputs: list, op: str, dtype: str):
    if op in ("band", "bor", "bxor"):
        ref = bitwise_reference(inputs, op)
        return ref, np.zeros_like(ref)
    ref = reference(inputs, op, dtype)
    return ref, tolerance(inputs, ref, op, dtype)


def check_one(comm, lib, algo, inputs, ref, tol, dtype, op, inplace, failures) -> bytes:
    """One call, checked against float64; returns its result's digest."""
    n, r = comm.size, comm.rank
    count = inputs[r].size
    name = (f"matrix:{algo} n={n} count={count} {dtype} {op} "
            f"{'in' if inplace else 'out-of'}-place {lib.name}")
    x = lib.to_device(inputs[r], dtype)
    out = None if inplace else lib.poisoned(count, dtype)
    forced = None if algo == "auto" else algo.split("/")[-1]
    try:
        res = comm.allreduce(x, op, out=out, algo=forced)
        lib.sync()
    except Exception as e:  # noqa: BLE001 - reported, not hidden
        failures.append(f"{name}: raised {type(e).__name__}: {e}")
        return b""
    got = lib.to_host(res)
    bad = ~(np.abs(got - ref) <= tol)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        failures.append(f"{name}: rank {r} element {i} is {got[i]!r}, expected {ref[i]!r} "
                        f"({int(bad.sum())} wrong)")
    if not inplace and not np.array_equal(lib.to_host(x), inputs[r]):
        failures.append(f"{name}: the out-of-place call modified its input")
    return hashlib.sha256(lib.raw(res)).digest()


def compare_digests(digests: list, names: list, failures: list) -> None:
    every = WORLD.allgather(digests)
    for i, d in enumerate(every[0]):
        if any(other[i] != d for other in every[1:]):
            failures.append(f"{names[i]}: the result differs in its bits between ranks")


def run_matrix(comms, lib, algos, failures, report) -> int:
    """counts x dtypes x ops x placement for several algorithms (each input
    set generated once and used by every algorithm that takes it), float64
    references, bits equal on every rank, and a rerun of every large sum in
    place giving the same bits."""
    n = comms["default"].size
    algos = algos.split("+")
    digests, names, checked = [], [], 0
    seconds = report.setdefault("seconds", {})
    dtypes = [d for d in RING_DTYPES if any(d in dtypes_for(a, lib.name) for a in algos)]
    for count in counts_for(n):
        for dtype in dtypes:
            for op in INT_OPS:
                takers = [a for a in algos
                          if dtype in dtypes_for(a, lib.name) and op in ops_for(dtype, a)]
                if not takers:
                    continue
                inputs = [make_input(q, count, dtype, op) for q in range(n)]
                ref, tol = expected(inputs, op, dtype)
                for algo in takers:
                    comm = comms["mpi" if algo.startswith("mpi/") else "default"]
                    t0 = time.monotonic()
                    for inplace in (True, False):
                        d = check_one(comm, lib, algo, inputs, ref, tol, dtype, op, inplace,
                                      failures)
                        digests.append(d)
                        names.append(f"matrix:{algo} count={count} {dtype} {op} inplace={inplace}")
                        checked += 1
                        if count > 1000 and inplace and op == "sum":
                            again = check_one(comm, lib, algo, inputs, ref, tol, dtype, op, True,
                                              failures)
                            if again != d:
                                failures.append(f"{names[-1]}: a rerun gave different bits")
                    key = f"matrix:{algo}"
                    seconds[key] = round(seconds.get(key, 0.0) + time.monotonic() - t0, 2)
    compare_digests(digests, names, failures)
    return checked


def run_ordering(comms, lib, algo, failures, report) -> int:
    """The stream promises: a producer still running when the call is made
    (current and side stream), Work.wait() on a side stream, async calls
    completing in submission order."""
    comm = comms["default"]
    failures = Prefixed(failures, f"ordering:{algo}")
    torch = lib.mod
    n, r = comm.size, comm.rank
    forced = None if algo == "auto" else algo
    expected_sum = n * (n + 1) / 2
    dev = f"cuda:{lib.device}"
    checked = 0
    cycles = 200_000_000  # ~0.1 s of GPU time: the host reaches allreduce long before
    for use_side in (False, True):
        s = torch.cuda.Stream() if use_side else torch.cuda.current_stream()
        with torch.cuda.stream(s):
            x = torch.zeros(1 << 20, dtype=torch.float32, device=dev)
            torch.cuda._sleep(cycles)
            x.fill_(r + 1)
            comm.allreduce(x, algo=forced)
            y = x.clone()  # on s: must see the result
        s.synchronize()
        if not bool((y == expected_sum).all()):
            failures.append(f"producer still running ({'side' if use_side else 'current'} "
                            f"stream): got {y[:4].tolist()}, expected {expected_sum}")
        checked += 1
    x = torch.zeros(1 << 22, dtype=torch.float32, device=dev)
    torch.cuda._sleep(cycles)
    x.fill_(r + 1)
    work = comm.allreduce(x, async_op=True, algo=forced)
    side = torch.cuda.Stream()
    with torch.cuda.stream(side):
        work.wait()
        y = x.clone()
    side.synchronize()
    if not bool((y == expected_sum).all()):
        failures.append(f"Work.wait() on a side stream: it saw {y[:4].tolist()}, "
                        f"expected {expected_sum}")
    torch.cuda.synchronize()
    if not work.is_completed():
        failures.append("Work.is_completed() is False after its stream finished")
    checked += 1
    xs = [torch.full((1000003,), float(r + 1 + k), device=dev) for k in range(4)]
    works = [comm.allreduce(t, async_op=True, algo=forced) for t in xs]
    for k, (t, w) in enumerate(zip(xs, works)):
        w.wait()
        want = sum(q + 1 + k for q in range(n))
        torch.cuda.current_stream().synchronize()
        if not bool((t == want).all()):
            failures.append(f"async collective {k}: got {t[:2].tolist()}, expected {want}")
        checked += 1
    return checked


def run_capture(comms, lib, algo, failures, report) -> int:
    """Capture one all-reduce (in place) into a CUDA graph, replay it 100
    times with new input values each time, check every replay."""
    comm = comms["default"]
    failures = Prefixed(failures, f"capture:{algo}")
    n, r = comm.size, comm.rank
    forced = None if algo == "auto" else algo
    count = 70001
    base = np.arange(count, dtype=np.float64) % 13 - 6
    want = lambda k: n * base + k * (n * (n - 1) / 2 + n)  # noqa: E731  sum over q of base + k*(q+1)
    checked = 0
    if lib.name == "torch":
        torch = lib.mod
        static = torch.zeros(count, dtype=torch.float32, device=f"cuda:{lib.device}")
        comm.allreduce(static, algo=forced)  # eager warm-up: engine, workspace
        torch.cuda.synchronize()
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g):
            comm.allreduce(static, algo=forced)
        src = torch.from_numpy(base).float().to(static.device)
        for k in range(100):
            static.copy_(src + float(k * (r + 1)))  # new values, same address
            g.replay()
            got = static.double().cpu().numpy()
            if not np.array_equal(got, want(k)):
                i = int(np.flatnonzero(got != want(k))[0])
                failures.append(f"torch graph replay {k}: element {i} is {got[i]}, "
                                f"expected {want(k)[i]}")
                break
            checked += 1
        del g
    else:
        cupy = lib.mod
        static = cupy.zeros(count, dtype=cupy.float32)
        comm.allreduce(static, algo=forced)
        cupy.cuda.Device(lib.device).synchronize()
        stream = cupy.cuda.Stream(non_blocking=True)
        with stream:
            stream.begin_capture()
            comm.allreduce(static, algo=forced)
            graph = stream.end_capture()
            for k in range(100):
                static[...] = cupy.asarray(base + k * (r + 1), dtype=cupy.float32)
                graph.launch(stream)
                got = cupy.asnumpy(static).astype(np.float64)
                if not np.array_equal(got, want(k)):
                    i = int(np.flatnonzero(got != want(k))[0])
                    failures.append(f"cupy graph replay {k}: element {i} is {got[i]}, "
                                    f"expected {want(k)[i]}")
                    break
                checked += 1
        stream.synchronize()
    # Eager calls after the replays still work and agree.
    lib.sync()
    inputs = [make_input(q, 4099, "float32", "sum", 9) for q in range(n)]
    ref, tol = expected(inputs, "sum", "float32")
    d = check_one(comm, lib, algo, inputs, ref, tol, "float32", "sum", True, failures)
    compare_digests([d], [f"capture:{algo} eager call after graph replays"], failures)
    return checked + 1


def run_mismatch(comms, lib, algo, failures, report) -> int:
    """Rank 0's call differs (count, or dtype): every rank must raise
    CollectiveMismatch, found in-band by the kernels' first barrier."""
    comm = comms["default"]
    n, r = comm.size, comm.rank
    kind = os.environ.get("RR_TEST_MISMATCH", "count")
    forced = None if algo == "auto" else algo
    if kind == "count":
        count, dtype = (1000 if r == 0 else 1007) * (64 if algo != "ipc_one_shot" else 1), "float32"
    else:
        count, dtype = 4096, ("float16" if r == 0 else "float32")
    x = lib.to_device(np.ones(count), dtype)
    err = None
    t0 = time.monotonic()
    try:
        comm.allreduce(x, algo=forced)
        lib.sync()
        comm.allreduce(lib.to_device(np.ones(8), "float32"), algo=forced)
        lib.sync()
    except Exception as e:  # noqa: BLE001 - the test inspects what was raised
        err = e
    report["seconds"][f"mismatch:{algo}"] = round(time.monotonic() - t0, 3)
    report["error"] = type(err).__name__ if err else None
    report["message"] = str(err)[:600] if err else None
    if not isinstance(err, rr.CollectiveMismatch):
        failures.append(f"mismatch:{algo} ({kind}): rank {r} raised "
                        f"{type(err).__name__ if err else 'nothing'}: {err}")
    return 1


def run_large(comms, lib, algo, failures, report) -> int:
    """More than 2^31 int8 elements: 64-bit counts through the whole path."""
    comm = comms["default"]
    torch = lib.mod
    n, r = comm.size, comm.rank
    count = (1 << 31) + 33
    x = torch.full((count,), r + 1, dtype=torch.int8, device=f"cuda:{lib.device}")
    comm.allreduce(x, algo=None if algo == "auto" else algo)
    torch.cuda.synchronize()
    want = n * (n + 1) // 2
    wrong = int((x != want).sum().item())
    if wrong:
        first = int((x != want).nonzero()[0].item())
        failures.append(f"large:{algo} int8 x {count}: {wrong} wrong elements, first at {first} "
                        f"(= {int(x[first].item())}, expected {want})")
    return 1


def run_timing(comms, lib, algo, failures, report) -> int:
    """gpu_ring vs ipc_two_shot, float32 sum, 64 MiB .. 1 GiB, CUDA events
    around back-to-back calls, median of the iterations (rank 0 reports)."""
    comm = comms["default"]
    torch = lib.mod
    n = comm.size
    rows = []
    for mib in (64, 256, 1024):
        count = (mib << 20) // 4
        x = torch.ones(count, dtype=torch.float32, device=f"cuda:{lib.device}")
        for name in ("ipc_two_shot", "gpu_ring"):
            comm.allreduce(x, algo=name)  # warm-up
            torch.cuda.synchronize()
            times = []
            iters = 5 if mib < 1024 else 3
            for _ in range(iters):
                a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                WORLD.Barrier()
                a.record()
                comm.allreduce(x, algo=name)
                b.record()
                b.synchronize()
                times.append(a.elapsed_time(b) * 1e3)
            us = sorted(times)[len(times) // 2]
            algbw = count * 4 / us / 1e3
            rows.append({"algo": name, "bytes": count * 4, "us": round(us, 1),
                         "algbw_GBps": round(algbw, 2),
                         "busbw_GBps": round(algbw * 2 * (n - 1) / n, 2)})
        del x
        torch.cuda.empty_cache()
    report["timing"] = rows
    return len(rows)


class Prefixed(list):
    """A view of the failure list that puts the job's name first."""

    def __init__(self, target: list, prefix: str) -> None:
        super().__init__()
        self.target, self.prefix = target, prefix

    def append(self, item: str) -> None:
        self.target.append(item if item.startswith(self.prefix) else f"{self.prefix}: {item}")


def run_colls_suite(comms, lib, algo, failures, report) -> int:
    return run_colls(comms, lib, algo, Prefixed(failures, f"colls:{algo}"))


SUITES = {"matrix": run_matrix, "ordering": run_ordering, "capture": run_capture,
          "mismatch": run_mismatch, "large": run_large, "timing": run_timing,
          "colls": run_colls_suite}


def main() -> None:
    jobs, backend, libname = sys.argv[1:4]
    report = {"checked": {}, "seconds": {}, "failures": [], "skipped": None,
              "rank": WORLD.Get_rank()}
    poisoned = False
    try:
        local = int(os.environ.get("OMPI_COMM_WORLD_LOCAL_RANK", WORLD.Get_rank()))
        if libname == "cupy":
            try:
                import cupy  # noqa: F401
            except ImportError as e:
                report["skipped"] = f"cupy is not installed: {e}"
                raise SystemExit
        import torch  # noqa: F401  (the device count, and the torch suites)

        device = -1 if libname == "torch-cpu" else local % torch.cuda.device_count()
        lib = Lib(libname, device)
        comms = {"default": rr.init(backend=None if backend == "default" else backend,
                                    timeout=60)}
        if "mpi/" in jobs:
            comms["mpi"] = rr.new_communicator(backend="mpi", timeout=60)
        for job in jobs.split(","):
            suite, algo = job.split(":", 1)
            t0 = time.monotonic()
            report["checked"][job] = SUITES[suite](comms, lib, algo, report["failures"], report)
            report["seconds"].setdefault(job, round(time.monotonic() - t0, 2))
            poisoned = poisoned or suite == "mismatch"
        report["engines"] = comms["default"].engines
        report["path"] = comms["default"]._devices.path if device >= 0 else "host"
        if "mpi" in comms:
            report["mpi_path"] = comms["mpi"]._devices.path if device >= 0 else "host"
        if not poisoned:
            for c in comms.values():
                c.finalize()
    except SystemExit:
        pass
    except Exception:  # noqa: BLE001 - reported to the test, which fails
        report["failures"].append(traceback.format_exc())
    # One writer: lines of several ranks on one pipe can interleave.
    for rep in WORLD.gather(report, root=0) or []:
        sys.stdout.write("RESULT " + json.dumps(rep) + "\n")
    sys.stdout.flush()
    if poisoned:
        # The communicator is aborted; skip MPI_Finalize's wait on peers.
        sys.stdout.flush()
        WORLD.Barrier()
        os._exit(0)


if __name__ == "__main__":
    main()
