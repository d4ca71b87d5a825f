"""The measuring loop: one row (backend, size, dtype, op, mode) at a time.

A row has phases, each started by a barrier and ended by an agreement over
the control channel (control.agree), so every rank makes the same calls in the
same order even when a backend raises on one of them: the row is then
skipped with the error, and the run goes on.

Eager rows: check (outside the timed loop), first warm-up (timed, for
--budget), more warm-ups, timed iterations. Graph rows (--graph) follow
nccl-tests' -G: after eager warm-ups, capture K calls into a CUDA graph once
per size and time each replay with events, per replay / K; a graph of one
call is captured and replayed first to check its result.
"""
from __future__ import annotations

import statistics
import traceback
from dataclasses import dataclass
from typing import Any, Callable, Dict, Optional, Tuple

from .check import Tables, count_wrong, fill_periodic, torch_dtype
from .control import Control, agree
from .timing import Plan, new_timer, synchronize


@dataclass
class Outcome:
    seconds: float          # per call: the slowest rank's median
    wrong: Optional[int]    # summed over ranks; None when not checked
    iters: int              # timed iterations (graph: replays)


def _error(e: BaseException) -> str:
    where = traceback.extract_tb(e.__traceback__)
    at = f" (at {where[-1].name})" if where else ""
    return f"{type(e).__name__}: {e}{at}".strip()


class Harness:
    def __init__(self, device: str, control: Control, plan: Plan) -> None:
        self.device = device
        self.control = control
        self.plan = plan
        self.nranks = control.size
        self.tables = Tables(plan.seed, control.rank, control.size, device)

    def allocate(self, count: int, dtype: str) -> Tuple[Any, Any]:
        import torch

        dev = "cuda" if self.device == "cuda" else "cpu"
        dt = torch_dtype(dtype)
        return torch.empty(count, dtype=dt, device=dev), torch.empty(count, dtype=dt, device=dev)

    # -- phases ---------------------------------------------------------------------
    def phase(self, fn: Callable[[], Any], barrier: bool = True, share: bool = True) -> Any:
        """Run fn on every rank. Returns every rank's result (share) or this
        rank's own (not share: tensors, graphs), or raises RowSkipped on every
        rank when fn failed on any."""
        if barrier:
            self.control.barrier()
        err, value = None, None
        try:
            value = fn()
        except Exception as e:  # noqa: BLE001 - any failure skips the row, on every rank
            err = _error(e)
        got = agree(self.control, err, value if share else None)
        return got if share else value

    def buffers(self, backend: Any, count: int, dtype: str, shared: Tuple[Any, Any]
                ) -> Tuple[Any, Any]:
        """The backend's own buffers for this size (a collective), or the shared ones."""
        own = self.phase(lambda: backend.buffers(count, dtype), barrier=False, share=False)
        return own if own is not None else shared

    def _check(self, call: Callable[[], None], backend: Any, inp: Any, out: Any, dtype: str,
               op: str, inplace: bool) -> Optional[int]:
        """Fill the inputs, make one call, count wrong elements on every rank."""
        if not (self.plan.check and backend.checkable):
            return None
        mine, exp, rtol = self.tables.get(dtype, op)

        def prepare() -> None:
            fill_periodic(inp, mine)
            if not inplace:
                out.fill_(0)  # a stale right answer from an earlier backend must not pass
            synchronize(self.device)

        def once() -> int:
            call()
            synchronize(self.device)
            return count_wrong(inp if inplace else out, exp, rtol)

        self.phase(prepare, barrier=False)
        return sum(self.phase(once))

    def _refill(self, inp: Any, dtype: str, op: str) -> None:
        mine, _, _ = self.tables.get(dtype, op)

        def fill() -> None:
            fill_periodic(inp, mine)
            synchronize(self.device)
        self.phase(fill, barrier=False)

    def _timed(self, step: Callable[[], None], per: int = 1) -> Tuple[float, int]:
        """(slowest rank's median seconds per call, iterations): first warm-up
        (timed, for --budget), more warm-ups, then the timed loop."""
        first = 0.0
        if self.plan.warmup > 0 or self.plan.budget > 0:
            def one() -> float:
                t = new_timer(self.device)
                t.time(step)
                return t.collect()[0]
            first = max(self.phase(one))
        more_warm, iters = self.plan.counts(first)

        def warm() -> None:
            for _ in range(more_warm):
                step()
            synchronize(self.device)
        self.phase(warm)

        def loop() -> float:
            timer = new_timer(self.device)
            for _ in range(iters):
                timer.time(step)
            return statistics.median(timer.collect()) / per
        return max(self.phase(loop)), iters

    # -- rows -----------------------------------------------------------------------
    def measure(self, backend: Any, inp: Any, out: Any, dtype: str, op: str,
                inplace: bool) -> Outcome:
        """One eager row; raises RowSkipped (on every rank) when it cannot run."""
        target = None if inplace else out
        run = lambda: backend.run(inp, target, op)  # noqa: E731
        wrong = self._check(run, backend, inp, out, dtype, op, inplace)
        if inplace or wrong is None:
            self._refill(inp, dtype, op)
        seconds, iters = self._timed(run)
        return Outcome(seconds, wrong, iters)

    def measure_graph(self, backend: Any, inp: Any, out: Any, dtype: str, op: str,
                      inplace: bool) -> Outcome:
        """One graph row: K calls captured once, timed per replay / K."""
        import torch

        k = self.plan.graph_calls
        target = None if inplace else out
        run = lambda: backend.run(inp, target, op)  # noqa: E731

        def side_warmup() -> None:
            # Eager calls on a side stream before capture, as torch.cuda.graph
            # asks: libraries set up lazily (streams, handles, buffers) here.
            self._refill_local(inp, dtype, op)
            s = torch.cuda.Stream()
            s.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(s):
                for _ in range(max(1, min(self.plan.warmup, 3))):
                    run()
            torch.cuda.current_stream().wait_stream(s)
            torch.cuda.synchronize()

        def capture(calls: int) -> Callable[[], Any]:
            def make() -> Any:
                g = torch.cuda.CUDAGraph()
                with torch.cuda.graph(g):
                    for _ in range(calls):
                        run()
                torch.cuda.synchronize()
                return g
            return make

        self.phase(side_warmup)
        one = self.phase(capture(1), share=False)
        wrong = self._check(one.replay, backend, inp, out, dtype, op, inplace)
        del one
        many = self.phase(capture(k), share=False)
        self._refill(inp, dtype, op)
        try:
            seconds, iters = self._timed(many.replay, per=k)
        finally:
            del many
        return Outcome(seconds, wrong, iters)

    def _refill_local(self, inp: Any, dtype: str, op: str) -> None:
        fill_periodic(inp, self.tables.get(dtype, op)[0])


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
