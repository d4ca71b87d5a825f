"""Device engines: created for a GPU on its first collective, on every rank at once.

A communicator serves one GPU per rank, cuda:(local_rank % device_count).
Device buffers go over NCCL (with the CUDA-IPC algorithms beside it) unless
the communicator's backend is "mpi", which moves them over MPI (directly when
MPI is CUDA-aware, through pinned host memory otherwise), and so do ranks
that share one GPU (NCCL refuses them; the IPC algorithms serve them): over
UCX's CUDA transports when the host transport is UCX and every rank's UCX
has them (RINGREDUCE_UCX_DEVICE_PATH), staged over the host transport else. Setup bytes (the
NCCL unique id) travel over the communicator's own host transport, or through
a c10d store when it has none.
"""
from __future__ import annotations

import os
from typing import Any, Optional

from . import _C, settings
from ._buffers import Buffer
from .errors import RingReduceError
from .launch import LaunchInfo


class DeviceEngines:
    """The device engines of one communicator, with the inputs they need."""

    def __init__(self, impl: Any, launch: LaunchInfo, device_backend: Optional[str],
                 store: Any = None) -> None:
        self._impl = impl
        self._launch = launch
        self._backend = device_backend
        self._store = store
        self._device: Optional[int] = None
        self._made = 0
        self.path: Optional[str] = None  # "nccl", "staged", "direct" or "ucx" once made

    @property
    def device(self) -> Optional[int]:
        return self._device

    def rank_device(self) -> int:
        """The GPU ordinal this rank uses: local_rank % device_count."""
        n = _C.cuda_device_count() if _C.has_cuda else 0
        if n == 0:
            raise RingReduceError(f"rank {self._impl.rank}: a CUDA buffer was given but this "
                                  "process sees no GPU (check CUDA_VISIBLE_DEVICES and the driver)")
        return self._launch.local_rank % n

    def ensure(self, buf: Buffer) -> None:
        """Create the device engine for buf's GPU on first use (collectively)."""
        if self._device is not None:
            if buf.device != self._device:
                raise ValueError(f"buffer is on cuda:{buf.device} but rank {self._impl.rank}'s "
                                 f"communicator uses cuda:{self._device}")
            return
        if not _C.has_cuda:
            raise ValueError(f"buffer is on cuda:{buf.device} but ringreduce was built without "
                             "CUDA (rebuild with RINGREDUCE_CUDA=1)")
        want = self.rank_device()
        if buf.device != want:
            raise ValueError(f"buffer is on cuda:{buf.device} but rank {self._impl.rank} (local "
                             f"rank {self._launch.local_rank}, {_C.cuda_device_count()} GPUs "
                             f"visible) uses cuda:{want}; allocate it there, e.g. after "
                             f"torch.cuda.set_device({want})")
        if self._backend == "mpi":
            self.path = _C.add_host_path_engine(self._impl, want,
                                                settings.get("RINGREDUCE_MPI_DEVICE_PATH"))
        else:
            ucx_path = settings.get("RINGREDUCE_UCX_DEVICE_PATH")
            shares = self._shares_gpu(want)
            if ucx_path == "ucx" or (shares and ucx_path == "auto" and self._ucx_host()):
                why = self._ucx_device_engine(want)
                if why and ucx_path == "ucx":
                    raise RingReduceError(f"RINGREDUCE_UCX_DEVICE_PATH=ucx: {why}")
                if not why:
                    self.path = "ucx"
            if self.path is None and shares:
                # NCCL refuses two ranks on one GPU; the IPC algorithms serve
                # them, and the rest is staged over the host transport.
                self.path = _C.add_host_path_engine(self._impl, want, "staged")
            elif self.path is None:
                _C.add_nccl_engine(self._impl, want, self._nccl_unique_id())
                self.path = "nccl"
        self._made += 1
        self._device = want

    def _ucx_host(self) -> bool:
        """The host transport is UCX (backend 'ucx', or chosen for a launcher other than mpirun)."""
        return bool(getattr(self._impl, "transport_settings", ""))

    def _ucx_device_engine(self, device: int) -> str:
        """Collective: the engine over UCX's CUDA transports; '' when made, else why not
        (the same on every rank)."""
        if not self._ucx_host():
            return "the host transport is not UCX (backend 'ucx', or a launcher other than mpirun)"
        if not hasattr(_C, "add_ucx_device_engine"):
            return "ringreduce was built without UCX"
        return _C.add_ucx_device_engine(self._impl, device)

    def _shares_gpu(self, device: int) -> bool:
        """True when another rank of this communicator uses the same GPU."""
        impl = self._impl
        if impl.size == 1 or not impl.has_host_transport:
            return False
        ids = impl.allgather_bytes(_C.device_bus_id(device).encode())
        return len(set(ids)) < len(ids)

    def _nccl_unique_id(self) -> bytes:
        """Rank 0's NCCL unique id, on every rank."""
        impl = self._impl
        if impl.size == 1:
            return _C.nccl_unique_id()
        if impl.has_host_transport:
            mine = _C.nccl_unique_id() if impl.rank == 0 else b""
            return bytes(impl.allgather_bytes(mine)[0])
        return self._store_exchange()

    def _store_exchange(self) -> bytes:
        """Pass rank 0's id through a c10d store (torchrun without a host transport)."""
        store = self._store
        if store is None:
            try:
                import torch.distributed as dist
            except ImportError:
                raise RingReduceError("this communicator has no host transport: the NCCL id "
                                      "needs a c10d store, and torch is not installed") from None
            if dist.is_available() and dist.is_initialized():
                store = dist.distributed_c10d._get_default_store()
            else:
                addr, port = os.environ.get("MASTER_ADDR"), os.environ.get("MASTER_PORT")
                if not addr or not port:
                    raise RingReduceError("the NCCL id needs MASTER_ADDR and MASTER_PORT (set by "
                                          "torchrun) or an initialised torch.distributed")
                from datetime import timedelta

                # MASTER_PORT itself is left for a process group the user may open later.
                timeout = self._impl.options.timeout
                store = dist.TCPStore(addr, int(port) + 1, self._impl.size, self._impl.rank == 0,
                                      timedelta(seconds=min(timeout, 86400.0)))
            self._store = store
        key = f"ringreduce/nccl_id/{self._made}"
        if self._impl.rank == 0:
            store.set(key, _C.nccl_unique_id())
        uid = bytes(store.get(key))  # waits, up to the store's timeout, for rank 0
        if len(uid) != 128:
            raise RingReduceError(f"store key {key} holds {len(uid)} bytes, not an NCCL id")
        return uid
