"""The backends the benchmark times: ringreduce's engines and the baselines.

Every backend runs on the same torch tensors (NumPy views of them for mpi4py),
so all of them move the same bytes from the same memory. run(inp, out)
reduces inp into out, or in place when out is None. On the host it returns
when the result is ready; for device buffers it returns once the work is
ordered on the caller's current CUDA stream, so CUDA events recorded on that
stream time it.
"""
from __future__ import annotations

import os
import socket
from typing import Any, Dict, List, Optional

from .cli import ALL_BACKENDS

_HALF = ("float16", "bfloat16")


class BackendUnavailable(RuntimeError):
    """The backend cannot run here; the message says why."""


class Backend:
    name = "?"
    description = ""

    def __init__(self, ctx: "Context", chunk_bytes: Optional[int] = None) -> None:
        self.ctx = ctx
        # ringreduce's pipelining chunk in bytes for this backend (None: the context's)
        self.chunk_bytes = chunk_bytes if chunk_bytes is not None else ctx.chunk_bytes

    def skip_reason(self, dtype: str, op: str) -> Optional[str]:
        """Why this dtype/op cannot run (the same answer on every rank), or None."""
        return None

    def setup(self) -> None:
        """Collective: every rank calls it at the same point."""

    def run(self, inp: Any, out: Optional[Any], op: str) -> None:
        raise NotImplementedError

    def close(self) -> None:
        pass


class Context:
    """What backends share: device, launch info, control channel, options."""

    def __init__(self, device: str, launch: Any, control: Any, chunk_bytes: Optional[int]) -> None:
        self.device = device
        self.launch = launch
        self.control = control
        self.chunk_bytes = chunk_bytes
        self.torch_dist_ready = False

    @property
    def size(self) -> int:
        return self.launch.size

    @property
    def rank(self) -> int:
        return self.launch.rank


# -- ringreduce ------------------------------------------------------------------
class RingReduce(Backend):
    """ringreduce.Communicator.allreduce on a communicator of its own."""

    comm_backend: Optional[str] = None
    name = "ringreduce"

    def setup(self) -> None:
        from ..world import new_communicator

        try:
            self.comm = new_communicator(self.comm_backend, chunk_bytes=self.chunk_bytes)
        except Exception as e:
            raise BackendUnavailable(f"cannot create a ringreduce communicator "
                                     f"(backend={self.comm_backend!r}): {e}") from None
        self.description = (f"ringreduce ring all-reduce, communicator backend "
                            f"{self.comm.backend!r}, chunk {self.comm.chunk_bytes} B")

    def run(self, inp: Any, out: Optional[Any], op: str) -> None:
        self.comm.allreduce(inp, op, out=out)

    def close(self) -> None:
        comm = getattr(self, "comm", None)
        if comm is not None:
            comm.finalize()


class RingReduceNccl(RingReduce):
    comm_backend = "nccl"
    name = "ringreduce-nccl"

    def skip_reason(self, dtype: str, op: str) -> Optional[str]:
        return None if self.ctx.device == "cuda" else "device buffers only (--device cuda)"

    def setup(self) -> None:
        if self.ctx.device != "cuda":
            raise BackendUnavailable("the NCCL engine takes device buffers only; use --device cuda")
        super().setup()


class RingReduceMpi(RingReduce):
    comm_backend = "mpi"
    name = "ringreduce-mpi"


# -- native NCCL through ringreduce's device module --------------------------------
class NativeNccl(Backend):
    name = "nccl"
    description = "ncclAllReduce (native NCCL ring/tree) through ringreduce._device"

    def setup(self) -> None:
        if self.ctx.device != "cuda":
            raise BackendUnavailable("native NCCL takes device buffers only; use --device cuda")
        from .. import _C
        from ..world import new_communicator

        if not getattr(_C, "has_cuda", False):
            raise BackendUnavailable("native NCCL needs ringreduce built with CUDA and NCCL")
        try:
            self.comm = new_communicator("nccl")
        except Exception as e:
            raise BackendUnavailable(f"cannot create an NCCL communicator: {e}") from None

    def run(self, inp: Any, out: Optional[Any], op: str) -> None:
        from .. import _C
        from .._buffers import as_buffer, torch_current_stream

        b = as_buffer(inp)
        ob = b if out is None else as_buffer(out)
        self.comm._devices.ensure(b)
        # Ordered on the caller's stream like ringreduce's own calls.
        _C.nccl_native_allreduce(self.comm._impl, b.ptr, ob.ptr, b.count, b.code,
                                 _C.ReduceOp.__members__[op], b.device,
                                 torch_current_stream(b.device))

    def close(self) -> None:
        comm = getattr(self, "comm", None)
        if comm is not None:
            comm.finalize()


# -- MPI_Allreduce through mpi4py ---------------------------------------------------
class Mpi(Backend):
    """MPI_Allreduce on NumPy views of the same host tensors. MPI has no avg:
    sum, then divide (truncating for integers, as ringreduce does)."""

    name = "mpi"
    description = "MPI_Allreduce via mpi4py on the same host buffers"

    def skip_reason(self, dtype: str, op: str) -> Optional[str]:
        if dtype in _HALF:
            return f"MPI has no {dtype} datatype (MPI 4.0 / Open MPI 4.1)"
        return None

    def setup(self) -> None:
        if self.ctx.launch.launcher != "mpirun" and self.ctx.size > 1:
            raise BackendUnavailable("needs mpirun (mpi4py's COMM_WORLD spans the launch only "
                                     "under an MPI launcher)")
        try:
            from mpi4py import MPI
        except ImportError as e:
            raise BackendUnavailable(f"mpi4py is not importable: {e}") from None
        self.MPI = MPI
        self.comm = MPI.COMM_WORLD.Dup()
        self.ops = {"sum": MPI.SUM, "prod": MPI.PROD, "min": MPI.MIN, "max": MPI.MAX,
                    "avg": MPI.SUM}
        self.description = f"MPI_Allreduce via mpi4py ({self.ctx.control.mpi_version or 'MPI'})"
        self._views: Dict[int, Any] = {}

    def _np(self, t: Any) -> Any:
        key = t.data_ptr() ^ (t.numel() << 1)
        v = self._views.get(key)
        if v is None:
            if len(self._views) >= 4:  # only the current size's buffers: free old ones
                self._views.clear()
            v = self._views[key] = t.numpy()
        return v

    def _avg(self, t: Any, op: str) -> None:
        if op == "avg" and self.ctx.size > 1:
            _divide(t, self.ctx.size)

    def run(self, inp: Any, out: Optional[Any], op: str) -> None:
        if out is None:
            self.comm.Allreduce(self.MPI.IN_PLACE, self._np(inp), self.ops[op])
            self._avg(inp, op)
        else:
            self.comm.Allreduce(self._np(inp), self._np(out), self.ops[op])
            self._avg(out, op)

    def close(self) -> None:
        comm = getattr(self, "comm", None)
        if comm is not None:
            comm.Free()


class MpiNaive(Mpi):
    """Device buffers the naive way: copy to pinned host memory, MPI_Allreduce, copy back."""

    name = "mpi-naive"
    description = "device->host copy, MPI_Allreduce via mpi4py, host->device copy"

    def setup(self) -> None:
        super().setup()
        lib = self.ctx.control.mpi_version or "MPI"
        self.description = f"device->host copy, MPI_Allreduce ({lib}), host->device copy"
        self._host: Dict[tuple, Any] = {}

    def _staging(self, t: Any) -> Any:
        import torch

        key = (t.numel(), t.dtype)
        h = self._host.get(key)
        if h is None:
            self._host.clear()
            pin = self.ctx.device == "cuda"
            h = self._host[key] = (torch.empty(t.numel(), dtype=t.dtype, pin_memory=pin),
                                   torch.empty(t.numel(), dtype=t.dtype, pin_memory=pin))
        return h

    def run(self, inp: Any, out: Optional[Any], op: str) -> None:
        if self.ctx.device != "cuda":
            return super().run(inp, out, op)
        h_in, h_out = self._staging(inp)
        h_in.copy_(inp.view(-1))  # synchronous: the host needs the data now
        if out is None:
            self.comm.Allreduce(self.MPI.IN_PLACE, self._np(h_in), self.ops[op])
            self._avg(h_in, op)
            inp.view(-1).copy_(h_in)
        else:
            self.comm.Allreduce(self._np(h_in), self._np(h_out), self.ops[op])
            self._avg(h_out, op)
            out.view(-1).copy_(h_out)


def _divide(t: Any, n: int) -> None:
    if t.is_floating_point():
        t.div_(n)
    else:
        t.copy_(t.div(n, rounding_mode="trunc"))


# -- torch.distributed --------------------------------------------------------------
def init_torch_distributed(ctx: Context, want_nccl: bool) -> None:
    """Initialise the default process group once, from the launcher's rank and
    size. Under mpirun, rank 0 picks a free port and broadcasts it over MPI."""
    if ctx.torch_dist_ready:
        return
    import torch.distributed as dist

    if not dist.is_available():
        raise BackendUnavailable("torch.distributed is not available in this torch build")
    if dist.is_initialized():
        ctx.torch_dist_ready = True
        return
    if "MASTER_ADDR" not in os.environ or "MASTER_PORT" not in os.environ:
        if ctx.launch.launcher == "torchrun":
            raise BackendUnavailable("torchrun did not set MASTER_ADDR/MASTER_PORT")
        addr, port = None, None
        if ctx.rank == 0:
            same_host = ctx.launch.local_size == ctx.size
            addr = "127.0.0.1" if same_host else socket.getfqdn()
            with socket.socket() as s:
                s.bind(("" if not same_host else "127.0.0.1", 0))
                port = s.getsockname()[1]
        addr, port = ctx.control.bcast((addr, port))
        os.environ.setdefault("MASTER_ADDR", addr)
        os.environ.setdefault("MASTER_PORT", str(port))
    backend = "cpu:gloo,cuda:nccl" if want_nccl else "gloo"
    dist.init_process_group(backend, rank=ctx.rank, world_size=ctx.size)
    ctx.torch_dist_ready = True


class TorchDist(Backend):
    """torch.distributed.all_reduce. It is in place only: out-of-place copies
    the input into the output first, inside the timed region."""

    want_nccl = False

    def setup(self) -> None:
        try:
            init_torch_distributed(self.ctx, self.want_nccl or self.ctx.device == "cuda")
        except BackendUnavailable:
            raise
        except Exception as e:
            raise BackendUnavailable(f"torch.distributed init failed: {e}") from None
        import torch.distributed as dist

        self.dist = dist
        R = dist.ReduceOp
        self.ops = {"sum": R.SUM, "prod": R.PRODUCT, "min": R.MIN, "max": R.MAX, "avg": R.AVG}
        self.group = dist.new_group(backend=self._pg_backend())
        self._native_avg = True

    def _pg_backend(self) -> str:
        raise NotImplementedError

    def run(self, inp: Any, out: Optional[Any], op: str) -> None:
        t = inp
        if out is not None:
            out.copy_(inp)
            t = out
        if op == "avg" and (not self._native_avg or not t.is_floating_point()):
            # Integer avg: sum, then divide truncating toward zero, as ringreduce does.
            self.dist.all_reduce(t, op=self.ops["sum"], group=self.group)
            _divide(t, self.ctx.size)
            return
        try:
            self.dist.all_reduce(t, op=self.ops[op], group=self.group)
        except (RuntimeError, ValueError):
            if op != "avg":
                raise
            # Older gloo builds lack AVG: fall back to sum then divide, like MPI.
            self._native_avg = False
            if out is not None:
                out.copy_(inp)
            self.run(inp, out, op)

    def close(self) -> None:
        group = getattr(self, "group", None)
        if group is not None:
            try:
                self.dist.destroy_process_group(group)
            except Exception:
                pass


class Gloo(TorchDist):
    name = "gloo"
    description = "torch.distributed gloo all_reduce (out-of-place = copy + in place)"

    def _pg_backend(self) -> str:
        return "gloo"


class TorchNccl(TorchDist):
    name = "torch-nccl"
    description = "torch.distributed NCCL all_reduce (out-of-place = copy + in place)"
    want_nccl = True

    def setup(self) -> None:
        if self.ctx.device != "cuda":
            raise BackendUnavailable("torch.distributed NCCL takes CUDA tensors only; "
                                     "use --device cuda")
        super().setup()

    def _pg_backend(self) -> str:
        return "nccl"


_CLASSES = {"ringreduce": RingReduce, "ringreduce-nccl": RingReduceNccl,
            "ringreduce-mpi": RingReduceMpi, "nccl": NativeNccl, "mpi": Mpi,
            "mpi-naive": MpiNaive, "gloo": Gloo, "torch-nccl": TorchNccl}
assert set(_CLASSES) == set(ALL_BACKENDS)


def resolve_names(names: List[str], device: str) -> List[str]:
    """Map requested names onto the ones that apply: on cuda, 'mpi' means the
    naive device route and is reported as 'mpi-naive'; on cpu, 'mpi-naive' is
    plain 'mpi'."""
    out: List[str] = []
    for n in names:
        if device == "cuda" and n == "mpi":
            n = "mpi-naive"
        elif device == "cpu" and n == "mpi-naive":
            n = "mpi"
        if n not in out:
            out.append(n)
    return out


def make(name: str, ctx: Context, chunk_bytes: Optional[int] = None) -> Backend:
    return _CLASSES[name](ctx, chunk_bytes)


def is_ringreduce(name: str) -> bool:
    return name.startswith("ringreduce")
