"""One rank of a GPU test, run under mpirun by test_gpu.py.

Usage: worker.py SUITE BACKEND LIB
  SUITE   matrix | ordering | large
  BACKEND nccl | mpi | default
  LIB     torch | cupy
Every rank prints one line "RESULT <json>": {"checked": n, "failures": [...],
"skipped": reason-or-null}. Failures include results that differ between
ranks (compared through a host allgather of each result's SHA-256 digest).
"""
from __future__ import annotations

import hashlib
import json
import sys
import traceback

import numpy as np

# mpi4py first: it initialises MPI, and ringreduce then reuses it.
from mpi4py import MPI  # noqa: E402

import ringreduce as rr  # noqa: E402

DTYPES = ["float16", "bfloat16", "float32", "float64", "int8", "uint8", "int32", "int64"]
OPS = ["sum", "prod", "min", "max", "avg"]
TOL = {"float16": (1e-2, 1e-2), "bfloat16": (3e-2, 3e-2), "float32": (1e-5, 1e-6),
       "float64": (1e-12, 1e-12)}

world = MPI.COMM_WORLD


def counts(n: int) -> list:
    return sorted({0, 1, max(n - 1, 0), n, n + 1, 1000003})


def make_input(case: int, rank: int, count: int, dtype: str, op: str) -> np.ndarray:
    """float64 values exactly representable in dtype, from seeds every rank knows."""
    rng = np.random.default_rng([case, rank])
    if dtype.startswith(("int", "uint")):
        lo = 0 if dtype == "uint8" else (-2 if op == "prod" else -20)
        hi = 3 if op == "prod" else 20
        return rng.integers(lo, hi + 1, count).astype(np.float64)
    vals = rng.uniform(0.5, 1.5, count) if op == "prod" else rng.uniform(-1.0, 1.0, count)
    return quantize(vals, dtype)


def quantize(vals: np.ndarray, dtype: str) -> np.ndarray:
    if dtype == "bfloat16":
        import torch

        return torch.from_numpy(vals).to(torch.bfloat16).to(torch.float64).numpy()
    return vals.astype(dtype).astype(np.float64)


def reference(inputs: list, op: str, dtype: str, n: int) -> np.ndarray:
    stack = np.stack(inputs)
    if op in ("sum", "avg"):
        ref = stack.sum(axis=0)
        if op == "avg":
            ref = np.trunc(ref / n) if dtype.startswith(("int", "uint")) else ref / n
        return ref
    return {"prod": np.prod, "min": np.min, "max": np.max}[op](stack, axis=0)


class Lib:
    """Device arrays of one library, converted to and from float64 NumPy."""

    def __init__(self, name: str, device: int) -> None:
        self.name, self.device = name, device
        if name == "torch":
            import torch

            self.mod = torch
            torch.cuda.set_device(device)
        else:
            import cupy

            self.mod = cupy
            cupy.cuda.Device(device).use()

    def supports(self, dtype: str) -> bool:
        return not (self.name == "cupy" and dtype == "bfloat16")

    def to_device(self, a64: np.ndarray, dtype: str):
        if self.name == "torch":
            t = self.mod.from_numpy(a64).to(getattr(self.mod, dtype))
            return t.to(f"cuda:{self.device}")
        return self.mod.asarray(a64.astype(dtype))

    def empty(self, count: int, dtype: str):
        if self.name == "torch":
            return self.mod.empty(count, dtype=getattr(self.mod, dtype), device=f"cuda:{self.device}")
        return self.mod.empty(count, dtype=dtype)

    def to_host(self, x) -> np.ndarray:
        if self.name == "torch":
            return x.to(self.mod.float64).cpu().numpy()
        return self.mod.asnumpy(x).astype(np.float64)

    def raw_bytes(self, x) -> bytes:
        if self.name == "torch":
            t = x.detach().cpu().contiguous().reshape(-1)
            return t.view(self.mod.uint8).numpy().tobytes() if t.numel() else b""
        return self.mod.asnumpy(x).tobytes()

    def sync(self) -> None:
        if self.name == "torch":
            self.mod.cuda.synchronize()
        else:
            self.mod.cuda.Device(self.device).synchronize()


def run_matrix(comm, lib: Lib, failures: list) -> int:
    n, r = comm.size, comm.rank
    digests, checked, case = [], 0, 0
    for count in counts(n):
        for dtype in DTYPES:
            for op in OPS:
                for inplace in (True, False):
                    case += 1
                    if not lib.supports(dtype):
                        continue
                    name = f"count={count} {dtype} {op} {'in' if inplace else 'out-of'}-place"
                    inputs = [make_input(case, q, count, dtype, op) for q in range(n)]
                    x = lib.to_device(inputs[r], dtype)
                    try:
                        if inplace:
                            res = comm.allreduce(x, op)
                        else:
                            out = lib.empty(count, dtype)
                            res = comm.allreduce(x, op, out=out)
                        lib.sync()
                    except Exception as e:  # noqa: BLE001 - reported, not hidden
                        failures.append(f"{name}: raised {type(e).__name__}: {e}")
                        digests.append(b"")
                        continue
                    got = lib.to_host(res)
                    want = reference(inputs, op, dtype, n)
                    if dtype in TOL:
                        rtol, atol = TOL[dtype]
                        ok = np.allclose(got, want, rtol=rtol, atol=atol)
                    else:
                        ok = np.array_equal(got, want)
                    if not ok:
                        bad = np.flatnonzero(~np.isclose(got, want, rtol=TOL.get(dtype, (0, 0))[0],
                                                         atol=TOL.get(dtype, (0, 0))[1]))
                        i = int(bad[0]) if bad.size else 0
                        failures.append(f"{name}: rank {r} element {i} is {got[i]!r}, expected "
                                        f"{want[i]!r} ({bad.size} wrong)")
                    if not inplace and not np.array_equal(lib.to_host(x), inputs[r]):
                        failures.append(f"{name}: out-of-place call modified its input")
                    digests.append(hashlib.sha256(lib.raw_bytes(res)).digest())
                    checked += 1
    every = world.allgather(digests)
    for i, d in enumerate(every[0]):
        if any(other[i] != d for other in every[1:]):
            failures.append(f"result #{i} differs in its bits between ranks")
    return checked


def run_ordering(comm, lib: Lib, failures: list) -> int:
    """The stream promises, with torch: a producer still running, Work.wait() on a side stream."""
    torch = lib.mod
    n, r = comm.size, comm.rank
    expected = n * (n + 1) / 2
    dev = f"cuda:{lib.device}"
    checked = 0
    cycles = 300_000_000  # ~0.2 s of GPU time: the host reaches allreduce long before

    # 1. The producer kernel is still running when the collective is called,
    #    on the default stream and on a user stream.
    for use_side in (False, True):
        s = torch.cuda.Stream() if use_side else torch.cuda.current_stream()
        with torch.cuda.stream(s):
            x = torch.zeros(1 << 20, dtype=torch.float32, device=dev)
            torch.cuda._sleep(cycles)
            x.fill_(r + 1)
            comm.allreduce(x)
            y = x.clone()  # on s: must see the result
        s.synchronize()
        if not bool((y == expected).all()):
            failures.append(f"producer still running ({'side' if use_side else 'default'} "
                            f"stream): got {y[:4].tolist()}, expected {expected}")
        checked += 1

    # 2. Work.wait() on a side stream orders that stream, not the host.
    x = torch.zeros(1 << 24, dtype=torch.float32, device=dev)
    torch.cuda._sleep(cycles)
    x.fill_(r + 1)
    work = comm.allreduce(x, async_op=True)
    side = torch.cuda.Stream()
    with torch.cuda.stream(side):
        work.wait()
        y = x.clone()
    side.synchronize()
    if not bool((y == expected).all()):
        failures.append(f"Work.wait() on a side stream: the side stream saw {y[:4].tolist()}, "
                        f"expected {expected}")
    if not work.is_completed():
        failures.append("Work.is_completed() is False after its stream finished")
    checked += 1

    # 3. Several asynchronous collectives in flight complete in submission order.
    xs = [torch.full((1000003,), float(r + 1 + k), device=dev) for k in range(4)]
    works = [comm.allreduce(t, async_op=True) for t in xs]
    for k, (t, w) in enumerate(zip(xs, works)):
        w.wait()
        want = sum(q + 1 + k for q in range(n))
        torch.cuda.current_stream().synchronize()
        if not bool((t == want).all()):
            failures.append(f"async collective {k}: got {t[:2].tolist()}, expected {want}")
        checked += 1

    # 4. The native NCCL baseline agrees with the ring on the same data.
    if comm.backend != "mpi":
        from ringreduce._device import native_nccl_allreduce

        a = torch.from_numpy(make_input(7, r, 1000003, "float32", "sum")).float().to(dev)
        ours = comm.allreduce(a.clone())
        theirs = native_nccl_allreduce(comm, a.clone())
        torch.cuda.synchronize()
        if not torch.allclose(ours, theirs, rtol=1e-5, atol=1e-6):
            failures.append("native ncclAllReduce and the ring disagree on float32 sum")
        checked += 1
    return checked


def run_large(comm, lib: Lib, failures: list) -> int:
    """More than 2^31 int8 elements: 64-bit counts through the whole path."""
    torch = lib.mod
    n, r = comm.size, comm.rank
    count = (1 << 31) + 33
    x = torch.full((count,), r + 1, dtype=torch.int8, device=f"cuda:{lib.device}")
    comm.allreduce(x)
    torch.cuda.synchronize()
    want = n * (n + 1) // 2
    wrong = int((x != want).sum().item())
    if wrong:
        first = int((x != want).nonzero()[0].item())
        failures.append(f"int8 x {count}: {wrong} wrong elements, first at {first} "
                        f"(= {int(x[first].item())}, expected {want})")
    return 1


def main() -> None:
    suite, backend, libname = sys.argv[1:4]
    report = {"checked": 0, "failures": [], "skipped": None}
    try:
        comm = rr.init(backend=None if backend == "default" else backend, timeout=120)
        from ringreduce._device import rank_device

        try:
            lib = Lib(libname, rank_device(comm))
        except ImportError as e:
            report["skipped"] = f"{libname} is not installed: {e}"
        else:
            run = {"matrix": run_matrix, "ordering": run_ordering, "large": run_large}[suite]
            report["checked"] = run(comm, lib, report["failures"])
            report["engines"] = comm.engines
            if comm._device_engine_for is not None:  # which path float32 sums take
                report["path"] = comm._impl.allreduce_path(comm._device_engine_for, 1000003, 2, 0)
        rr.finalize()
    except Exception:  # noqa: BLE001 - reported to the test, which fails
        report["failures"].append(traceback.format_exc())
    print("RESULT " + json.dumps(report), flush=True)


if __name__ == "__main__":
    main()
