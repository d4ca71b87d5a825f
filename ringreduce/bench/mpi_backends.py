"""MPI_Allreduce through mpi4py: on host buffers (mpi), the same under Open
MPI's TCP transport only (mpi-tcp), and device buffers the naive way
(mpi-naive).

Which transport MPI uses is a launch option, not something a process can
switch: `mpi-tcp` runs only when the launch restricted Open MPI to TCP
(`mpirun --mca pml ob1 --mca btl tcp,self`, which reaches the ranks as
OMPI_MCA_pml / OMPI_MCA_btl), and says how to launch it otherwise.
"""
from __future__ import annotations

import os
from typing import Any, Dict, List, Optional

from .backend import HALF, Backend, BackendUnavailable, divide

TCP_LAUNCH = "mpirun --mca pml ob1 --mca btl tcp,self"


def btl_list() -> Optional[List[str]]:
    """Open MPI's BTL selection of this launch (None: the default)."""
    v = os.environ.get("OMPI_MCA_btl")
    return [t.strip() for t in v.split(",") if t.strip()] if v else None


def transport_note() -> str:
    btl, pml = os.environ.get("OMPI_MCA_btl"), os.environ.get("OMPI_MCA_pml")
    parts = [f"btl {btl}" if btl else "btl default", f"pml {pml}" if pml else "pml default"]
    return ", ".join(parts)


class Mpi(Backend):
    """MPI_Allreduce on NumPy views of the same host tensors. MPI has no avg:
    sum, then divide (truncating for integers, as ringreduce does)."""

    name = "mpi"
    description = "MPI_Allreduce via mpi4py on the same host buffers"

    def skip_reason(self, dtype: str, op: str) -> Optional[str]:
        if dtype in HALF:
            return f"MPI has no {dtype} datatype (MPI 4.0 / Open MPI 4.1)"
        return None

    def graph_skip_reason(self) -> Optional[str]:
        return "MPI_Allreduce runs on the host: there is nothing a CUDA graph can capture"

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
        self.description = (f"MPI_Allreduce via mpi4py ({self.ctx.control.mpi_version or 'MPI'}; "
                            f"{transport_note()})")
        self._views: Dict[tuple, Any] = {}

    def _np(self, t: Any) -> Any:
        # The whole identity of the memory: a key that folds pointer and
        # length into one number lets two buffers collide, and then MPI gets
        # an old buffer's view and count on one rank (the others wait for it
        # forever).
        key = (t.data_ptr(), t.numel(), t.dtype)
        v = self._views.get(key)
        if v is None:
            if len(self._views) >= 4:  # only the current size's buffers: free old ones
                self._views.clear()
            v = self._views[key] = t.numpy()
        return v

    def _avg(self, t: Any, op: str) -> None:
        if op == "avg" and self.ctx.size > 1:
            divide(t, self.ctx.size)

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


class MpiTcp(Mpi):
    """MPI_Allreduce where the launch left Open MPI only its TCP transport."""

    name = "mpi-tcp"

    def setup(self) -> None:
        btl = btl_list()
        if btl is None or "tcp" not in btl or set(btl) - {"tcp", "self"}:
            raise BackendUnavailable(
                f"needs a launch that leaves Open MPI only its TCP transport: {TCP_LAUNCH} ... "
                f"(this launch: {transport_note()})")
        if os.environ.get("OMPI_MCA_pml", "ob1") not in ("ob1", "^ucx"):
            raise BackendUnavailable(f"OMPI_MCA_pml={os.environ['OMPI_MCA_pml']}: the BTL "
                                     f"selection is used by pml ob1 only; launch with "
                                     f"{TCP_LAUNCH}")
        super().setup()
        self.description += " -- TCP only"


class MpiNaive(Mpi):
    """Device buffers the naive way: copy to pinned host memory, MPI_Allreduce, copy back."""

    name = "mpi-naive"
    description = "device->host copy, MPI_Allreduce via mpi4py, host->device copy"

    def setup(self) -> None:
        super().setup()
        lib = self.ctx.control.mpi_version or "MPI"
        self.description = f"device->host copy, MPI_Allreduce ({lib}), host->device copy"
        self._host: Dict[tuple, Any] = {}

    def graph_skip_reason(self) -> Optional[str]:
        return ("the host waits for the device->host copy before MPI_Allreduce: a CUDA graph "
                "cannot capture that")

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


CLASSES = {c.name: c for c in (Mpi, MpiTcp, MpiNaive)}
