"""worker.py's "colls" suite: reduce_scatter, allgather and broadcast on
device buffers, as the GPU ring kernel runs them (or, for ALGO mpi/ring, the
ring over the staged MPI path, the same checks).

Every dtype size, counts around N and a large one, out-of-place and
allocated outputs, allgather in place in its own block, broadcast from the
first and the last rank; results against NumPy (float64 references with the
usual tolerance, exact for integers and copies), a rerun with the same bits,
and one CUDA graph of all three collectives replayed with new values.
"""
from __future__ import annotations

import hashlib
import os

import numpy as np

from common import make_input, reference, tolerance

DTYPES = ["float16", "bfloat16", "float32", "float64", "int8", "uint8", "int32", "int64"]
FLOATS = ("float16", "bfloat16", "float32", "float64")


def segments(count: int, n: int) -> tuple:
    """reduce_scatter's blocks: the first count % n one element longer."""
    q, rem = divmod(count, n)
    sizes = [q + (1 if i < rem else 0) for i in range(n)]
    return sizes, [sum(sizes[:i]) for i in range(n)]


class Checker:
    def __init__(self, comm, lib, failures: list) -> None:
        self.comm, self.lib, self.failures = comm, lib, failures
        self.n, self.r = comm.size, comm.rank
        self.checked = 0

    def same(self, name: str, got, want: np.ndarray, tol=None) -> None:
        self.checked += 1
        g = self.lib.to_host(got)
        if g.shape != want.shape:
            self.failures.append(f"{name}: shape {g.shape}, expected {want.shape}")
            return
        bad = g != want if tol is None else ~(np.abs(g - want) <= tol)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            self.failures.append(f"{name}: rank {self.r} element {i} is {g[i]!r}, expected "
                                 f"{want[i]!r} ({int(bad.sum())} wrong)")

    def reduce_scatter(self, count: int, dtype: str, op: str, forced) -> None:
        lib, n, r = self.lib, self.n, self.r
        inputs = [make_input(q, count, dtype, op, 21) for q in range(n)]
        ref = reference(inputs, op, dtype)
        tol = tolerance(inputs, ref, op, dtype)
        sizes, offs = segments(count, n)
        lo, hi = offs[r], offs[r] + sizes[r]
        for given in (False, True):
            name = f"reduce_scatter count={count} {dtype} {op} out={'given' if given else 'new'}"
            x = lib.to_device(inputs[r], dtype)
            out = lib.poisoned(sizes[r], dtype) if given else None
            try:
                res = self.comm.reduce_scatter(x, out=out, op=op, algo=forced)
                lib.sync()
            except Exception as e:  # noqa: BLE001 - reported, not hidden
                self.failures.append(f"{name}: raised {type(e).__name__}: {e}")
                continue
            self.same(name, res, ref[lo:hi], tol[lo:hi])
            if not np.array_equal(lib.to_host(x), inputs[r]):
                self.failures.append(f"{name}: the call modified its input")
            if given and count > 1000 and op == "sum":
                again = self.comm.reduce_scatter(x, out=lib.poisoned(sizes[r], dtype), op=op,
                                                 algo=forced)
                lib.sync()
                if hashlib.sha256(lib.raw(again)).digest() != hashlib.sha256(lib.raw(res)).digest():
                    self.failures.append(f"{name}: a rerun gave different bits")

    def allgather(self, count: int, dtype: str) -> None:
        lib, n, r = self.lib, self.n, self.r
        inputs = [make_input(q, count, dtype, "sum", 22) for q in range(n)]
        want = np.concatenate(inputs) if count else np.zeros(0)
        for mode in ("new", "given", "in place"):
            name = f"allgather count={count} {dtype} out={mode}"
            try:
                if mode == "in place":
                    out = lib.poisoned(n * count, dtype)
                    out[r * count:(r + 1) * count] = lib.to_device(inputs[r], dtype)
                    res = self.comm.allgather(out[r * count:(r + 1) * count], out=out,
                                              sizes=[count] * n)
                else:
                    x = lib.to_device(inputs[r], dtype)
                    out = lib.poisoned(n * count, dtype) if mode == "given" else None
                    res = self.comm.allgather(x, out=out, sizes=[count] * n)
                lib.sync()
            except Exception as e:  # noqa: BLE001
                self.failures.append(f"{name}: raised {type(e).__name__}: {e}")
                continue
            self.same(name, res, want)

    def broadcast(self, count: int, dtype: str) -> None:
        lib, n, r = self.lib, self.n, self.r
        for root in sorted({0, n - 1}):
            inputs = [make_input(q, count, dtype, "sum", 23 + root) for q in range(n)]
            name = f"broadcast count={count} {dtype} root={root}"
            x = lib.to_device(inputs[r], dtype)
            try:
                self.comm.broadcast(x, root)
                lib.sync()
            except Exception as e:  # noqa: BLE001
                self.failures.append(f"{name}: raised {type(e).__name__}: {e}")
                continue
            self.same(name, x, inputs[root])

    def graph(self) -> None:
        """All three captured in one torch CUDA graph, replayed with new values."""
        torch, comm, n, r = self.lib.mod, self.comm, self.n, self.r
        dev = f"cuda:{self.lib.device}"
        count = 70001 * n + 3  # blocks of unequal length: the scalar kernels
        sizes, offs = segments(count, n)
        x = torch.zeros(count, dtype=torch.float32, device=dev)
        rs = torch.zeros(sizes[r], dtype=torch.float32, device=dev)
        y = torch.zeros(4099, dtype=torch.int32, device=dev)
        ag = torch.zeros(4099 * n, dtype=torch.int32, device=dev)
        z = torch.zeros(10007, dtype=torch.bfloat16, device=dev)

        def calls():
            comm.reduce_scatter(x, out=rs)
            comm.allgather(y, out=ag, sizes=[4099] * n)
            comm.broadcast(z, n - 1)

        calls()  # eager warm-up
        torch.cuda.synchronize()
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g):
            calls()
        base = torch.arange(count, device=dev, dtype=torch.float32) % 17 - 8
        ybase = torch.arange(4099, device=dev, dtype=torch.int32) % 101
        zbase = torch.arange(10007, device=dev, dtype=torch.float32) % 64
        for k in range(20):
            x.copy_(base + k * (r + 1))
            y.copy_(ybase * (r + 1) + k)
            z.copy_((zbase + k + r).to(torch.bfloat16))
            g.replay()
            torch.cuda.synchronize()
            lo = offs[r]
            want_rs = (n * (base[lo:lo + sizes[r]].double()) + k * n * (n + 1) / 2).cpu().numpy()
            want_ag = np.concatenate([(ybase * (q + 1) + k).cpu().numpy() for q in range(n)])
            want_z = (zbase + k + n - 1).to(torch.bfloat16).double().cpu().numpy()
            before = len(self.failures)
            self.same(f"graph replay {k}: reduce_scatter", rs, want_rs)
            self.same(f"graph replay {k}: allgather", ag, want_ag.astype(np.float64))
            self.same(f"graph replay {k}: broadcast", z, want_z)
            if len(self.failures) > before:
                break
        del g


def run_colls(comms, lib, algo: str, failures: list) -> int:
    comm = comms["mpi" if algo.startswith("mpi/") else "default"]
    forced = None if algo == "auto" else algo.split("/")[-1]
    c = Checker(comm, lib, failures)
    # The first device collective makes the device engine (on every rank at
    # once); explain() needs it to exist.
    comm.allreduce(lib.to_device(np.zeros(1), "float32"))
    lib.sync()
    if algo == "gpu_ring":  # the selector's own choice, for device buffers
        for coll in ("reduce_scatter", "allgather", "broadcast"):
            chosen, why = comm.explain(coll, lib.to_device(np.zeros(4096), "float32"))
            if chosen != "gpu_ring":
                failures.append(f"{coll}: the selector chose {chosen} ({why}), not gpu_ring")
        forced = None  # allgather and broadcast take no algo=: all run as chosen
    n = comm.size
    big = int(os.environ.get("RR_TEST_BIG", 1000003))
    for count in sorted({0, 1, n - 1, n, n + 1, 64 * n, big}):
        for dtype in DTYPES:
            if lib.name == "cupy" and dtype == "bfloat16":
                continue
            for op in (("sum", "avg") if dtype in FLOATS else ("sum", "max")):
                c.reduce_scatter(count, dtype, op, forced)
            c.allgather(count, dtype)
            c.broadcast(count, dtype)
    if lib.name == "torch" and lib.device >= 0 and algo in ("auto", "gpu_ring"):
        c.graph()  # the host transports wait on the host: they cannot be captured
    return c.checked
