"""Making communicators (init, new_communicator), the default communicator
and the module-level collectives that use it, and a clean exit."""
from __future__ import annotations

import atexit
import os
import sys
import threading
import weakref
from typing import Any, Optional, Sequence

from . import _C, settings
from ._device import DeviceEngines
from ._latency import _SLOW, allreduce_now
from .comm import Communicator
from .errors import RingReduceError
from .launch import LaunchInfo, detect

_BACKENDS = ("mpi", "ucx", "nccl")
_live: "weakref.WeakSet[Communicator]" = weakref.WeakSet()
_default: Optional[Communicator] = None
_we_initialized_mpi = False
_mpi_pid: Optional[int] = None  # the process that initialized MPI (a forked child is another)
_lock = threading.Lock()


def _host_transport(backend: Optional[str], launch: LaunchInfo) -> str:
    """Which host transport a communicator over this launch uses."""
    if launch.size == 1 and backend in (None, "nccl"):
        return "self"
    want = backend or settings.get("RINGREDUCE_BACKEND")
    if want in ("auto", "nccl"):
        want = "mpi" if launch.launcher == "mpirun" else "ucx"
    if want == "mpi" and launch.launcher not in ("mpirun", "single"):
        raise RingReduceError(f"backend 'mpi' needs mpirun, but this process was launched by "
                              f"{launch.launcher}; use backend 'ucx' (or None)")
    if want == "ucx" and not getattr(_C, "has_ucx", False):
        if backend == "ucx":
            raise RingReduceError("this build of ringreduce has no UCX transport (the libucx "
                                  "wheel was not found at build time: pip install libucx-cu13, "
                                  "then rebuild)")
        if _C.has_cuda and backend in (None, "nccl"):
            return "none"  # device buffers only, over NCCL
        raise RingReduceError(f"launched by {launch.launcher} with {launch.size} ranks, but this "
                              "build has no host transport for it: use mpirun, or build with UCX")
    if want == "mpi" and not _C.has_mpi:
        raise RingReduceError("ringreduce was built without MPI (no mpicc at build time); install "
                              "Open MPI or MPICH and rebuild, or set MPICC")
    return want


def new_communicator(backend: Optional[str] = None, timeout: Optional[float] = None, *,
                     check: Optional[bool] = None, nan_check: Optional[bool] = None,
                     chunk_bytes: Optional[int] = None, store: Any = None,
                     rank: Optional[int] = None, size: Optional[int] = None,
                     shared_memory: Optional[bool] = None) -> Communicator:
    """A new communicator over all ranks of the launch (or the `size` ranks
    of a c10d `store`, this one being `rank`), beside the default one.

    Every rank must create it at the same point. shared_memory: map one
    segment into every rank of this machine for host all-reduces
    (RINGREDUCE_SHM, default on; it stays off when some rank is elsewhere).
    Other arguments as for init()."""
    global _we_initialized_mpi, _mpi_pid
    if backend not in (None,) + _BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; use 'mpi', 'ucx', 'nccl' or None")
    opts = settings.make_options(timeout, check, nan_check, chunk_bytes)
    launch = detect()
    if store is not None:
        if rank is None or size is None:
            raise ValueError("a store needs rank= and size= too")
        launch = LaunchInfo(rank, size, launch.local_rank if launch.size == size else rank,
                            launch.local_size, launch.launcher if launch.size == size else "store")
    host = _host_transport(backend, launch) if store is None or size == 1 else "ucx"
    if host == "self":
        impl = _C.Communicator.self_world(opts)
    elif host == "none":
        impl = _C.Communicator.device_only(launch.rank, launch.size, opts)
    elif host == "mpi":
        if _C.mpi_initialize():
            _we_initialized_mpi, _mpi_pid = True, os.getpid()
        impl = _C.Communicator.mpi(opts)
        if impl.rank != launch.rank or impl.size != launch.size:
            raise RingReduceError(f"the launcher says rank {launch.rank} of {launch.size}, MPI "
                                  f"says {impl.rank} of {impl.size}")
    else:
        from ._bootstrap import make_ucx

        impl = make_ucx(launch, store, opts)
    shm_why = _attach_shared_memory(impl, shared_memory)
    name = backend or ("self" if launch.size == 1 else "auto" if _C.has_cuda else host)
    comm = Communicator(impl, name, launch,
                        DeviceEngines(impl, launch, device_backend=backend, store=store))
    comm._shm_why = shm_why
    _live.add(comm)
    return comm


def _attach_shared_memory(impl: Any, wanted: Optional[bool]) -> str:
    """Collective: the shared-memory algorithms when every rank is on this
    machine (RINGREDUCE_SHM). '' when attached, else why not."""
    if not settings.get("RINGREDUCE_SHM", wanted):
        return "turned off (shared_memory=False or RINGREDUCE_SHM=0)"
    if impl.size == 1 or not impl.has_host_transport:
        return "no peers on a host transport"
    return impl.attach_shared_memory(settings.get("RINGREDUCE_SHM_ROUND_BYTES"))


def init(backend: Optional[str] = None, timeout: Optional[float] = None, *,
         check: Optional[bool] = None, nan_check: Optional[bool] = None,
         chunk_bytes: Optional[int] = None) -> Communicator:
    """Create the default communicator from the launcher's environment.

    backend: "mpi" (host buffers, and device buffers through MPI), "ucx"
    (host buffers over UCX: shared memory on one host, TCP/RDMA across
    hosts), "nccl" (device buffers over NCCL/IPC), or None: the launcher's
    host transport (MPI under mpirun, UCX under torchrun) and NCCL/IPC for
    CUDA buffers. timeout: seconds per collective (RINGREDUCE_TIMEOUT,
    default 300; math.inf for none). check: strict pre-flight agreement
    (RINGREDUCE_CHECK). nan_check: refuse NaN/Inf input
    (RINGREDUCE_NAN_CHECK). chunk_bytes: bytes per pipelined chunk
    (RINGREDUCE_CHUNK_BYTES). Calling init() again returns the existing
    default communicator."""
    global _default
    with _lock:
        if _default is not None and not _default._impl.finalized:
            return _default
        _default = new_communicator(backend, timeout, check=check, nan_check=nan_check,
                                    chunk_bytes=chunk_bytes)
        return _default


def _get() -> Communicator:
    # A finalized default communicator raises from its own calls.
    if _default is None:
        raise RingReduceError("ringreduce is not initialized; call ringreduce.init() first")
    return _default


def finalize() -> None:
    """Finalize the default communicator (MPI itself is finalized at exit)."""
    if _default is not None:
        _default.finalize()


@atexit.register
def _at_exit() -> None:
    # Every communicator finishes (or, past its timeout, abandons) its
    # in-flight work; then MPI is finalized, also after a caught error, so
    # mpirun sees a clean exit with the script's own exit code.
    for comm in list(_live):
        comm.finalize()
    if not _we_initialized_mpi or _mpi_pid != os.getpid():
        # In a forked child MPI is the parent's: MPI_Finalize there would
        # wait for ranks that never join it.
        return
    done = threading.Event()

    def fin() -> None:
        _C.mpi_finalize()
        done.set()

    threading.Thread(target=fin, daemon=True, name="ringreduce-mpi-finalize").start()
    if not done.wait(30.0):
        print("ringreduce: MPI_Finalize did not return within 30 s (a peer is gone?); exiting",
              file=sys.stderr, flush=True)
        os._exit(1)


def rank() -> int:
    return _get().rank


def size() -> int:
    return _get().size


def local_rank() -> int:
    return _get().local_rank


def allreduce(x: Any, op: str = "sum", *, out: Any = None, async_op: bool = False,
              chunk_bytes: Optional[int] = None, algo: Optional[str] = None) -> Any:
    c = _default or _get()
    if not async_op and chunk_bytes is None and algo is None:
        done = allreduce_now(c, x, op, out)  # the latency path, without another call layer
        if done is not _SLOW:
            return done
    return c.allreduce(x, op, out=out, async_op=async_op, chunk_bytes=chunk_bytes, algo=algo)


def reduce_scatter(x: Any, *, out: Any = None, op: str = "sum", async_op: bool = False) -> Any:
    return _get().reduce_scatter(x, out=out, op=op, async_op=async_op)


def allgather(x: Any, *, out: Any = None, async_op: bool = False,
              sizes: Optional[Sequence[int]] = None) -> Any:
    return _get().allgather(x, out=out, async_op=async_op, sizes=sizes)


def broadcast(x: Any, root: int = 0, *, async_op: bool = False) -> Any:
    return _get().broadcast(x, root, async_op=async_op)


def reduce(x: Any, root: int = 0, op: str = "sum", *, out: Any = None,
           async_op: bool = False) -> Any:
    return _get().reduce(x, root, op, out=out, async_op=async_op)


def gather(x: Any, root: int = 0, *, out: Any = None, sizes: Optional[Sequence[int]] = None,
           async_op: bool = False) -> Any:
    return _get().gather(x, root, out=out, sizes=sizes, async_op=async_op)


def scatter(x: Any, root: int = 0, *, out: Any = None, sizes: Optional[Sequence[int]] = None,
            async_op: bool = False) -> Any:
    return _get().scatter(x, root, out=out, sizes=sizes, async_op=async_op)


def all_to_all(x: Any, *, out: Any = None, splits: Optional[Sequence[int]] = None,
               recv_splits: Optional[Sequence[int]] = None, async_op: bool = False) -> Any:
    return _get().all_to_all(x, out=out, splits=splits, recv_splits=recv_splits,
                             async_op=async_op)


def send(x: Any, dst: int, *, tag: int = 0, async_op: bool = False) -> Any:
    return _get().send(x, dst, tag=tag, async_op=async_op)


def recv(x: Any, src: Optional[int] = None, *, tag: int = 0, async_op: bool = False) -> Any:
    return _get().recv(x, src, tag=tag, async_op=async_op)


def barrier() -> None:
    _get().barrier()


for _f in (allreduce, reduce_scatter, allgather, broadcast, reduce, gather, scatter, all_to_all,
           send, recv, barrier):
    _f.__doc__ = getattr(Communicator, _f.__name__).__doc__
