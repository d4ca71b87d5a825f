"""The latency path: a blocking all-reduce of host memory straight into C++,
for the commonest arguments, with no Python checks in between. Anything it
does not handle goes to the general path (Communicator.allreduce), which
checks and explains."""
from __future__ import annotations

import sys
from typing import Any

import numpy as np

from . import _C

_OP_INT = {name: int(code) for name, code in _C.ReduceOp.__members__.items()}
_SLOW = object()  # "not the latency path": take the general one
_TORCH: dict = {}  # torch.dtype -> (dtype code, element size), for the latency path


def _torch_codes() -> dict:
    """Filled once torch is imported (ringreduce never imports it itself)."""
    if not _TORCH and "torch" in sys.modules:
        torch = sys.modules["torch"]
        for name, code in _C.DType.__members__.items():
            dt = getattr(torch, name, None)
            if dt is not None:
                _TORCH[dt] = (int(code), torch.empty(0, dtype=dt).element_size())
        _TORCH["type"] = torch.Tensor
        _TORCH["bump"] = torch._C._increment_version
        raw = getattr(torch._C, "_cuda_getCurrentRawStream", None)
        if raw is None:
            from ._buffers import torch_current_stream as raw
        _TORCH["stream"] = raw
    return _TORCH


def _partly_overlap(p: int, q: int, span: int) -> bool:
    """Two spans of `span` bytes at p and q that overlap without being one."""
    return q != p and q < p + span and p < q + span


def allreduce_now(comm: Any, x: Any, op: str, out: Any) -> Any:
    """A blocking all-reduce straight into C++, for the commonest arguments:
    a NumPy array or a plain contiguous CPU tensor (in place, or into an
    array like it), or a plain contiguous CUDA tensor on this rank's GPU once
    its engine exists (in place or into a tensor like it; ordered on the
    current stream, the host not blocked). _SLOW for anything else."""
    opi = _OP_INT.get(op) if type(op) is str else None
    if opi is None:
        return _SLOW
    if type(x) is np.ndarray:
        if out is not None and type(out) is not np.ndarray:
            return _SLOW
        return (x if out is None else out) if comm._impl.allreduce_host_arrays(x, out, opi) else _SLOW
    tc = _TORCH or _torch_codes()
    tt = tc.get("type")
    if tt is None or type(x) is not tt or x.requires_grad or not x.is_contiguous():
        return _SLOW
    info = tc.get(x.dtype)
    if info is None:
        return _SLOW
    if x.is_cuda:
        # No keeping alive needed: the caller's stream waits for the call, and
        # torch's allocator reuses memory in stream order.
        dev = comm._devices.device
        if dev is None or x.get_device() != dev:
            return _SLOW
        q = 0
        if out is not None:
            if (type(out) is not tt or out.dtype != x.dtype or not out.is_cuda
                    or out.get_device() != dev or out.requires_grad or out.numel() != x.numel()
                    or not out.is_contiguous()):
                return _SLOW
            q = out.data_ptr()
            if _partly_overlap(x.data_ptr(), q, x.numel() * info[1]):
                return _SLOW  # the general path explains it
        dst = x if out is None else out
        comm._impl.allreduce_device(x.data_ptr(), x.numel(), info[0], opi, dev, tc["stream"](dev),
                                    q)
        tc["bump"]((dst,))
        return dst
    p, n = x.data_ptr(), x.numel()
    if out is None:
        q, dst = p, x
    else:
        # dtypes are singletons: `is` suffices. The overlap test is inline:
        # a Python call is a noticeable part of a small call here.
        if (type(out) is not tt or out.dtype is not x.dtype or out.is_cuda or out.requires_grad
                or out.numel() != n or not out.is_contiguous()):
            return _SLOW
        q, dst = out.data_ptr(), out
        span = n * info[1]
        if q != p and q < p + span and p < q + span:
            return _SLOW  # partly overlapping: the general path explains it
    if comm._inflight:
        comm._purge()
    comm._impl.allreduce_host(p, q, n, info[0], opi)
    tc["bump"]((dst,))  # autograd sees the in-place write, as for torch's own ops
    return dst
