"""Attaching device engines to a communicator (filled in by the CUDA build)."""
from __future__ import annotations

from . import _C
from ._buffers import Buffer
from .errors import RingReduceError


def ensure_engine(comm, buf: Buffer) -> None:
    """Create the device engine for buf's GPU on first use (collectively)."""
    if not _C.has_cuda:
        raise ValueError(f"buffer is on cuda:{buf.device} but ringreduce was built without "
                         "CUDA (rebuild with RINGREDUCE_CUDA=1)")
    raise RingReduceError("device engines are not available in this build yet")
