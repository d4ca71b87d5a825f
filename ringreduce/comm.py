"""Communicator, Work, init() and the module-level collectives."""
from __future__ import annotations

import atexit
import os
from typing import Any, Optional, Sequence

import numpy as np

from . import _C
from ._buffers import Buffer, as_buffer, counts_array, empty_like, to_list
from .errors import CollectiveTimeout, RingReduceError
from .launch import LaunchInfo, detect

OPS = {"sum": 0, "prod": 1, "min": 2, "max": 3, "avg": 4}
_ALLREDUCE, _REDUCE_SCATTER, _ALLGATHER, _BROADCAST, _BARRIER = range(5)

DEFAULT_TIMEOUT = 300.0           # seconds; RINGREDUCE_TIMEOUT overrides
DEFAULT_CHUNK_BYTES = 1 << 20     # bytes; see docs/benchmarks.md for the measurement
DEFAULT_DEPTH = 2                 # exchanges in flight


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").lower() in ("1", "true", "yes", "on")


def _env_number(name: str, default, cast):
    v = os.environ.get(name)
    if v in (None, ""):
        return default
    try:
        return cast(v)
    except ValueError:
        raise ValueError(f"environment variable {name}={v!r} is not a number") from None


def _op_code(op: str) -> int:
    if op not in OPS:
        raise ValueError(f"unknown op {op!r}; ops: {', '.join(OPS)}")
    return OPS[op]


def _overlaps(a: Buffer, b: Buffer) -> bool:
    if a.device != b.device:
        return False
    return a.ptr < b.ptr + b.nbytes and b.ptr < a.ptr + a.nbytes


class Work:
    """An asynchronous collective. wait() returns its result."""

    def __init__(self, impl: Any, result: Any, keep: tuple, comm: "Communicator") -> None:
        self._impl = impl
        self._result = result
        self._keep = keep  # buffers must outlive the collective
        self._comm = comm

    def wait(self, timeout: Optional[float] = None) -> Any:
        """Wait for the collective and return its result.

        For CUDA buffers the caller's current stream is made to wait; the host
        is not blocked. `timeout` is in seconds (None: the communicator's own
        timeout bounds the wait). Raises CollectiveTimeout when it passes."""
        stream = self._stream()
        t = -1.0 if timeout is None else float(timeout)
        if not self._impl.wait(t, stream):
            raise CollectiveTimeout(f"rank {self._comm.rank}: work not completed within "
                                    f"{timeout} s; it is still in flight")
        self._keep = ()
        return self._result

    def is_completed(self) -> bool:
        return self._impl.is_completed()

    def _stream(self) -> int:
        # -1: host work, nothing to order. For device work the caller's
        # current stream (0 is the legacy default stream, a real stream).
        for b in self._keep:
            if isinstance(b, Buffer) and b.device >= 0:
                return _current_stream(b)
        return -1


def _current_stream(b: Buffer) -> int:
    # The stream current *now* on the waiting thread, as torch does.
    if b.kind == "torch":
        from ._buffers import torch_current_stream

        return torch_current_stream(b.device)
    if b.kind == "cupy":
        import cupy

        return cupy.cuda.get_current_stream().ptr
    return b.stream


class Communicator:
    """A group of ranks that run collectives together.

    Buffers are NumPy arrays, torch tensors (CPU or CUDA) or CuPy arrays,
    used in place without copies. Sizes are in elements unless a name says
    bytes."""

    def __init__(self, impl: Any, backend: str, launch: LaunchInfo) -> None:
        self._impl = impl
        self._backend = backend
        self._launch = launch
        self._device_engine_for: Optional[int] = None

    # -- properties ---------------------------------------------------------
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
        """"mpi", "nccl", "auto" (MPI for host buffers, NCCL for CUDA buffers) or "self"."""
        return self._backend

    @property
    def timeout(self) -> float:
        """Seconds each collective may take before the communicator aborts."""
        return self._impl.timeout

    @timeout.setter
    def timeout(self, seconds: float) -> None:
        if not seconds > 0:
            raise ValueError(f"timeout must be > 0 seconds, got {seconds!r}")
        self._impl.timeout = float(seconds)

    @property
    def chunk_bytes(self) -> int:
        """Bytes per pipelined chunk."""
        return self._impl.chunk_bytes

    @chunk_bytes.setter
    def chunk_bytes(self, value: int) -> None:
        self._impl.chunk_bytes = int(value)

    @property
    def engines(self) -> list:
        return list(self._impl.engines)

    # -- plumbing ------------------------------------------------------------
    def _check_open(self) -> None:
        if self._impl.finalized:
            raise RingReduceError("this communicator was finalized; call ringreduce.init() again")

    def _prepare(self, buf: Buffer) -> None:
        if buf.device >= 0:
            from . import _device

            _device.ensure_engine(self, buf)

    def _submit(self, coll: int, inp: Buffer, out: Buffer, count: int, op: int = 0,
                root: int = 0, blocks: Sequence[int] = (), async_op: bool = False,
                chunk_bytes: Optional[int] = None):
        self._check_open()
        if chunk_bytes is not None and int(chunk_bytes) < 1:
            raise ValueError(f"chunk_bytes must be >= 1, got {chunk_bytes!r}")
        self._prepare(inp)
        return self._impl.submit(coll, inp.ptr, out.ptr, count, inp.code, op, root, list(blocks),
                                 inp.device, inp.stream, int(chunk_bytes or 0), async_op)

    def _finish(self, impl, result, keep, async_op: bool):
        if async_op:
            return Work(impl, result, keep, self)
        # Blocking: the host part already ran; device work is ordered on the
        # caller's current stream.
        impl.wait(-1.0, keep[0].stream if keep[0].device >= 0 else -1)
        return result

    def _out(self, inp: Buffer, out: Any, count: int, what: str) -> Buffer:
        ob = as_buffer(out, "out")
        if ob.dtype != inp.dtype:
            raise TypeError(f"out has dtype {ob.dtype}, expected {inp.dtype} like the input")
        if ob.count != count:
            raise ValueError(f"out holds {ob.count} elements (shape {ob.shape}); {what} needs {count}")
        if ob.device != inp.device:
            raise ValueError(f"out is on {_where(ob)} but the input is on {_where(inp)}")
        if ob.readonly:
            raise ValueError("out is read-only")
        return ob

    # -- collectives -------------------------------------------------------------
    def allreduce(self, x: Any, op: str = "sum", *, out: Any = None, async_op: bool = False,
                  chunk_bytes: Optional[int] = None) -> Any:
        """Reduce x over all ranks. In place when out is None. Returns the
        result (x or out), or a Work when async_op."""
        if (out is None and not async_op and chunk_bytes is None and type(x) is np.ndarray
                and op in OPS and self._impl.allreduce_host_inplace(x, OPS[op])):
            return x  # the latency path: everything ran in C++
        opc = _op_code(op)
        b = as_buffer(x)
        if out is None:
            if b.readonly:
                raise ValueError("x is read-only and cannot be reduced in place; pass out= "
                                 "or a writable array")
            ob = b
        else:
            ob = self._out(b, out, b.count, "allreduce")
            if ob.ptr != b.ptr and _overlaps(ob, b):
                raise ValueError("out partly overlaps x; use out=None for in place, or a "
                                 "separate array")
        impl = self._submit(_ALLREDUCE, b, ob, b.count, opc, async_op=async_op,
                            chunk_bytes=chunk_bytes)
        return self._finish(impl, ob.obj, (b, ob), async_op)

    def reduce_scatter(self, x: Any, *, out: Any = None, op: str = "sum",
                       async_op: bool = False) -> Any:
        """Reduce x over all ranks; rank r gets segment r. Segments cut x's
        count into size parts, the first count % size one element longer."""
        opc = _op_code(op)
        b = as_buffer(x)
        n, r = self.size, self.rank
        mine = b.count // n + (1 if r < b.count % n else 0)
        if out is None:
            out = empty_like(b, mine)
        ob = self._out(b, out, mine, f"segment {r} of {b.count} elements over {n} ranks")
        if _overlaps(ob, b):
            raise ValueError("out overlaps x; reduce_scatter needs a separate output")
        impl = self._submit(_REDUCE_SCATTER, b, ob, b.count, opc, async_op=async_op)
        return self._finish(impl, ob.obj, (b, ob), async_op)

    def allgather(self, x: Any, *, out: Any = None, async_op: bool = False,
                  sizes: Optional[Sequence[int]] = None) -> Any:
        """Gather every rank's x into out, in rank order, concatenated.

        Sizes may differ per rank; they are exchanged first unless `sizes`
        (elements per rank, the same list on every rank) is given."""
        b = as_buffer(x)
        if sizes is None:
            counts = counts_array(b, [0] * self.size)
            cb = as_buffer(counts)
            cb_mine = as_buffer(counts_array(b, [b.count]))
            impl = self._submit(_ALLGATHER, cb_mine, cb, 1, blocks=[1] * self.size)
            Work(impl, None, (cb_mine, cb), self).wait()
            sizes = to_list(counts)
        sizes = [int(s) for s in sizes]
        if len(sizes) != self.size or sizes[self.rank] != b.count:
            raise ValueError(f"sizes {sizes} must list {self.size} counts with this rank's "
                             f"{b.count} at index {self.rank}")
        total = sum(sizes)
        if out is None:
            same = len(set(sizes)) == 1 and len(b.shape) > 1
            shape = (self.size * b.shape[0], *b.shape[1:]) if same else (total,)
            out = empty_like(b, total, shape)
        ob = self._out(b, out, total, f"allgather of {sizes}")
        off = sum(sizes[: self.rank]) * (b.nbytes // max(b.count, 1))
        if _overlaps(ob, b) and b.ptr != ob.ptr + off:
            raise ValueError("out overlaps x other than at this rank's own block")
        impl = self._submit(_ALLGATHER, b, ob, b.count, blocks=sizes, async_op=async_op)
        return self._finish(impl, ob.obj, (b, ob), async_op)

    def broadcast(self, x: Any, root: int = 0, *, async_op: bool = False) -> Any:
        """Copy root's x into x on every rank, in place. Returns x."""
        if not isinstance(root, int) or isinstance(root, bool) or not 0 <= root < self.size:
            raise ValueError(f"root must be a rank in [0, {self.size}), got {root!r}")
        b = as_buffer(x)
        if b.readonly and self.rank != root:
            raise ValueError("x is read-only and cannot receive the broadcast")
        impl = self._submit(_BROADCAST, b, b, b.count, root=root, async_op=async_op)
        return self._finish(impl, b.obj, (b,), async_op)

    def barrier(self) -> None:
        """Return once every rank has called barrier()."""
        self._check_open()
        impl = self._impl.submit(_BARRIER, 0, 0, 0, 0, 0, 0, [], -1, 0, 0, False)
        Work(impl, None, (), self).wait()  # host work

    def finalize(self) -> None:
        """Finish queued work and release the transports. Idempotent."""
        self._impl.finalize()


def _where(b: Buffer) -> str:
    return "host" if b.device < 0 else f"cuda:{b.device}"


# -- the default communicator ----------------------------------------------------
_default: Optional[Communicator] = None
_we_initialized_mpi = False


def new_communicator(backend: Optional[str] = None, timeout: Optional[float] = None, *,
                     check: Optional[bool] = None, nan_check: Optional[bool] = None,
                     chunk_bytes: Optional[int] = None) -> Communicator:
    """A new communicator over all ranks of the launch, beside the default one.

    Every rank must create it at the same point. Arguments as for init()."""
    global _we_initialized_mpi
    if backend not in (None, "mpi", "nccl"):
        raise ValueError(f"unknown backend {backend!r}; use 'mpi', 'nccl' or None")
    launch = detect()
    timeout = float(timeout if timeout is not None else
                    _env_number("RINGREDUCE_TIMEOUT", DEFAULT_TIMEOUT, float))
    if not timeout > 0:
        raise ValueError(f"timeout must be > 0 seconds, got {timeout!r}")
    check = _env_flag("RINGREDUCE_CHECK") if check is None else bool(check)
    nan_check = _env_flag("RINGREDUCE_NAN_CHECK") if nan_check is None else bool(nan_check)
    chunk = int(chunk_bytes if chunk_bytes is not None else
                _env_number("RINGREDUCE_CHUNK_BYTES", DEFAULT_CHUNK_BYTES, int))
    depth = _env_number("RINGREDUCE_DEPTH", DEFAULT_DEPTH, int)
    if chunk < 1:
        raise ValueError(f"chunk_bytes must be >= 1, got {chunk}")
    if depth < 1:
        raise ValueError(f"RINGREDUCE_DEPTH must be >= 1, got {depth}")

    if backend == "nccl":
        if not _C.has_cuda:
            raise RingReduceError("backend 'nccl' needs ringreduce built with CUDA and NCCL "
                                  "(RINGREDUCE_CUDA=1 pip install .)")
        host = "self"
    elif launch.size == 1 and backend is None:
        host = "self"
    elif launch.launcher == "mpirun" or backend == "mpi":
        if not _C.has_mpi:
            raise RingReduceError("ringreduce was built without MPI (no mpicc at build time); "
                                  "install Open MPI or MPICH and rebuild, or set MPICC")
        host = "mpi"
    elif _C.has_cuda:
        host = "self"  # torchrun without MPI: device buffers only, over NCCL
    else:
        raise RingReduceError(f"launched by {launch.launcher} with {launch.size} ranks, but "
                              "this build has no transport for it: use mpirun, or build with CUDA")
    if host == "mpi":
        _we_initialized_mpi = _C.mpi_initialize() or _we_initialized_mpi
    impl = _C.Communicator(launch.rank, launch.size, host, timeout, chunk, depth, check, nan_check)
    impl.device_chunk_bytes = _env_number("RINGREDUCE_DEVICE_CHUNK_BYTES", 0, int)
    impl.small_bytes = _env_number("RINGREDUCE_SMALL_BYTES", impl.small_bytes, int)
    # None under a launcher: MPI for host buffers, NCCL for CUDA buffers ("auto").
    name = backend or ("self" if launch.size == 1 else "auto" if host == "mpi" and _C.has_cuda
                       else "mpi" if host == "mpi" else "nccl")
    return Communicator(impl, name, launch)


def init(backend: Optional[str] = None, timeout: Optional[float] = None, *,
         check: Optional[bool] = None, nan_check: Optional[bool] = None,
         chunk_bytes: Optional[int] = None) -> Communicator:
    """Create the default communicator from the launcher's environment.

    backend: "mpi" (host buffers, and device buffers through MPI), "nccl"
    (device buffers only) or None (NCCL for CUDA buffers when built, MPI for
    host buffers). timeout: seconds per collective (RINGREDUCE_TIMEOUT,
    default 300). check: agree on a fingerprint before each collective
    (RINGREDUCE_CHECK). nan_check: refuse NaN/Inf input (RINGREDUCE_NAN_CHECK).
    chunk_bytes: bytes per pipelined chunk (RINGREDUCE_CHUNK_BYTES).
    Calling init() again returns the existing default communicator."""
    global _default
    if _default is not None and not _default._impl.finalized:
        return _default
    _default = new_communicator(backend, timeout, check=check, nan_check=nan_check,
                                chunk_bytes=chunk_bytes)
    return _default


def _get() -> Communicator:
    if _default is None:
        raise RingReduceError("ringreduce is not initialized; call ringreduce.init() first")
    if _default._impl.finalized:
        raise RingReduceError("ringreduce was finalized; call ringreduce.init() again")
    return _default


def finalize() -> None:
    """Finalize the default communicator, and MPI if ringreduce started it."""
    global _default
    if _default is not None:
        _default.finalize()


@atexit.register
def _at_exit() -> None:
    finalize()
    if _we_initialized_mpi and (_default is None or not _default._impl.poison_message):
        _C.mpi_finalize()


def rank() -> int:
    return _get().rank


def size() -> int:
    return _get().size


def local_rank() -> int:
    return _get().local_rank


def allreduce(x: Any, op: str = "sum", *, out: Any = None, async_op: bool = False,
              chunk_bytes: Optional[int] = None) -> Any:
    return _get().allreduce(x, op, out=out, async_op=async_op, chunk_bytes=chunk_bytes)


def reduce_scatter(x: Any, *, out: Any = None, op: str = "sum", async_op: bool = False) -> Any:
    return _get().reduce_scatter(x, out=out, op=op, async_op=async_op)


def allgather(x: Any, *, out: Any = None, async_op: bool = False,
              sizes: Optional[Sequence[int]] = None) -> Any:
    return _get().allgather(x, out=out, async_op=async_op, sizes=sizes)


def broadcast(x: Any, root: int = 0, *, async_op: bool = False) -> Any:
    return _get().broadcast(x, root, async_op=async_op)


def barrier() -> None:
    _get().barrier()


for _f in (allreduce, reduce_scatter, allgather, broadcast):
    _f.__doc__ = getattr(Communicator, _f.__name__).__doc__
