"""The control channel: small collectives on Python objects between ranks,
outside the timed loop, so every rank reports the same time and the same
decision (run a row or skip it)."""
from __future__ import annotations

from typing import Any, List, Optional


class Control:
    """One process: every collective is the identity."""

    rank = 0
    size = 1
    mpi_version: Optional[str] = None

    def barrier(self) -> None:
        pass

    def max(self, x: float) -> float:
        return x

    def sum(self, x: int) -> int:
        return x

    def bcast(self, obj: Any) -> Any:
        return obj

    def allgather(self, obj: Any) -> List[Any]:
        return [obj]

    def close(self) -> None:
        pass


class MpiControl(Control):
    """Under mpirun: a duplicate of MPI_COMM_WORLD, apart from every backend's traffic."""

    def __init__(self) -> None:
        from mpi4py import MPI

        self.MPI = MPI
        self.comm = MPI.COMM_WORLD.Dup()
        self.rank, self.size = self.comm.rank, self.comm.size
        try:
            line = MPI.Get_library_version().replace("\0", "").strip().splitlines()[0]
            self.mpi_version = line.split(",")[0].strip()  # e.g. "Open MPI v4.1.4"
        except Exception:
            self.mpi_version = None

    def barrier(self) -> None:
        self.comm.Barrier()

    def max(self, x: float) -> float:
        return self.comm.allreduce(float(x), op=self.MPI.MAX)

    def sum(self, x: int) -> int:
        return self.comm.allreduce(int(x), op=self.MPI.SUM)

    def bcast(self, obj: Any) -> Any:
        return self.comm.bcast(obj, root=0)

    def allgather(self, obj: Any) -> List[Any]:
        return self.comm.allgather(obj)

    def close(self) -> None:
        self.comm.Free()


class TorchControl(Control):
    """For torchrun without MPI: a gloo group of torch.distributed."""

    def __init__(self, rank: int, size: int) -> None:
        import torch.distributed as dist

        self.dist = dist
        self.rank, self.size = rank, size
        self.group = dist.new_group(backend="gloo")

    def _reduce(self, x: float, op) -> float:
        import torch

        t = torch.tensor([x], dtype=torch.float64)
        self.dist.all_reduce(t, op=op, group=self.group)
        return float(t.item())

    def barrier(self) -> None:
        self.dist.barrier(group=self.group)

    def max(self, x: float) -> float:
        return self._reduce(x, self.dist.ReduceOp.MAX)

    def sum(self, x: int) -> int:
        return int(round(self._reduce(x, self.dist.ReduceOp.SUM)))

    def bcast(self, obj: Any) -> Any:
        box = [obj]
        self.dist.broadcast_object_list(box, src=0, group=self.group)
        return box[0]

    def allgather(self, obj: Any) -> List[Any]:
        out: List[Any] = [None] * self.size
        self.dist.all_gather_object(out, obj, group=self.group)
        return out


class RowSkipped(Exception):
    """A row (backend, size, dtype, op, mode) cannot run; the message says why,
    the same on every rank."""


def agree(control: Control, error: Optional[str], value: Any = None) -> List[Any]:
    """Every rank's `value`, once every rank has reported; raises RowSkipped
    with the first rank's error when any rank had one. Every rank must call
    it at the same point, whether or not its own step failed, so the ranks'
    sequences of control calls never diverge."""
    got = control.allgather((error, value))
    bad = [(r, e) for r, (e, _) in enumerate(got) if e]
    if bad:
        r, e = bad[0]
        raise RowSkipped(e if len(bad) == len(got) else f"rank {r}: {e}")
    return [v for _, v in got]
