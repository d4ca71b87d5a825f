"""Pieces of the "ringreduce" torch.distributed backend that do not depend on
the process group: reduce ops, errors of torch's DistError family, the Work
type, and a decorator that turns ringreduce's errors into those."""
from __future__ import annotations

import datetime
import functools
from typing import Any, Callable, List, Optional, Tuple

import torch
import torch.distributed as dist

import ringreduce as rr

__all__ = ["RingReduceDistError", "RingReduceDistTimeout", "reduce_op", "translate",
           "dist_errors", "premultiplied", "Work", "done_work"]

_RED = dist.ReduceOp.RedOpType
_OPS = {_RED.SUM: "sum", _RED.PRODUCT: "prod", _RED.MIN: "min", _RED.MAX: "max",
        _RED.AVG: "avg", _RED.BAND: "band", _RED.BOR: "bor", _RED.BXOR: "bxor"}


class RingReduceDistError(dist.DistBackendError, rr.RingReduceError):
    """A ringreduce collective failed, raised through torch.distributed: both a
    torch.distributed.DistBackendError (so a DistError) and a
    ringreduce.RingReduceError."""


class RingReduceDistTimeout(RingReduceDistError, rr.CollectiveTimeout):
    """A collective timed out (also a ringreduce.CollectiveTimeout and a TimeoutError)."""


def translate(e: BaseException) -> BaseException:
    """The DistError-family exception for a ringreduce error (others unchanged)."""
    if isinstance(e, RingReduceDistError) or not isinstance(e, rr.RingReduceError):
        return e
    cls = RingReduceDistTimeout if isinstance(e, rr.CollectiveTimeout) else RingReduceDistError
    out = cls(str(e))
    out.__cause__ = e
    return out


def dist_errors(fn: Callable) -> Callable:
    """Make `fn` raise ringreduce's errors as RingReduceDistError."""
    @functools.wraps(fn)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except rr.RingReduceError as e:
            raise translate(e) from e
    return wrapped


def reduce_op(opts: Any) -> Tuple[str, Any]:
    """(ringreduce op name, pre-multiplication factor or None) for c10d options."""
    if opts is None:
        return "sum", None
    op = opts.reduceOp
    kind = getattr(op, "op", op)  # a ReduceOp holds a RedOpType
    if kind == _RED.PREMUL_SUM:
        try:
            _, factor = op.__getstate__()
        except Exception as e:  # noqa: BLE001 - the layout is torch's, not ours
            raise ValueError("PREMUL_SUM: cannot read the factor from the ReduceOp "
                             f"({type(e).__name__}: {e}); make it with "
                             "torch.distributed._make_nccl_premul_sum(factor)") from None
        if factor is None:
            raise ValueError("PREMUL_SUM without a factor; make the op with "
                             "torch.distributed._make_nccl_premul_sum(factor)")
        return "sum", factor
    for k, name in _OPS.items():
        if kind == k:
            return name, None
    raise ValueError(f"reduce op {op} is not supported by the ringreduce backend; supported: "
                     "SUM, PRODUCT, MIN, MAX, AVG, BAND, BOR, BXOR, PREMUL_SUM")


def premultiplied(t: torch.Tensor, factor: Any) -> torch.Tensor:
    """t * factor, in t's dtype, as a new contiguous tensor."""
    if isinstance(factor, torch.Tensor):
        factor = factor.to(t.device)
    with torch.no_grad():
        return (t * factor).to(t.dtype).contiguous()


class Work(dist.Work):
    """A torch Work around a future that completes when ringreduce's works do."""

    def __init__(self, fut: torch.futures.Future, source: Optional[Callable[[], Any]] = None) -> None:
        super().__init__()
        self._fut = fut
        self._source = source  # a receive: who sent it (torch asks after a recv from any source)

    def _source_rank(self) -> int:
        # torch.distributed.recv(src=None) reads the sender here, once wait() returned.
        got = self._source() if self._source is not None else None
        if got is None:
            raise ValueError("this Work is not a finished receive: it has no source rank")
        return int(got)

    def wait(self, timeout: Optional[datetime.timedelta] = None) -> bool:
        # CUDA-aware futures make the current stream wait and return at once;
        # host futures block until the collective is done.
        try:
            self._fut.wait()
        except rr.RingReduceError as e:
            raise translate(e) from e
        return True

    def get_future(self) -> torch.futures.Future:
        return self._fut

    def is_completed(self) -> bool:
        return self._fut.done()

    def is_success(self) -> bool:
        if not self._fut.done():
            return False
        try:
            self._fut.value()
        except Exception:  # noqa: BLE001 - is_success reports, it does not raise
            return False
        return True

    def exception(self) -> Optional[BaseException]:
        if not self._fut.done():
            return None
        try:
            self._fut.value()
        except Exception as e:  # noqa: BLE001 - reported, not raised
            return translate(e)
        return None

    def result(self) -> List[torch.Tensor]:
        return self._fut.value()


def done_work(value: Any) -> Work:
    fut = torch.futures.Future()
    fut.set_result(value)
    return Work(fut)
