"""Device baselines: native ncclAllReduce, torch's SymmetricMemory one-shot
and two-shot kernels, and the cost of one torch kernel launch."""
from __future__ import annotations

import os
import warnings
from typing import Any, Optional, Tuple

from .backend import Backend, BackendUnavailable
from .torch_backends import init_torch_distributed


class NativeNccl(Backend):
    """ncclAllReduce on the NCCL communicator of a ringreduce communicator,
    ordered on the caller's stream like ringreduce's own calls."""

    name = "nccl"
    description = "ncclAllReduce (native NCCL ring/tree) through ringreduce._C"

    def setup(self) -> None:
        if self.ctx.device != "cuda":
            raise BackendUnavailable("native NCCL takes device buffers only; use --device cuda")
        from .. import _C
        from ..world import new_communicator

        if not getattr(_C, "has_cuda", False) or not hasattr(_C, "nccl_native_allreduce"):
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
        _C.nccl_native_allreduce(self.comm._impl, b.ptr, ob.ptr, b.count, b.code,
                                 _C.ReduceOp.__members__[op], b.device,
                                 torch_current_stream(b.device))

    def close(self) -> None:
        comm = getattr(self, "comm", None)
        if comm is not None:
            comm.finalize()


class TorchSymm(Backend):
    """torch.ops.symm_mem all-reduce kernels on buffers in torch's symmetric
    memory (NVLink peers on one host), rendezvoused over the default process
    group. Multicast (NVLS) stays off: TORCH_SYMM_MEM_DISABLE_MULTICAST=1."""

    kernel = "?"

    def skip_reason(self, dtype: str, op: str) -> Optional[str]:
        if op != "sum":
            return f"torch's symm_mem {self.kernel} kernel is run with sum only here"
        if dtype not in ("float32", "bfloat16", "float16"):
            return f"torch's symm_mem {self.kernel} kernel reduces floating dtypes only"
        return None

    def setup(self) -> None:
        if self.ctx.device != "cuda":
            raise BackendUnavailable("symmetric memory takes device buffers only; "
                                     "use --device cuda")
        if self.ctx.size < 2:
            raise BackendUnavailable("needs at least 2 ranks")
        import torch

        ngpu = torch.cuda.device_count()
        if self.ctx.launch.local_size > ngpu:
            raise BackendUnavailable(f"{self.ctx.launch.local_size} ranks share {ngpu} GPU(s) on "
                                     f"this host: symmetric memory needs one GPU per rank")
        if self.ctx.launch.local_size < self.ctx.size:
            raise BackendUnavailable("the ranks span several hosts: symmetric memory needs all "
                                     "of them on one host")
        os.environ["TORCH_SYMM_MEM_DISABLE_MULTICAST"] = "1"
        try:
            import torch.distributed._symmetric_memory as symm_mem

            self.op = getattr(torch.ops.symm_mem, self.kernel_op)
        except (ImportError, AttributeError, RuntimeError) as e:
            raise BackendUnavailable(f"this torch ({torch.__version__}) has no "
                                     f"torch.ops.symm_mem.{self.kernel_op}: {e}") from None
        try:
            init_torch_distributed(self.ctx, want_nccl=True)
        except BackendUnavailable:
            raise
        except Exception as e:
            raise BackendUnavailable(f"torch.distributed init failed: {e}") from None
        import torch.distributed as dist

        self.symm_mem = symm_mem
        self.group_name = dist.group.WORLD.group_name
        enable = getattr(symm_mem, "enable_symm_mem_for_group", None)
        if enable is not None:  # needed before torch 2.9, deprecated after
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                enable(self.group_name)
        self._bufs: Optional[Tuple[Any, ...]] = None
        self.description = (f"torch.ops.symm_mem.{self.kernel_op} on symmetric-memory buffers "
                            f"(torch {torch.__version__}, multicast off)" + self.note)

    def buffers(self, count: int, dtype: str) -> Tuple[Any, Any]:
        import torch

        key = (count, dtype)
        if self._bufs is None or self._bufs[0] != key:
            self._bufs = None  # free the previous size's buffers first
            dev = torch.device("cuda", torch.cuda.current_device())
            dt = getattr(torch, dtype)
            inp = self.symm_mem.empty(count, dtype=dt, device=dev)
            out = self.symm_mem.empty(count, dtype=dt, device=dev)
            # Collective: every rank maps every peer's buffer. The handles stay
            # referenced as long as the buffers.
            handles = [self.symm_mem.rendezvous(t, self.group_name) for t in (inp, out)]
            scratch = torch.empty_like(inp)
            self._bufs = (key, inp, out, scratch, handles)
        return self._bufs[1], self._bufs[2]

    def close(self) -> None:
        self._bufs = None


class TorchSymmOneShot(TorchSymm):
    name = "torch-symm-oneshot"
    kernel = "one-shot"
    kernel_op = "one_shot_all_reduce_out"
    note = "; in place = into a scratch buffer, then copied back (peers read the input)"

    def run(self, inp: Any, out: Optional[Any], op: str) -> None:
        if out is None:
            scratch = self._bufs[3]
            self.op(inp, op, self.group_name, scratch)
            inp.copy_(scratch)
        else:
            self.op(inp, op, self.group_name, out)


class TorchSymmTwoShot(TorchSymm):
    name = "torch-symm-twoshot"
    kernel = "two-shot"
    kernel_op = "two_shot_all_reduce_"
    note = "; out of place = copy into the output, then in place"

    def run(self, inp: Any, out: Optional[Any], op: str) -> None:
        if out is None:
            self.op(inp, op, self.group_name)
        else:
            out.copy_(inp)
            self.op(out, op, self.group_name)


class Launch(Backend):
    """Not a collective: the cost of one torch kernel launch from Python,
    x.add_(1) on the same tensor, timed like the others, so that "an eager
    call costs at most 1.3x one launch" is checked in the same run."""

    name = "launch"
    checkable = False
    collective = False

    def setup(self) -> None:
        where = "a CUDA kernel launch" if self.ctx.device == "cuda" else \
            "one eager torch op on a host tensor (no kernel launch on cpu)"
        self.description = f"x.add_(1) on the benchmark's tensor: {where}; not an all-reduce"

    def run(self, inp: Any, out: Optional[Any], op: str) -> None:
        (inp if out is None else out).add_(1)


CLASSES = {c.name: c for c in (NativeNccl, TorchSymmOneShot, TorchSymmTwoShot, Launch)}
