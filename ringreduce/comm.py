"""Communicator and Work: every collective, on NumPy arrays, torch tensors and CuPy arrays."""
from __future__ import annotations

import collections
import contextlib
import os
import sys
import time
from typing import Any, Iterator, List, Optional, Sequence

import numpy as np

from . import _C
from ._buffers import Buffer, as_buffer, counts_array, empty_like, to_list
from ._checks import (check_inplace, check_out, check_root, check_sizes, mark_written,
                      overlaps, segment_counts)
from ._latency import _SLOW, allreduce_now
from ._p2p import PointToPoint
from .errors import CollectiveTimeout, RingReduceError
from .launch import LaunchInfo

_OPS = dict(_C.ReduceOp.__members__)
_COLL = _C.Coll
def _op_code(op: str) -> "_C.ReduceOp":
    code = _OPS.get(op) if isinstance(op, str) else None
    if code is None:
        raise ValueError(f"unknown op {op!r}; ops: {', '.join(_OPS)}")
    return code


class Work:
    """An asynchronous call. wait() returns its result."""

    __slots__ = ("_impl", "_result", "_comm", "_device_buf")

    def __init__(self, impl: Any, result: Any, comm: "Communicator",
                 device_buf: Optional[Buffer]) -> None:
        self._impl = impl
        self._result = result
        self._comm = comm
        self._device_buf = device_buf  # orders the caller's stream after device work

    def wait(self, timeout: Optional[float] = None) -> Any:
        """Wait for the call and return its result.

        For CUDA buffers the caller's current stream is made to wait; the host
        is not blocked. `timeout` is in seconds (None: the communicator's own
        timeout bounds the call). Raises CollectiveTimeout when it passes;
        the call is then still in flight and its buffers stay in use."""
        stream = -1 if self._device_buf is None else _current_stream(self._device_buf)
        limit = None if timeout is None else time.monotonic() + float(timeout)
        try:
            # Short waits, so Python sees Ctrl-C between them.
            while not self._impl.wait(0.05 if limit is None else
                                      max(0.0, min(0.05, limit - time.monotonic())), stream):
                if limit is not None and time.monotonic() >= limit:
                    raise CollectiveTimeout(f"rank {self._comm.rank}: work not completed within "
                                            f"{timeout} s; it is still in flight")
        except KeyboardInterrupt:
            self._comm._impl.abort(f"rank {self._comm.rank} was interrupted while waiting")
            raise
        return self._result

    def is_completed(self) -> bool:
        return self._impl.is_completed()

    @property
    def source(self) -> Optional[int]:
        """A receive: the rank the message came from (None until a receive
        from any source has been matched; None for other calls)."""
        s = self._impl.source
        return s if s >= 0 else None


def _current_stream(b: Buffer) -> int:
    # The stream current *now* on the waiting thread, as torch does.
    if b.kind == "torch":
        from ._buffers import torch_current_stream

        return torch_current_stream(b.device)
    if b.kind == "cupy":
        import cupy

        return cupy.cuda.get_current_stream().ptr
    return b.stream


class Communicator(PointToPoint):
    """A group of ranks that run collectives together.

    Buffers are NumPy arrays, torch tensors (CPU or CUDA) or CuPy arrays,
    used in place without copies. Sizes are in elements unless a name says
    bytes. Every rank must make the same calls in the same order; a call one
    rank refuses (bad arguments) uses up its place on that rank too."""

    def __init__(self, impl: Any, backend: str, launch: LaunchInfo, devices: Any) -> None:
        self._impl = impl
        self._backend = backend
        self._launch = launch
        self._devices = devices  # ringreduce._device.DeviceEngines
        # Why the host shared-memory algorithms are off ('' when attached).
        self._shm_why = "" if impl.has_shared_memory else "not attached"
        # Calls still in flight and the arrays they use: a dropped Work must
        # not free memory the transfer still writes.
        self._inflight: collections.deque = collections.deque()
        self._pid = os.getpid()  # a forked child must leave the parent's transports alone

    def __repr__(self) -> str:
        state = ("finalized" if self._impl.finalized else
                 "aborted" if self._impl.poison_message else "open")
        return (f"<ringreduce.Communicator rank {self.rank} of {self.size}, backend "
                f"{self._backend!r}, engines {self.engines}, timeout {self.timeout} s, {state}>")

    # -- properties -------------------------------------------------------------
    @property
    def rank(self) -> int:
        return self._impl.rank

    @property
    def size(self) -> int:
        return self._impl.size

    @property
    def local_rank(self) -> int:
        return self._launch.local_rank

    @property
    def backend(self) -> str:
        """"mpi", "ucx", "nccl", "auto" (host transport plus NCCL for CUDA buffers), "loopback" or "self"."""
        return self._backend

    @property
    def timeout(self) -> float:
        """Seconds each collective may take before the communicator aborts (inf: no limit)."""
        return self._impl.options.timeout

    @timeout.setter
    def timeout(self, seconds: float) -> None:
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not seconds > 0:
            raise ValueError(f"timeout must be > 0 seconds (math.inf for none), got {seconds!r}")
        self._impl.set_timeout(float(seconds))

    @property
    def chunk_bytes(self) -> int:
        """Bytes per pipelined chunk of the ring on host buffers."""
        return self._impl.options.chunk_bytes

    @chunk_bytes.setter
    def chunk_bytes(self, value: int) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"chunk_bytes must be an integer >= 1, got {value!r}")
        self._impl.set_chunk_bytes(value)

    @property
    def shared_memory(self) -> str:
        """'attached' (every rank on this machine, RINGREDUCE_SHM on), or why not."""
        return "attached" if self._impl.has_shared_memory else (self._shm_why or "not attached")

    @property
    def engines(self) -> list:
        return list(self._impl.engines)

    # -- plumbing ---------------------------------------------------------------
    @contextlib.contextmanager
    def _refusing(self, coll: "_C.Coll", peer: int = -1, tag: Any = 0) -> Iterator[None]:
        """Bad arguments raise here; the call's place in the sequence is used
        up and the peers are told, so none of them waits for this rank."""
        try:
            yield
        except (TypeError, ValueError, RuntimeError) as e:
            if not isinstance(e, RingReduceError):
                ok_tag = tag if isinstance(tag, int) and -(1 << 63) <= tag < (1 << 63) else 0
                self._impl.refuse(coll, peer, f"{type(e).__name__}: {e}", ok_tag)
            raise

    def _submit(self, coll: "_C.Coll", b: Buffer, ob: Optional[Buffer], count: int, *,
                op: Any = None, root: int = 0, peer: int = -1, counts: Sequence[int] = (),
                recv_counts: Sequence[int] = (), async_op: bool = False,
                chunk_bytes: Optional[int] = None, algo: Optional[str] = None, result: Any = None,
                keep: tuple = (), tag: int = 0) -> Any:
        if b.device >= 0:
            try:
                self._devices.ensure(b)
            except Exception as e:  # the peers must not wait for a call this rank cannot make
                self._impl.refuse(coll, peer, f"{type(e).__name__}: {e}")
                raise
        self._purge()
        impl = self._impl.submit(
            coll, b.ptr, ob.ptr if ob is not None else 0, count, b.code,
            op if op is not None else _OPS["sum"], root, peer, list(counts), list(recv_counts),
            b.device, b.stream, int(chunk_bytes or 0), algo or "", async_op, tag)
        device_buf = b if b.device >= 0 else None
        if async_op or device_buf is not None or coll in (_COLL.send, _COLL.recv):
            self._inflight.append((impl, (b, ob) + keep))
        if async_op:
            return Work(impl, result, self, device_buf)
        if device_buf is None and coll in (_COLL.send, _COLL.recv):
            return Work(impl, result, self, None).wait()  # runs on the worker: wait here
        # Host work already ran; device work is ordered on the caller's stream.
        impl.wait(-1.0, b.stream if device_buf is not None else -1)
        return result

    def _purge(self) -> None:
        q = self._inflight
        while q and q[0][0].is_completed():
            q.popleft()
        if len(q) > 64:  # point-to-point work completes out of order
            self._inflight = collections.deque(e for e in q if not e[0].is_completed())

    def _sizes_everywhere(self, b: Buffer, coll: "_C.Coll") -> List[int]:
        """Every rank's element count, in rank order (a small all-gather)."""
        mine, allc = counts_array(b, [b.count]), counts_array(b, [0] * self.size)
        self._submit(_COLL.allgather, as_buffer(mine), as_buffer(allc), 1,
                     counts=[1] * self.size)
        return to_list(allc)

    # -- collectives --------------------------------------------------------------
    def allreduce(self, x: Any, op: str = "sum", *, out: Any = None, async_op: bool = False,
                  chunk_bytes: Optional[int] = None, algo: Optional[str] = None) -> Any:
        """Reduce x over all ranks. In place when out is None. Returns the
        result (x or out), or a Work when async_op. `algo` forces an algorithm
        (see explain())."""
        if not async_op and chunk_bytes is None and algo is None:
            done = allreduce_now(self, x, op, out)
            if done is not _SLOW:
                return done  # the latency path: everything ran in C++
        with self._refusing(_COLL.allreduce):
            opc = _op_code(op)
            if chunk_bytes is not None and (not isinstance(chunk_bytes, int) or chunk_bytes < 1):
                raise ValueError(f"chunk_bytes must be an integer >= 1, got {chunk_bytes!r}")
            b = as_buffer(x)
            if out is None:
                check_inplace(b, "x")
                ob = b
            else:
                ob = check_out(b, out, b.count, "allreduce")
                if ob.ptr != b.ptr and overlaps(ob, b):
                    raise ValueError("out partly overlaps x; use out=None for in place, or a "
                                     "separate array")
        mark_written(ob)
        return self._submit(_COLL.allreduce, b, ob, b.count, op=opc, async_op=async_op,
                            chunk_bytes=chunk_bytes, algo=algo, result=ob.obj)

    def reduce_scatter(self, x: Any, *, out: Any = None, op: str = "sum",
                       async_op: bool = False, algo: Optional[str] = None) -> Any:
        """Reduce x over all ranks; rank r gets segment r. Segments cut x's
        count into size parts, the first count % size one element longer."""
        with self._refusing(_COLL.reduce_scatter):
            opc = _op_code(op)
            b = as_buffer(x)
            mine = segment_counts(b.count, self.size)[self.rank]
            if out is None:
                out = empty_like(b, mine)
            ob = check_out(b, out, mine, f"segment {self.rank} of {b.count} elements over "
                                         f"{self.size} ranks")
            if overlaps(ob, b):
                raise ValueError("out overlaps x; reduce_scatter needs a separate output")
        mark_written(ob)
        return self._submit(_COLL.reduce_scatter, b, ob, b.count, op=opc, async_op=async_op,
                            algo=algo, result=ob.obj)

    def allgather(self, x: Any, *, out: Any = None, async_op: bool = False,
                  sizes: Optional[Sequence[int]] = None) -> Any:
        """Gather every rank's x into out, in rank order, concatenated.

        Sizes may differ per rank; they are exchanged first unless `sizes`
        (elements per rank, the same list on every rank) is given."""
        with self._refusing(_COLL.allgather):
            b = as_buffer(x)
        if sizes is None:
            sizes = self._sizes_everywhere(b, _COLL.allgather)
        with self._refusing(_COLL.allgather):
            sizes = check_sizes(sizes, self.size, self.rank, b.count)
            total = sum(sizes)
            if out is None:
                same = len(set(sizes)) == 1 and len(b.shape) > 1
                shape = (self.size * b.shape[0], *b.shape[1:]) if same else (total,)
                out = empty_like(b, total, shape)
            ob = check_out(b, out, total, f"allgather of {sizes}")
            off = sum(sizes[: self.rank]) * (b.nbytes // max(b.count, 1))
            if overlaps(ob, b) and b.ptr != ob.ptr + off:
                raise ValueError("out overlaps x other than at this rank's own block")
        mark_written(ob)
        return self._submit(_COLL.allgather, b, ob, b.count, counts=sizes, async_op=async_op,
                            result=ob.obj)

    def broadcast(self, x: Any, root: int = 0, *, async_op: bool = False) -> Any:
        """Copy root's x into x on every rank, in place. Returns x. x must be
        writable on every rank, the root's too, so every rank refuses alike."""
        with self._refusing(_COLL.broadcast):
            check_root(root, self.size)
            b = as_buffer(x)
            check_inplace(b, "x")
        mark_written(b)
        return self._submit(_COLL.broadcast, b, b, b.count, root=root, async_op=async_op,
                            result=b.obj)

    def reduce(self, x: Any, root: int = 0, op: str = "sum", *, out: Any = None,
               async_op: bool = False) -> Any:
        """Reduce x over all ranks onto `root`: into out there, or in place
        into x when out is None. Other ranks' x is left as it was; they
        return None."""
        with self._refusing(_COLL.reduce):
            check_root(root, self.size)
            opc = _op_code(op)
            b = as_buffer(x)
            ob = None
            if self.rank == root:
                if out is None:
                    check_inplace(b, "x")
                    ob = b
                else:
                    ob = check_out(b, out, b.count, "reduce")
                    if ob.ptr != b.ptr and overlaps(ob, b):
                        raise ValueError("out partly overlaps x")
        if ob is not None:
            mark_written(ob)
        return self._submit(_COLL.reduce, b, ob, b.count, op=opc, root=root, async_op=async_op,
                            result=ob.obj if ob is not None else None)

    def gather(self, x: Any, root: int = 0, *, out: Any = None,
               sizes: Optional[Sequence[int]] = None, async_op: bool = False) -> Any:
        """Every rank's x, concatenated in rank order, on `root` (None elsewhere)."""
        with self._refusing(_COLL.gather):
            check_root(root, self.size)
            b = as_buffer(x)
        if sizes is None:
            sizes = self._sizes_everywhere(b, _COLL.gather)
        with self._refusing(_COLL.gather):
            sizes = check_sizes(sizes, self.size, self.rank, b.count)
            ob = None
            if self.rank == root:
                ob = check_out(b, empty_like(b, sum(sizes)) if out is None else out, sum(sizes),
                               f"gather of {sizes}")
                if overlaps(ob, b):
                    raise ValueError("out overlaps x; gather needs a separate output")
        if ob is not None:
            mark_written(ob)
        return self._submit(_COLL.gather, b, ob, b.count, root=root, counts=sizes,
                            async_op=async_op, result=ob.obj if ob is not None else None)

    def scatter(self, x: Any, root: int = 0, *, out: Any = None,
                sizes: Optional[Sequence[int]] = None, async_op: bool = False) -> Any:
        """Root's x cut into blocks, block r to rank r (returned, or in out).
        Blocks are `sizes` (the same list everywhere) or, by default, the
        segments of reduce_scatter. On other ranks x only gives the dtype and
        device (its contents are not read)."""
        with self._refusing(_COLL.scatter):
            check_root(root, self.size)
            b = as_buffer(x)
        if sizes is None:
            n = counts_array(b, [b.count if self.rank == root else 0])
            self._submit(_COLL.broadcast, as_buffer(n), as_buffer(n), 1, root=root)
            sizes = segment_counts(to_list(n)[0], self.size)
        with self._refusing(_COLL.scatter):
            sizes = check_sizes(sizes, self.size, None, None)
            if self.rank == root and sum(sizes) != b.count:
                raise ValueError(f"sizes {sizes} add up to {sum(sizes)} elements; the root's x "
                                 f"holds {b.count}")
            mine = sizes[self.rank]
            ob = check_out(b, empty_like(b, mine) if out is None else out, mine,
                           f"block {self.rank} of scatter {sizes}")
            if overlaps(ob, b):
                raise ValueError("out overlaps x; scatter needs a separate output")
        mark_written(ob)
        return self._submit(_COLL.scatter, b, ob, b.count, root=root, counts=sizes,
                            async_op=async_op, result=ob.obj)

    def all_to_all(self, x: Any, *, out: Any = None, splits: Optional[Sequence[int]] = None,
                   recv_splits: Optional[Sequence[int]] = None, async_op: bool = False) -> Any:
        """Block q of x goes to rank q; out holds the blocks from every rank
        in rank order. `splits`: this rank's block sizes (default: equal);
        `recv_splits`: the sizes it receives (default: exchanged first)."""
        with self._refusing(_COLL.all_to_all):
            b = as_buffer(x)
            if splits is None:
                if b.count % self.size:
                    raise ValueError(f"x holds {b.count} elements, not a multiple of "
                                     f"{self.size} ranks; pass splits=")
                splits = [b.count // self.size] * self.size
            splits = check_sizes(splits, self.size, None, None)
            if sum(splits) != b.count:
                raise ValueError(f"splits {splits} add up to {sum(splits)}; x holds {b.count}")
        if recv_splits is None:
            mine = counts_array(b, splits)
            theirs = counts_array(b, [0] * self.size)
            self._submit(_COLL.all_to_all, as_buffer(mine), as_buffer(theirs), self.size,
                         counts=[1] * self.size, recv_counts=[1] * self.size)
            recv_splits = to_list(theirs)
        with self._refusing(_COLL.all_to_all):
            recv_splits = check_sizes(recv_splits, self.size, None, None)
            total = sum(recv_splits)
            ob = check_out(b, empty_like(b, total) if out is None else out, total,
                           f"all_to_all receiving {recv_splits}")
            if overlaps(ob, b):
                raise ValueError("out overlaps x; all_to_all needs a separate output")
        mark_written(ob)
        return self._submit(_COLL.all_to_all, b, ob, b.count, counts=splits,
                            recv_counts=recv_splits, async_op=async_op, result=ob.obj)

    def barrier(self) -> None:
        """Return once every rank has called barrier()."""
        self._purge()
        self._impl.submit(_COLL.barrier).wait(-1.0, -1)

    def explain(self, coll: str = "allreduce", x: Any = None, op: str = "sum", *,
                count: Optional[int] = None, dtype: str = "float32", root: int = 0,
                algo: Optional[str] = None) -> tuple:
        """(algorithm, why) the selector picks for a call like this one, from
        an array `x` or from `count` elements of `dtype`."""
        code = getattr(_COLL, coll, None)
        if code is None:
            raise ValueError(f"unknown collective {coll!r}")
        device = -1
        if x is not None:
            b = as_buffer(x)
            count, dtype, device = b.count, b.dtype, b.device
        n = int(count or 0)
        counts = [n] * self.size if coll in ("allgather", "gather", "scatter", "all_to_all") else []
        return tuple(self._impl.explain(code, n, _C.DType.__members__[dtype], _op_code(op), root,
                                        counts, counts if coll == "all_to_all" else [], device,
                                        algo or ""))

    def abort(self, why: str = "aborted by the application") -> None:
        """End this communicator now on every rank: peers raise instead of waiting."""
        self._impl.abort(f"rank {self.rank}: {why}")

    def finalize(self) -> None:
        """Finish queued work (bounded by the timeout) and release the
        transports. Idempotent, callable from any thread. In a forked child
        it does nothing: the transports are the parent's (calls there raise)."""
        if os.getpid() != self._pid:
            return
        self._impl.finalize()
        self._inflight.clear()
