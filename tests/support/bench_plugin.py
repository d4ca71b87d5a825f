"""A test-only plug-in for ringreduce-bench (--plugin tests/support/bench_plugin.py):
a backend that deliberately corrupts one element of its result on the last
rank, so the tests can see the checker count it. The benchmark itself has no
fault-injection switch."""
from __future__ import annotations

from typing import Any, Optional

from ringreduce.bench import baselines
from ringreduce.bench.mpi_backends import Mpi


def corrupt_one(t: Any) -> None:
    """Make one element certainly wrong (0 <-> 1, both exact in every dtype)."""
    flat = t.view(-1)
    if flat.numel() == 0:
        return
    i = flat.numel() // 2
    flat[i] = 1 if float(flat[i].item()) == 0 else 0


class CorruptingMpi(Mpi):
    """MPI_Allreduce, then one wrong element on the last rank."""

    description = "MPI_Allreduce, then one element corrupted on the last rank (test only)"

    def setup(self) -> None:
        super().setup()
        self.description = type(self).description

    def run(self, inp: Any, out: Optional[Any], op: str) -> None:
        super().run(inp, out, op)
        if self.ctx.rank == self.ctx.size - 1:
            corrupt_one(inp if out is None else out)


baselines.register("test-corrupt", CorruptingMpi)
