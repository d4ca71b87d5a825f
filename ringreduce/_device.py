"""Device engines: created for a GPU on its first collective, on every rank at once.

A communicator serves one GPU per rank, cuda:(local_rank % device_count).
Backend "nccl" or None moves device buffers with NCCL; the NCCL unique id
travels from rank 0 over MPI under mpirun, or through torch.distributed's
TCPStore under torchrun. Backend "mpi" moves them over MPI, directly when MPI
is CUDA-aware and through pinned host memory otherwise.
"""
from __future__ import annotations

import os
from typing import Any, Optional

import numpy as np

from . import _C
from ._buffers import Buffer, as_buffer
from .errors import RingReduceError

_BROADCAST = 3   # Coll::kBroadcast
_UINT8 = 5       # DType::kUInt8
_ID_BYTES = 128  # sizeof(ncclUniqueId)

# Engines created by this process so far. Every rank creates them in the same
# order, so the count names a store key that all ranks agree on.
_engines_made = 0
_store: Any = None


def rank_device(comm) -> int:
    """The GPU ordinal this rank's communicator uses: local_rank % device_count."""
    n = _C.cuda_device_count()
    if n == 0:
        raise RingReduceError(f"rank {comm.rank}: a CUDA buffer was given but this process "
                              "sees no GPU (check CUDA_VISIBLE_DEVICES and the driver)")
    return comm.local_rank % n


def ensure_engine(comm, buf: Buffer) -> None:
    """Create the device engine for buf's GPU on first use (collectively)."""
    global _engines_made
    if not _C.has_cuda:
        raise ValueError(f"buffer is on cuda:{buf.device} but ringreduce was built without "
                         "CUDA (rebuild with RINGREDUCE_CUDA=1)")
    have: Optional[int] = comm._device_engine_for
    if have is not None:
        if buf.device != have:
            raise ValueError(f"buffer is on cuda:{buf.device} but rank {comm.rank}'s "
                             f"communicator uses cuda:{have}")
        return
    want = rank_device(comm)
    if buf.device != want:
        raise ValueError(f"buffer is on cuda:{buf.device} but rank {comm.rank} (local rank "
                         f"{comm.local_rank}, {_C.cuda_device_count()} GPUs visible) uses "
                         f"cuda:{want}; allocate it there, e.g. after "
                         f"torch.cuda.set_device({want})")
    if comm.backend == "mpi":
        # A blocking host collective first: it drains the communicator's
        # queue, so no asynchronous work runs while the engine is added.
        comm.barrier()
        _C.add_mpi_device_engine(comm._impl, want)
    else:
        uid = _nccl_unique_id(comm)
        _C.add_nccl_engine(comm._impl, want, uid)
    _engines_made += 1
    comm._device_engine_for = want


def _nccl_unique_id(comm) -> bytes:
    """Rank 0's NCCL unique id, on every rank."""
    if comm.size == 1:
        return _C.nccl_unique_id()
    if "mpi" in comm.engines:  # the host engine spans the world
        return _broadcast_id(comm._impl, comm.rank)
    if comm._launch.launcher == "mpirun" and _C.has_mpi:
        # backend "nccl" under mpirun has no host engine: borrow one for the id.
        from . import comm as comm_module

        if _C.mpi_initialize():
            comm_module._we_initialized_mpi = True
        tmp = _C.Communicator(comm.rank, comm.size, "mpi", comm.timeout, 1 << 20, 2, False,
                              False)
        try:
            return _broadcast_id(tmp, comm.rank)
        finally:
            tmp.finalize()
    return _store_exchange(comm)


def _broadcast_id(impl: Any, rank: int) -> bytes:
    buf = np.zeros(_ID_BYTES, dtype=np.uint8)
    if rank == 0:
        buf[:] = np.frombuffer(_C.nccl_unique_id(), dtype=np.uint8)
    ptr = buf.__array_interface__["data"][0]
    # Blocking: it also waits for queued asynchronous work on this communicator.
    impl.submit(_BROADCAST, ptr, ptr, _ID_BYTES, _UINT8, 0, 0, [], -1, 0, 0, False).wait(-1.0, -1)
    return buf.tobytes()


def _store_exchange(comm) -> bytes:
    """Pass rank 0's id through torch.distributed's TCPStore (torchrun without MPI)."""
    global _store
    try:
        import torch.distributed as dist
    except ImportError:
        raise RingReduceError(f"launched by {comm._launch.launcher} without MPI: the NCCL id "
                              "needs torch.distributed's TCPStore, and torch is not "
                              "installed") from None
    if _store is None:
        if dist.is_available() and dist.is_initialized():
            _store = dist.distributed_c10d._get_default_store()
        else:
            addr, port = os.environ.get("MASTER_ADDR"), os.environ.get("MASTER_PORT")
            if not addr or not port:
                raise RingReduceError("the NCCL id needs MASTER_ADDR and MASTER_PORT (set by "
                                      "torchrun) or an initialised torch.distributed")
            from datetime import timedelta

            # MASTER_PORT itself is left for a process group the user may open later.
            _store = dist.TCPStore(addr, int(port) + 1, comm.size, comm.rank == 0,
                                   timedelta(seconds=comm.timeout))
    key = f"ringreduce/nccl_id/{_engines_made}"
    if comm.rank == 0:
        _store.set(key, _C.nccl_unique_id())
    uid = bytes(_store.get(key))  # waits, up to the store's timeout, for rank 0
    if len(uid) != _ID_BYTES:
        raise RingReduceError(f"store key {key} holds {len(uid)} bytes, not an NCCL id")
    return uid


def native_nccl_allreduce(comm, x: Any, out: Any = None, op: str = "sum") -> Any:
    """ncclAllReduce on the communicator's own NCCL communicator (a baseline).

    Enqueued on the caller's current stream; returns like allreduce(): with
    the default stream current, once the result is complete; otherwise at
    once, ordered on that stream. Do not call it while asynchronous work of
    this communicator is pending: both would use one NCCL communicator."""
    from .comm import _current_stream, _op_code

    opc = _op_code(op)
    b = as_buffer(x)
    if b.device < 0:
        raise ValueError("native_nccl_allreduce needs a CUDA buffer, got host memory")
    if comm.backend == "mpi":
        raise ValueError("native_nccl_allreduce needs an NCCL engine; this communicator's "
                         "backend is 'mpi'")
    ob = b if out is None else comm._out(b, out, b.count, "allreduce")
    comm._check_open()
    comm._prepare(b)
    stream = _current_stream(b)
    # Ordered on the caller's stream like ringreduce's own calls; stream 0 is
    # the legacy default stream, a real stream, so the host never waits here.
    _C.nccl_native_allreduce(comm._impl, b.ptr, ob.ptr, b.count, b.code, opc, b.device, stream)
    return ob.obj


