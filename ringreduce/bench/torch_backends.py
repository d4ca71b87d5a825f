"""torch.distributed's all_reduce: gloo on host (or device) tensors and NCCL
on device tensors, on one default process group the run opens once."""
from __future__ import annotations

import os
import socket
from typing import Any, Optional

from .backend import HOST_ONLY, Backend, BackendUnavailable, Context, divide


def init_torch_distributed(ctx: Context, want_nccl: bool) -> None:
    """Initialise the default process group once, from the launcher's rank and
    size. Under mpirun, rank 0 picks a free port and broadcasts it over MPI;
    MASTER_ADDR/MASTER_PORT from the environment win (GLOO_SOCKET_IFNAME picks
    gloo's interface)."""
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
            addr = os.environ.get("MASTER_ADDR") or ("127.0.0.1" if same_host
                                                     else socket.getfqdn())
            with socket.socket() as s:
                s.bind(("127.0.0.1" if addr == "127.0.0.1" else "", 0))
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
    pg_backend = "?"

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
        self.group = dist.new_group(backend=self.pg_backend)
        self._native_avg = True

    def run(self, inp: Any, out: Optional[Any], op: str) -> None:
        t = inp
        if out is not None:
            out.copy_(inp)
            t = out
        if op == "avg" and (not self._native_avg or not t.is_floating_point()):
            # Integer avg: sum, then divide truncating toward zero, as ringreduce does.
            self.dist.all_reduce(t, op=self.ops["sum"], group=self.group)
            divide(t, self.ctx.size)
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
    pg_backend = "gloo"

    def graph_skip_reason(self) -> Optional[str]:
        return ("gloo runs its all-reduce on host threads: " + HOST_ONLY
                if self.ctx.device != "cuda" else
                "gloo synchronises the host with device tensors: a CUDA graph cannot capture it")


class TorchNccl(TorchDist):
    name = "torch-nccl"
    description = "torch.distributed NCCL all_reduce (out-of-place = copy + in place)"
    want_nccl = True
    pg_backend = "nccl"

    def setup(self) -> None:
        if self.ctx.device != "cuda":
            raise BackendUnavailable("torch.distributed NCCL takes CUDA tensors only; "
                                     "use --device cuda")
        super().setup()


CLASSES = {c.name: c for c in (Gloo, TorchNccl)}
