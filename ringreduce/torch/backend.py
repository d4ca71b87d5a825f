"""A ``torch.distributed`` backend named "ringreduce".

Importing ringreduce.torch registers it, so that::

    dist.init_process_group("ringreduce")      # torchrun (env://) or any init_method
    ringreduce.torch.init_process_group()      # also under plain mpirun, no MASTER_ADDR needed
    ddp = DistributedDataParallel(model)       # every collective of DDP goes through ringreduce

The process group is a Python subclass of ``torch.distributed.ProcessGroup``
(the extension point torch's own tests use). It implements allreduce (and
its coalesced form), broadcast, allgather (list, single-tensor and
coalesced forms), reduce_scatter (likewise) and barrier. Collectives run
over the default ringreduce communicator, whose rank and size must match the
ones torch.distributed passes in. Each returns a Work whose get_future() DDP
uses; for CUDA tensors the future is CUDA-aware, as NCCL's is.
"""
from __future__ import annotations

import datetime
import os
from typing import Any, Callable, List, Optional, Sequence

import torch
import torch.distributed as dist

import ringreduce as rr
from ringreduce.comm import Communicator
from ringreduce.launch import detect

from .hooks import future_when_done

__all__ = ["BACKEND_NAME", "RingReduceProcessGroup", "init_process_group"]

BACKEND_NAME = "ringreduce"

_OPS = [(dist.ReduceOp.SUM, "sum"), (dist.ReduceOp.PRODUCT, "prod"),
        (dist.ReduceOp.MIN, "min"), (dist.ReduceOp.MAX, "max"), (dist.ReduceOp.AVG, "avg")]


def _op_name(opts: Any) -> str:
    op = opts.reduceOp
    for k, name in _OPS:
        if op == k:
            return name
    raise ValueError(f"reduce op {op} is not supported by the ringreduce backend; "
                     "supported: SUM, PRODUCT, MIN, MAX, AVG")


class _Work(dist.Work):
    """A torch Work around a future that completes when ringreduce's works do."""

    def __init__(self, fut: torch.futures.Future) -> None:
        super().__init__()
        self._fut = fut

    def wait(self, timeout: Optional[datetime.timedelta] = None) -> bool:
        # CUDA-aware futures make the current stream wait and return at once;
        # host futures block until the collective is done.
        self._fut.wait()
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

    def result(self) -> List[torch.Tensor]:
        return self._fut.value()


def _done_work(value: Any) -> _Work:
    fut = torch.futures.Future()
    fut.set_result(value)
    return _Work(fut)


class RingReduceProcessGroup(dist.ProcessGroup):
    """torch.distributed process group whose collectives run on ringreduce."""

    def __init__(self, rank: int, size: int, comm: Communicator) -> None:
        super().__init__(rank, size)
        if comm.rank != rank or comm.size != size:
            raise ValueError(f"torch.distributed says rank {rank} of {size}, but the ringreduce "
                             f"communicator is rank {comm.rank} of {comm.size}; the "
                             "ringreduce backend supports only the group of all ranks")
        self._comm = comm
        # A communicator built for torchrun without MPI moves device memory
        # only; host tensors are then staged through the current GPU.
        self._host_ok = comm._impl.has_host_transport

    def getBackendName(self) -> str:
        return BACKEND_NAME

    def __repr__(self) -> str:
        return f"RingReduceProcessGroup(rank={self.rank()}, size={self.size()})"

    # -- plumbing ------------------------------------------------------------
    def _place(self, t: torch.Tensor) -> torch.Tensor:
        """A contiguous tensor the communicator can use, holding t's values."""
        if t.device.type == "cpu" and not self._host_ok:
            return t.to(torch.device("cuda", torch.cuda.current_device()))
        return t if t.is_contiguous() else t.contiguous()

    def _launch(self, device: torch.device, works: Sequence[Any], finish: Callable[[], Any]):
        def wait_all():
            for w in works:
                w.wait()
        if device.type == "cpu" and not self._host_ok:
            device = torch.device("cuda", torch.cuda.current_device())
        return _Work(future_when_done(device, wait_all, finish))

    @staticmethod
    def _copy_back(pairs: Sequence[tuple]) -> None:
        with torch.no_grad():
            for dst, src in pairs:
                if dst.data_ptr() != src.data_ptr() or dst.device != src.device:
                    dst.copy_(src.view(dst.shape))

    # -- collectives -----------------------------------------------------------
    def allreduce(self, tensors: List[torch.Tensor], opts: Any = None) -> _Work:
        op = _op_name(opts) if opts is not None else "sum"
        work_list, pairs = [], []
        for t in tensors:
            x = self._place(t)
            work_list.append(self._comm.allreduce(x, op, async_op=True))
            pairs.append((t, x))

        def finish():
            self._copy_back(pairs)
            return list(tensors)
        return self._launch(tensors[0].device, work_list, finish)

    def allreduce_coalesced(self, tensors: List[torch.Tensor], opts: Any = None) -> _Work:
        op = _op_name(opts) if opts is not None else "sum"
        groups: dict = {}
        for t in tensors:
            groups.setdefault((t.device, t.dtype), []).append(t)
        work_list, flats = [], []
        for ts in groups.values():
            flat = self._place(torch.cat([t.reshape(-1) for t in ts]))
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

    def broadcast(self, tensors: List[torch.Tensor], opts: Any = None) -> _Work:
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

    def allgather(self, output_lists: List[List[torch.Tensor]], inputs: List[torch.Tensor],
                  opts: Any = None) -> _Work:
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
                          opts: Any = None) -> _Work:
        return self.all_gather_single_coalesced([output], [inp], opts)

    def all_gather_single_coalesced(self, outputs: List[torch.Tensor],
                                    inputs: List[torch.Tensor], opts: Any = None) -> _Work:
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

    def reduce_scatter(self, outputs: List[torch.Tensor], input_lists: List[List[torch.Tensor]],
                       opts: Any = None) -> _Work:
        flats = []
        for out, ins in zip(outputs, input_lists):
            if len(ins) != self.size() or any(i.numel() != out.numel() for i in ins):
                raise ValueError(f"reduce_scatter needs {self.size()} inputs of "
                                 f"{out.numel()} elements each (the output's size)")
            flats.append(torch.cat([i.reshape(-1) for i in ins]))
        return self.reduce_scatter_single_coalesced(outputs, flats, opts)

    def reduce_scatter_single(self, output: torch.Tensor, inp: torch.Tensor,
                              opts: Any = None) -> _Work:
        return self.reduce_scatter_single_coalesced([output], [inp], opts)

    def reduce_scatter_single_coalesced(self, outputs: List[torch.Tensor],
                                        inputs: List[torch.Tensor], opts: Any = None) -> _Work:
        op = _op_name(opts) if opts is not None else "sum"
        n = self.size()
        work_list, pairs = [], []
        for out, inp in zip(outputs, inputs):
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

    # Names older torch versions call.
    _allgather_base = all_gather_single
    allgather_into_tensor_coalesced = all_gather_single_coalesced
    _reduce_scatter_base = reduce_scatter_single
    reduce_scatter_tensor_coalesced = reduce_scatter_single_coalesced

    def barrier(self, opts: Any = None) -> _Work:
        """Blocks the host until every rank has arrived, as NCCL's barrier does."""
        if self._host_ok:
            self._comm.barrier()
        else:
            t = torch.zeros(1, device=torch.device("cuda", torch.cuda.current_device()))
            self._comm.allreduce(t)
            torch.cuda.current_stream().synchronize()
        return _done_work([])


def _create(store: Any, rank: int, size: int, timeout: datetime.timedelta) -> RingReduceProcessGroup:
    comm = rr.init()
    if timeout is not None:
        secs = timeout.total_seconds() if hasattr(timeout, "total_seconds") else float(timeout)
        if secs > 0:
            comm.timeout = secs
    return RingReduceProcessGroup(rank, size, comm)


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
