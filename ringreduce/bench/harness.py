"""The measuring loop: buffers, reproducible inputs, the checker and timers.

Every rank regenerates every rank's input from (seed, rank), so the expected
result is known everywhere without communication. Inputs are a short table
(period PERIOD elements, a prime, so a segment or chunk landing at the wrong
offset shows up as wrong values) repeated over the buffer; the expected result
is the float64 reduction of the N tables, repeated the same way.
"""
from __future__ import annotations

import math
import os
import statistics
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np

PERIOD = 1021                  # elements; prime
CHECK_BLOCK = PERIOD * 1024    # elements compared at a time (bounds the float64 temporaries)
CORRUPT_ENV = "RINGREDUCE_BENCH_CORRUPT"  # fault injection: "<backend>" corrupts one element

ITEMSIZE = {"float16": 2, "bfloat16": 2, "float32": 4, "float64": 8,
            "int8": 1, "uint8": 1, "int32": 4, "int64": 8}
# Largest integer magnitude every value (and partial result) must stay within
# for a sum to be exact in the dtype.
_EXACT = {"float16": 2048, "bfloat16": 256, "float32": 1 << 24, "float64": 1 << 53,
          "int8": 127, "uint8": 255, "int32": (1 << 31) - 1, "int64": (1 << 63) - 1}
_EPS = {"float16": 2.0 ** -10, "bfloat16": 2.0 ** -7, "float32": 2.0 ** -23,
        "float64": 2.0 ** -52}


def torch_dtype(name: str):
    import torch

    return getattr(torch, name)


# -- control channel: agreement between ranks outside the timed loop ---------------
class Control:
    """Small collectives on Python numbers: every rank must report the same time."""

    rank = 0
    size = 1
    mpi_version: Optional[str] = None

    def barrier(self) -> None:
        pass

    def max(self, x: float) -> float:
        return x

    def sum(self, x: int) -> int:
        return x

    def bcast(self, obj: Any) -> Any:
        return obj

    def allgather(self, obj: Any) -> List[Any]:
        return [obj]

    def close(self) -> None:
        pass


class MpiControl(Control):
    def __init__(self) -> None:
        from mpi4py import MPI

        self.MPI = MPI
        self.comm = MPI.COMM_WORLD.Dup()
        self.rank, self.size = self.comm.rank, self.comm.size
        try:
            line = MPI.Get_library_version().replace("\0", "").strip().splitlines()[0]
            self.mpi_version = line.split(",")[0].strip()  # e.g. "Open MPI v4.1.4"
        except Exception:
            self.mpi_version = None

    def barrier(self) -> None:
        self.comm.Barrier()

    def max(self, x: float) -> float:
        return self.comm.allreduce(float(x), op=self.MPI.MAX)

    def sum(self, x: int) -> int:
        return self.comm.allreduce(int(x), op=self.MPI.SUM)

    def bcast(self, obj: Any) -> Any:
        return self.comm.bcast(obj, root=0)

    def allgather(self, obj: Any) -> List[Any]:
        return self.comm.allgather(obj)

    def close(self) -> None:
        self.comm.Free()


class TorchControl(Control):
    """For torchrun without MPI: a gloo group of torch.distributed."""

    def __init__(self, rank: int, size: int) -> None:
        import torch.distributed as dist

        self.dist = dist
        self.rank, self.size = rank, size
        self.group = dist.new_group(backend="gloo")

    def _reduce(self, x: float, op) -> float:
        import torch

        t = torch.tensor([x], dtype=torch.float64)
        self.dist.all_reduce(t, op=op, group=self.group)
        return float(t.item())

    def barrier(self) -> None:
        self.dist.barrier(group=self.group)

    def max(self, x: float) -> float:
        return self._reduce(x, self.dist.ReduceOp.MAX)

    def sum(self, x: int) -> int:
        return int(round(self._reduce(x, self.dist.ReduceOp.SUM)))

    def bcast(self, obj: Any) -> Any:
        box = [obj]
        self.dist.broadcast_object_list(box, src=0, group=self.group)
        return box[0]

    def allgather(self, obj: Any) -> List[Any]:
        out: List[Any] = [None] * self.size
        self.dist.all_gather_object(out, obj, group=self.group)
        return out


# -- inputs and expected results -------------------------------------------------------
def value_range(dtype: str, op: str, nranks: int) -> Tuple[int, int]:
    """Integer range of input values that keeps every partial result exact."""
    limit = _EXACT[dtype]
    k = min(limit // max(nranks, 1), 1000) if op in ("sum", "avg") else min(limit, 1000)
    return (0, k) if dtype == "uint8" else (-k, k)


def rank_table(seed: int, rank: int, nranks: int, dtype: str, op: str) -> np.ndarray:
    """Rank `rank`'s PERIOD input values (float64 holding small integers)."""
    rng = np.random.default_rng([seed, rank, nranks])
    if op == "prod":
        # Magnitudes 1, and 2 on exactly one rank for every third element:
        # any product has magnitude <= 2 and is exact in every dtype.
        j = np.arange(PERIOD)
        mag = np.where((j % 3 == 0) & (j % nranks == rank), 2.0, 1.0)
        if dtype == "uint8":
            return mag
        return mag * rng.choice([-1.0, 1.0], size=PERIOD)
    lo, hi = value_range(dtype, op, nranks)
    return rng.integers(lo, hi + 1, size=PERIOD).astype(np.float64)


def expected_table(seed: int, nranks: int, dtype: str, op: str) -> Tuple[np.ndarray, float]:
    """(expected PERIOD values in float64, relative tolerance). The tolerance
    is 0 except for floating avg, whose final division rounds."""
    tables = np.stack([rank_table(seed, r, nranks, dtype, op) for r in range(nranks)])
    if op == "sum":
        return tables.sum(axis=0), 0.0
    if op == "prod":
        return tables.prod(axis=0), 0.0
    if op == "min":
        return tables.min(axis=0), 0.0
    if op == "max":
        return tables.max(axis=0), 0.0
    s = tables.sum(axis=0)
    if dtype in _EPS:
        return s / nranks, _EPS[dtype]
    return np.trunc(s / nranks), 0.0


def fill_periodic(t: Any, table: Any) -> None:
    """Write table repeated over the flat tensor t, by doubling copies (no big temporary)."""
    flat = t.view(-1)
    n = flat.numel()
    k = min(n, table.numel())
    if k == 0:
        return
    flat[:k].copy_(table[:k])
    while k < n:
        m = min(k, n - k)
        flat[k:k + m].copy_(flat[:m])
        k += m


def count_wrong(result: Any, expected: Any, rtol: float = 0.0) -> int:
    """Elements of the flat tensor `result` that differ from `expected`, a
    float64 tensor of PERIOD values repeated over the result (compared in
    float64; NaN always counts as wrong)."""
    import torch

    flat = result.reshape(-1)
    n = flat.numel()
    period = expected.numel()
    if n == 0:
        return 0
    reps = -(-min(n, CHECK_BLOCK) // period)
    exp_block = expected.to(flat.device).repeat(reps)
    block = reps * period
    wrong = 0
    for start in range(0, n, block):
        got = flat[start:start + block].to(torch.float64)
        e = exp_block[:got.numel()]
        if rtol == 0.0:
            bad = got != e
        else:
            bad = ~(torch.abs(got - e) <= rtol * torch.abs(e))
        wrong += int(bad.sum().item())
    return wrong


def corrupt_one(t: Any) -> None:
    """Fault injection: make one element certainly wrong (0 <-> 1, both exact in every dtype)."""
    flat = t.view(-1)
    if flat.numel() == 0:
        return
    i = flat.numel() // 2
    flat[i] = 1 if float(flat[i].item()) == 0 else 0


# -- timing -----------------------------------------------------------------------------
class HostTimer:
    """Monotonic clock; run() has returned with the result ready."""

    def __init__(self) -> None:
        self.times: List[float] = []

    def time(self, fn: Callable[[], None]) -> None:
        t0 = time.perf_counter()
        fn()
        self.times.append(time.perf_counter() - t0)

    def collect(self) -> List[float]:
        return self.times


class CudaTimer:
    """CUDA events on the current stream, read after one synchronize per batch.

    Iterations are enqueued back to back, as nccl-tests does: an event before
    the first and one after every iteration, and iteration i takes the time
    between events i-1 and i. While the GPU is the bottleneck, the host's
    launch cost stays hidden behind the previous iteration; when the host is
    (small messages), the per-call cost of the calling layer is what is timed.
    """

    def __init__(self) -> None:
        import torch

        self.torch = torch
        self.events: List[Any] = []

    def time(self, fn: Callable[[], None]) -> None:
        if not self.events:
            start = self.torch.cuda.Event(enable_timing=True)
            start.record()
            self.events.append(start)
        fn()
        end = self.torch.cuda.Event(enable_timing=True)
        end.record()
        self.events.append(end)

    def collect(self) -> List[float]:
        self.torch.cuda.synchronize()
        ev = self.events
        return [ev[i - 1].elapsed_time(ev[i]) * 1e-3 for i in range(1, len(ev))]


def new_timer(device: str):
    return CudaTimer() if device == "cuda" else HostTimer()


def synchronize(device: str) -> None:
    if device == "cuda":
        import torch

        torch.cuda.synchronize()


# -- results ------------------------------------------------------------------------------
def algbw(nbytes: int, seconds: float) -> float:
    """GB/s (1e9 bytes per second) of user data: bytes / time."""
    return nbytes / seconds / 1e9 if seconds > 0 else 0.0


def busbw(algbw_gbps: float, nranks: int) -> float:
    """Bus bandwidth of a ring all-reduce: algbw * 2(N-1)/N (nccl-tests' definition)."""
    return algbw_gbps * 2.0 * (nranks - 1) / nranks if nranks > 0 else 0.0


@dataclass
class Row:
    backend: str
    bytes: int
    count: int
    dtype: str
    op: str
    inplace: bool
    time_us: float
    algbw: float
    busbw: float
    wrong: Optional[int]
    iters: int = 0

    def as_dict(self) -> Dict[str, Any]:
        return {"backend": self.backend, "bytes": self.bytes, "count": self.count,
                "dtype": self.dtype, "op": self.op, "inplace": self.inplace,
                "time_us": self.time_us, "algbw": self.algbw, "busbw": self.busbw,
                "wrong": self.wrong, "iters": self.iters}


@dataclass
class Plan:
    warmup: int
    iters: int
    budget: float
    min_iters: int
    check: bool
    seed: int
    corrupt: Optional[str] = field(default_factory=lambda: os.environ.get(CORRUPT_ENV) or None)

    def counts(self, first_s: float) -> Tuple[int, int]:
        """(more warm-ups, timed iterations) once the first warm-up took first_s seconds."""
        if self.budget <= 0 or first_s <= 0:
            return max(self.warmup - 1, 0), self.iters
        n = int(self.budget / first_s)
        iters = max(self.min_iters, min(self.iters, n))
        warm = max(0, min(self.warmup, int(0.25 * self.budget / first_s)) - 1)
        return warm, iters


class Harness:
    def __init__(self, device: str, control: Control, plan: Plan) -> None:
        self.device = device
        self.control = control
        self.plan = plan
        self.nranks = control.size
        self._tables: Dict[Tuple[str, str], Tuple[Any, Any, float]] = {}

    def tables(self, dtype: str, op: str):
        """(this rank's input table as dtype, expected float64 table, rtol), cached."""
        import torch

        key = (dtype, op)
        if key not in self._tables:
            mine = rank_table(self.plan.seed, self.control.rank, self.nranks, dtype, op)
            exp, rtol = expected_table(self.plan.seed, self.nranks, dtype, op)
            dev = "cuda" if self.device == "cuda" else "cpu"
            self._tables[key] = (torch.from_numpy(mine).to(torch_dtype(dtype)).to(dev),
                                 torch.from_numpy(exp).to(dev), rtol)
        return self._tables[key]

    def allocate(self, count: int, dtype: str) -> Tuple[Any, Any]:
        import torch

        dev = "cuda" if self.device == "cuda" else "cpu"
        dt = torch_dtype(dtype)
        return torch.empty(count, dtype=dt, device=dev), torch.empty(count, dtype=dt, device=dev)

    def measure(self, backend: Any, inp: Any, out: Any, dtype: str, op: str,
                inplace: bool) -> Tuple[float, Optional[int], int]:
        """(agreed time in seconds, #wrong summed over ranks or None, timed iterations)."""
        mine, exp, rtol = self.tables(dtype, op)
        target = None if inplace else out
        wrong: Optional[int] = None
        if self.plan.check:
            fill_periodic(inp, mine)
            if not inplace:
                out.fill_(0)
                # A stale right answer from an earlier backend must not pass.
            synchronize(self.device)
            self.control.barrier()
            backend.run(inp, target, op)
            synchronize(self.device)
            result = inp if inplace else out
            if self.plan.corrupt == backend.name and self.control.rank == self.nranks - 1:
                corrupt_one(result)
            wrong = self.control.sum(count_wrong(result, exp, rtol))
        if inplace or not self.plan.check:
            fill_periodic(inp, mine)
        synchronize(self.device)

        run = lambda: backend.run(inp, target, op)  # noqa: E731
        first = 0.0
        if self.plan.warmup > 0 or self.plan.budget > 0:
            self.control.barrier()
            t = new_timer(self.device)
            t.time(run)
            first = self.control.max(t.collect()[0])
        more_warm, iters = self.plan.counts(first)
        for _ in range(more_warm):
            run()
        synchronize(self.device)
        self.control.barrier()
        timer = new_timer(self.device)
        for _ in range(iters):
            timer.time(run)
        times = timer.collect()
        return self.control.max(statistics.median(times)), wrong, iters


def measure_reduce_rate(device: str, control: Control, nbytes: int = 16 << 20,
                        iters: int = 5) -> Dict[str, Any]:
    """Local reduction rate (float32 x += y) on every rank at once, the slowest
    rank's median: the fit's separately measured gamma."""
    import torch

    dev = "cuda" if device == "cuda" else "cpu"
    n = nbytes // 4
    x = torch.ones(n, dtype=torch.float32, device=dev)
    y = torch.ones(n, dtype=torch.float32, device=dev)
    timer = new_timer(device)
    x.add_(y)
    synchronize(device)
    control.barrier()
    for _ in range(iters):
        timer.time(lambda: x.add_(y))
    t = control.max(statistics.median(timer.collect()))
    return {"dtype": "float32", "bytes": nbytes, "gbps": nbytes / t / 1e9,
            "how": f"torch add_ of two {nbytes >> 20} MiB float32 tensors on {dev}, all ranks "
                   f"at once, slowest rank's median of {iters}"}


class Progress:
    """A one-line progress bar on stderr (rank 0, terminals only)."""

    def __init__(self, total: int, enabled: bool) -> None:
        self.total = max(total, 1)
        self.done = 0
        self.enabled = enabled and sys.stderr.isatty()

    def step(self, label: str) -> None:
        self.done += 1
        if not self.enabled:
            return
        width = 30
        k = int(width * self.done / self.total)
        sys.stderr.write(f"\r[{'#' * k}{'.' * (width - k)}] {self.done}/{self.total} "
                         f"{label:<40.40}")
        sys.stderr.flush()

    def close(self) -> None:
        if self.enabled:
            sys.stderr.write("\r" + " " * 90 + "\r")
            sys.stderr.flush()


def geomean(xs: List[float]) -> float:
    xs = [x for x in xs if x > 0 and math.isfinite(x)]
    return math.exp(sum(math.log(x) for x in xs) / len(xs)) if xs else float("nan")
