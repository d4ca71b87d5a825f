"""DDP communication hooks that reduce gradient buckets with ringreduce.

Usage::

    ddp = DistributedDataParallel(model, ...)
    ddp.register_comm_hook(state=None, hook=ringreduce.torch.allreduce_hook)

``state`` is None (the default communicator; ``ringreduce.init()`` is called
if needed) or a ``ringreduce.Communicator``. Each hook returns a
``torch.futures.Future`` holding the averaged bucket, as DDP expects:

* host (CPU) buckets: the reduction runs on the communicator's worker thread
  and a helper thread completes the future when it ends, so backward is never
  blocked by communication;
* CUDA buckets: the future is CUDA-aware, like NCCL's. It is completed at once
  on a side stream that waits for the collective, so whoever waits on it
  (DDP's reducer) makes its stream wait, and the host never blocks.
"""
import os
import queue
import threading
from typing import Any, Callable, Dict, Optional

import torch
import torch.distributed as dist

import ringreduce as rr
from ringreduce.comm import Communicator

__all__ = ["allreduce_hook", "fp16_compress_hook", "bf16_compress_hook"]


def resolve_comm(state: Any) -> Communicator:
    """The communicator a hook or optimizer should use for `state`."""
    if state is None:
        return rr.init()
    if isinstance(state, Communicator):
        return state
    raise TypeError(f"state must be None (the default communicator) or a "
                    f"ringreduce.Communicator, got {type(state).__name__}")


class _Completer:
    """A daemon thread that completes futures of host-side collectives.

    ringreduce's Work has no completion callback, so one thread per process
    waits on the host works in the order they were queued (which is also the
    order the communicator runs them) and completes each future. The thread
    holds no lock the autograd thread needs: it blocks in Work.wait() with
    the GIL released, so DDP's reducer can keep queueing buckets meanwhile."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread: Optional[threading.Thread] = None
        self._pid = -1

    def submit(self, fut: torch.futures.Future, produce: Callable[[], Any]) -> None:
        """Queue `produce` (which waits for the work and returns the value)."""
        with self._lock:
            if self._thread is None or self._pid != os.getpid():
                # After a fork the old thread does not exist in the child.
                self._queue = queue.SimpleQueue()
                self._pid = os.getpid()
                self._thread = threading.Thread(target=self._run, name="ringreduce-futures",
                                                daemon=True)
                self._thread.start()
            self._queue.put((fut, produce))

    def _run(self) -> None:
        q = self._queue
        while True:
            fut, produce = q.get()
            try:
                value = produce()
            except BaseException as e:  # noqa: BLE001 - every error must reach the waiter
                fut.set_exception(e)
                continue
            fut.set_result(value)


_completer = _Completer()
_side_streams: Dict[int, Any] = {}


def _side_stream(device: torch.device):
    idx = device.index if device.index is not None else torch.cuda.current_device()
    s = _side_streams.get(idx)
    if s is None:
        s = torch.cuda.Stream(device=idx)
        _side_streams[idx] = s
    return s


def future_when_done(device: torch.device, work_wait: Callable[[], Any],
                     finish: Callable[[], Any]) -> torch.futures.Future:
    """A future completed with finish() once the collective behind
    `work_wait` has finished.

    Host: work_wait() and finish() run on the helper thread. CUDA: they run
    now, on a side stream (work_wait makes that stream wait, finish enqueues
    any copies there); the future records an event on that stream so a waiter
    orders its own stream after it, and the host does not block."""
    if device.type == "cuda":
        stream = _side_stream(device)
        fut = torch.futures.Future(devices=[device])
        with torch.cuda.device(device), torch.cuda.stream(stream):
            work_wait()
            value = finish()
            fut.set_result(value)
        return fut
    fut = torch.futures.Future()

    def produce():
        work_wait()
        return finish()

    _completer.submit(fut, produce)
    return fut


def reduce_average(comm: Communicator, buf: torch.Tensor,
                   wire_dtype: Optional[torch.dtype]) -> torch.futures.Future:
    """Average `buf` over ranks, in place, sending it as `wire_dtype`.

    Divides by the number of ranks before the sum, so a half-precision wire
    format cannot overflow where the full-precision average would not."""
    n = comm.size
    same = wire_dtype is None or wire_dtype == buf.dtype
    if same and buf.dtype in (torch.float32, torch.float64):
        # float32/float64: "avg" divides inside the reduction, one pass fewer
        # over the bucket; their range leaves the sum no room to overflow
        # where the average would not.
        work = comm.allreduce(buf, "avg", async_op=True)
        return future_when_done(buf.device, work.wait, lambda: buf)
    buf.div_(n)  # half precision: divide first, so the sum cannot overflow
    if same:
        work = comm.allreduce(buf, "sum", async_op=True)
        return future_when_done(buf.device, work.wait, lambda: buf)
    wire = buf.to(wire_dtype)
    work = comm.allreduce(wire, "sum", async_op=True)

    def finish():
        if buf.is_cuda:
            # The side stream reads `wire`; keep its memory until it has.
            wire.record_stream(torch.cuda.current_stream(buf.device))
        buf.copy_(wire)
        return buf

    return future_when_done(buf.device, work.wait, finish)


def allreduce_hook(state: Optional[Communicator],
                   bucket: dist.GradBucket) -> torch.futures.Future[torch.Tensor]:
    """Average the bucket over ranks at full precision."""
    return reduce_average(resolve_comm(state), bucket.buffer(), None)


def fp16_compress_hook(state: Optional[Communicator],
                       bucket: dist.GradBucket) -> torch.futures.Future[torch.Tensor]:
    """Average the bucket over ranks, sending float16 (half the bytes).

    The result is written back in the bucket's own dtype."""
    return reduce_average(resolve_comm(state), bucket.buffer(), torch.float16)


def bf16_compress_hook(state: Optional[Communicator],
                       bucket: dist.GradBucket) -> torch.futures.Future[torch.Tensor]:
    """Average the bucket over ranks, sending bfloat16 (half the bytes, fp32's
    exponent range, 8 bits of mantissa)."""
    return reduce_average(resolve_comm(state), bucket.buffer(), torch.bfloat16)


# DDP.register_comm_hook insists on NCCL >= 2.10 for any hook *named*
# "bf16_compress_hook" (torch's own needs it); ours needs no NCCL, so it
# goes by a distinct __name__ while keeping its public name.
bf16_compress_hook.__name__ = "ringreduce_bf16_compress_hook"
bf16_compress_hook.__qualname__ = "ringreduce_bf16_compress_hook"
