"""Timers and iteration counts.

On the host every iteration is timed on its own with a monotonic clock. For
device buffers, CUDA events on the caller's stream, iterations enqueued back
to back as nccl-tests does. A CUDA graph replay is timed like one iteration
(and divided by the calls it holds, by the caller).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable, List, Tuple


class HostTimer:
    """Monotonic clock; run() has returned with the result ready."""

    def __init__(self) -> None:
        self.times: List[float] = []

    def time(self, fn: Callable[[], Any]) -> None:
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

    def time(self, fn: Callable[[], Any]) -> None:
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


@dataclass
class Plan:
    """How many warm-ups and timed iterations (or graph replays) a row gets."""

    warmup: int
    iters: int
    budget: float
    min_iters: int
    check: bool
    seed: int
    graph_calls: int = 20  # calls captured in one CUDA graph (--graph-iters)

    def counts(self, first_s: float) -> Tuple[int, int]:
        """(more warm-ups, timed iterations) once the first warm-up took first_s seconds."""
        if self.budget <= 0 or first_s <= 0:
            return max(self.warmup - 1, 0), self.iters
        n = int(self.budget / first_s)
        iters = max(self.min_iters, min(self.iters, n))
        warm = max(0, min(self.warmup, int(0.25 * self.budget / first_s)) - 1)
        return warm, iters
