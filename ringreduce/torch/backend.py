"""A ``torch.distributed`` backend named "ringreduce".

Importing ringreduce.torch registers it, so that::

    dist.init_process_group("ringreduce")      # torchrun (env://) or any init_method
    ringreduce.torch.init_process_group()      # also under plain mpirun, no MASTER_ADDR needed
    ddp = DistributedDataParallel(model)       # every collective of DDP goes through ringreduce

The process group is a Python subclass of ``torch.distributed.ProcessGroup``
(the extension point torch's own tests use). It implements allreduce (ops
SUM, PRODUCT, MIN, MAX, AVG, BAND, BOR, BXOR and PREMUL_SUM; also
coalesced), broadcast, allgather and reduce_scatter (list, single-tensor and
coalesced forms), reduce, gather, scatter, alltoall (list and single-tensor
forms, with split sizes), send/recv and barrier. Errors of ringreduce reach
the caller as RingReduceDistError, both a torch.distributed.DistBackendError
and a ringreduce.RingReduceError.

Each group gets a communicator of its own, built over the store torch hands
the backend (host buffers over UCX), for any launcher and init_method. Under
mpirun, a group of all ranks runs over MPI instead (the first one on
ringreduce's default communicator), so no shared store is needed. Each call
returns a Work whose get_future() DDP uses; for CUDA tensors the future is
CUDA-aware, as NCCL's is.
"""
from __future__ import annotations

import datetime
import os
import weakref
from typing import Any, Callable, List, Optional, Sequence

import torch
import torch.distributed as dist

import ringreduce as rr
from ringreduce.comm import Communicator
from ringreduce.launch import detect

from ._ops import (RingReduceDistError, RingReduceDistTimeout, Work, dist_errors, done_work,
                   premultiplied, reduce_op)
from ._rooted import RootedOps
from .hooks import future_when_done

__all__ = ["BACKEND_NAME", "RingReduceProcessGroup", "RingReduceDistError",
           "RingReduceDistTimeout", "init_process_group"]

BACKEND_NAME = "ringreduce"


class RingReduceProcessGroup(RootedOps, dist.ProcessGroup):
    """torch.distributed process group whose collectives run on ringreduce."""

    def __init__(self, rank: int, size: int, comm: Communicator) -> None:
        super().__init__(rank, size)
        if comm.rank != rank or comm.size != size:
            raise ValueError(f"torch.distributed says rank {rank} of {size}, but the ringreduce "
                             f"communicator is rank {comm.rank} of {comm.size}")
        self._comm = comm
        # A communicator built for torchrun without MPI moves device memory
        # only; host tensors are then staged through the current GPU.
        self._host_ok = comm._impl.has_host_transport

    def getBackendName(self) -> str:
        return BACKEND_NAME

    # torch keeps a group's name and description in its C++ backends, which a
    # Python process group has none of; DeviceMesh (FSDP2, DTensor) reads them.
    def _set_group_name(self, name: str) -> None:
        self._rr_group_name = name

    @property
    def group_name(self) -> str:
        name = getattr(self, "_rr_group_name", None)
        if name is None:
            name = dist.distributed_c10d._world.pg_names.get(self)
        if name is None:
            raise RuntimeError("ProcessGroup name not set")
        return name

    def _set_group_desc(self, desc: str) -> None:
        self._rr_group_desc = desc

    @property
    def group_desc(self) -> str:
        return getattr(self, "_rr_group_desc", "undefined")

    def __repr__(self) -> str:
        return f"RingReduceProcessGroup(rank={self.rank()}, size={self.size()})"

    # -- plumbing ------------------------------------------------------------
    def _place(self, t: torch.Tensor) -> torch.Tensor:
        """A contiguous tensor the communicator can use, holding t's values."""
        if t.device.type == "cpu" and not self._host_ok:
            return t.to(torch.device("cuda", torch.cuda.current_device()))
        return t if t.is_contiguous() else t.contiguous()

    def _launch(self, device: torch.device, works: Sequence[Any], finish: Callable[[], Any],
                source: Optional[Callable[[], Any]] = None):
        def wait_all():
            for w in works:
                w.wait()
        if device.type == "cpu" and not self._host_ok:
            device = torch.device("cuda", torch.cuda.current_device())
        return Work(future_when_done(device, wait_all, finish), source)

    @staticmethod
    def _copy_back(pairs: Sequence[tuple]) -> None:
        with torch.no_grad():
            for dst, src in pairs:
                if dst.data_ptr() != src.data_ptr() or dst.device != src.device:
                    dst.copy_(src.view(dst.shape))

    # -- collectives -----------------------------------------------------------
    @dist_errors
    def allreduce(self, tensors: List[torch.Tensor], opts: Any = None) -> Work:
        op, factor = reduce_op(opts)
        work_list, pairs = [], []
        for t in tensors:
            x = self._place(t) if factor is None else premultiplied(self._place(t), factor)
            work_list.append(self._comm.allreduce(x, op, async_op=True))
            pairs.append((t, x))

        def finish():
            self._copy_back(pairs)
            return list(tensors)
        return self._launch(tensors[0].device, work_list, finish)

    @dist_errors
    def allreduce_coalesced(self, tensors: List[torch.Tensor], opts: Any = None) -> Work:
        op, factor = reduce_op(opts)
        groups: dict = {}
        for t in tensors:
            groups.setdefault((t.device, t.dtype), []).append(t)
        work_list, flats = [], []
        for ts in groups.values():
            flat = self._place(torch.cat([t.reshape(-1) for t in ts]))
            if factor is not None:
                flat = premultiplied(flat, factor)
            work_list.append(self._comm.allreduce(flat, op, async_op=True))
            flats.append((ts, flat))

        def finish():
            with torch.no_grad():
                for ts, flat in flats:
                    off = 0
                    for t in ts:
                        n = t.numel()
                        t.copy_(flat[off: off + n].view(t.shape))
                        off += n
            return list(tensors)
        return self._launch(tensors[0].device, work_list, finish)

    @dist_errors
    def broadcast(self, tensors: List[torch.Tensor], opts: Any = None) -> Work:
        root = opts.rootRank if opts is not None else 0
        work_list, pairs = [], []
        for t in tensors:
            x = self._place(t)
            work_list.append(self._comm.broadcast(x, root, async_op=True))
            pairs.append((t, x))

        def finish():
            self._copy_back(pairs)
            return list(tensors)
        return self._launch(tensors[0].device, work_list, finish)

    @dist_errors
    def allgather(self, output_lists: List[List[torch.Tensor]], inputs: List[torch.Tensor],
                  opts: Any = None) -> Work:
        work_list, jobs = [], []
        for outs, inp in zip(output_lists, inputs):
            if len(outs) != self.size():
                raise ValueError(f"allgather needs {self.size()} output tensors, got {len(outs)}")
            sizes = [o.numel() for o in outs]
            x = self._place(inp).reshape(-1)
            flat = torch.empty(sum(sizes), dtype=inp.dtype, device=x.device)
            work_list.append(self._comm.allgather(x, out=flat, sizes=sizes, async_op=True))
            jobs.append((outs, flat, sizes))

        def finish():
            with torch.no_grad():
                for outs, flat, sizes in jobs:
                    off = 0
                    for o, n in zip(outs, sizes):
                        o.copy_(flat[off: off + n].view(o.shape))
                        off += n
            return output_lists
        return self._launch(inputs[0].device, work_list, finish)

    def all_gather_single(self, output: torch.Tensor, inp: torch.Tensor,
                          opts: Any = None) -> Work:
        return self.all_gather_single_coalesced([output], [inp], opts)

    @dist_errors
    def all_gather_single_coalesced(self, outputs: List[torch.Tensor],
                                    inputs: List[torch.Tensor], opts: Any = None) -> Work:
        n = self.size()
        work_list, pairs = [], []
        for out, inp in zip(outputs, inputs):
            if out.numel() != n * inp.numel():
                raise ValueError(f"all_gather output holds {out.numel()} elements; "
                                 f"{n} ranks x {inp.numel()} need {n * inp.numel()}")
            o = self._place(out)
            work_list.append(self._comm.allgather(self._place(inp).reshape(-1), out=o.view(-1),
                                                  sizes=[inp.numel()] * n, async_op=True))
            pairs.append((out, o))

        def finish():
            self._copy_back(pairs)
            return list(outputs)
        return self._launch(outputs[0].device, work_list, finish)

    @dist_errors
    def reduce_scatter(self, outputs: List[torch.Tensor], input_lists: List[List[torch.Tensor]],
                       opts: Any = None) -> Work:
        flats = []
        for out, ins in zip(outputs, input_lists):
            if len(ins) != self.size() or any(i.numel() != out.numel() for i in ins):
                raise ValueError(f"reduce_scatter needs {self.size()} inputs of "
                                 f"{out.numel()} elements each (the output's size)")
            flats.append(torch.cat([i.reshape(-1) for i in ins]))
        return self.reduce_scatter_single_coalesced(outputs, flats, opts)

    def reduce_scatter_single(self, output: torch.Tensor, inp: torch.Tensor,
                              opts: Any = None) -> Work:
        return self.reduce_scatter_single_coalesced([output], [inp], opts)

    @dist_errors
    def reduce_scatter_single_coalesced(self, outputs: List[torch.Tensor],
                                        inputs: List[torch.Tensor], opts: Any = None) -> Work:
        op, factor = reduce_op(opts)
        n = self.size()
        work_list, pairs = [], []
        for out, inp in zip(outputs, inputs):
            if factor is not None:
                inp = premultiplied(inp, factor)
            # Equal segments: ringreduce's segment r is then exactly torch's chunk r.
            if inp.numel() != n * out.numel():
                raise ValueError(f"reduce_scatter input holds {inp.numel()} elements; "
                                 f"{n} ranks x {out.numel()} need {n * out.numel()}")
            o = self._place(out)
            work_list.append(self._comm.reduce_scatter(self._place(inp).reshape(-1),
                                                       out=o.view(-1), op=op, async_op=True))
            pairs.append((out, o))

        def finish():
            self._copy_back(pairs)
            return list(outputs)
        return self._launch(outputs[0].device, work_list, finish)

    def allgather_coalesced(self, output_lists: List[List[torch.Tensor]],
                            inputs: List[torch.Tensor], opts: Any = None) -> Work:
        """all_gather_coalesced: output_lists[q][i] receives rank q's inputs[i]."""
        if len(output_lists) != self.size() or any(len(o) != len(inputs) for o in output_lists):
            raise ValueError(f"all_gather_coalesced needs {self.size()} output lists of "
                             f"{len(inputs)} tensors each")
        per_input = [[outs[i] for outs in output_lists] for i in range(len(inputs))]
        work = self.allgather(per_input, inputs, opts)
        # value() re-raises a failure of the gather into the new future.
        return Work(work.get_future().then(lambda f: (f.value(), output_lists)[1]))

    # Names older torch versions call.
    _allgather_base = all_gather_single
    allgather_into_tensor_coalesced = all_gather_single_coalesced
    _reduce_scatter_base = reduce_scatter_single
    reduce_scatter_tensor_coalesced = reduce_scatter_single_coalesced

    @dist_errors
    def barrier(self, opts: Any = None) -> Work:
        """Blocks the host until every rank has arrived, as NCCL's barrier does."""
        if self._host_ok:
            self._comm.barrier()
        else:
            t = torch.zeros(1, device=torch.device("cuda", torch.cuda.current_device()))
            self._comm.allreduce(t)
            torch.cuda.current_stream().synchronize()
        return done_work([])


# Communicators that torch.distributed groups use: the default one is lent to
# at most one live group.
_default_users: "weakref.WeakSet[RingReduceProcessGroup]" = weakref.WeakSet()


def _process_local(store: Any) -> bool:
    """Whether `store` (under any PrefixStores) is a HashStore of this process."""
    seen = 0
    while isinstance(store, dist.PrefixStore) and seen < 64:
        store, seen = store.underlying_store, seen + 1
    return isinstance(store, dist.HashStore)


def _seconds(timeout: Any) -> Optional[float]:
    if timeout is None:
        return None
    secs = timeout.total_seconds() if hasattr(timeout, "total_seconds") else float(timeout)
    return secs if secs > 0 else None


def _communicator(store: Any, rank: int, size: int, secs: Optional[float]) -> tuple:
    """(communicator, whether it is ringreduce's default one) for a new group."""
    launch = detect()
    if launch.launcher == "mpirun" and (launch.rank, launch.size) == (rank, size):
        # The group of all ranks under mpirun: over MPI, no store needed.
        if not _default_users:
            comm = rr.init()
            if secs is not None:
                comm.timeout = secs
            return comm, True
        return rr.new_communicator(timeout=secs), False
    if store is None:
        raise ValueError("the ringreduce backend needs the store torch.distributed passes in")
    if size > 1 and _process_local(store):
        raise ValueError(f"the ringreduce backend cannot build a group of {size} ranks over a "
                         "process-local HashStore (rank and size differ from mpirun's, so "
                         "MPI cannot be used); initialise torch.distributed with a shared "
                         "store: MASTER_ADDR/MASTER_PORT, tcp:// or file://")
    prefixed = dist.PrefixStore("ringreduce/", store)
    return rr.new_communicator(store=prefixed, rank=rank, size=size, timeout=secs), False


@dist_errors
def _create(store: Any, rank: int, size: int, timeout: datetime.timedelta) -> RingReduceProcessGroup:
    comm, is_default = _communicator(store, rank, size, _seconds(timeout))
    pg = RingReduceProcessGroup(rank, size, comm)
    if is_default:
        _default_users.add(pg)
    return pg


def _register() -> None:
    if BACKEND_NAME in dist.Backend.backend_list:
        return
    try:
        dist.Backend.register_backend(BACKEND_NAME, _create, devices=["cpu", "cuda"])
    except TypeError:  # torch < 2.2 has no `devices` argument
        dist.Backend.register_backend(BACKEND_NAME, _create)


_register()


def init_process_group(backend: str = BACKEND_NAME, **kwargs: Any) -> None:
    """dist.init_process_group, also under plain mpirun.

    Under mpirun, rank and world size come from the launcher. With no
    MASTER_ADDR, init_method or store, the "ringreduce" backend gets a
    process-local store: it moves its data over its own MPI communicator and
    needs no shared one. Other arguments go to dist.init_process_group."""
    launch = detect()
    if launch.launcher == "mpirun" and "init_method" not in kwargs:
        # env:// wants RANK and WORLD_SIZE, which mpirun does not set.
        kwargs.setdefault("rank", launch.rank)
        kwargs.setdefault("world_size", launch.size)
        if (backend == BACKEND_NAME and "store" not in kwargs
                and not os.environ.get("MASTER_ADDR")):
            kwargs["store"] = dist.HashStore()
    dist.init_process_group(backend, **kwargs)
