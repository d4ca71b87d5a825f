"""ringreduce's own rows: the automatic choice, forced algorithms, and each
communicator backend (MPI, UCX, NCCL).

Each row makes a communicator of its own. The algorithm that runs is asked of
the selector (Communicator.explain) before every size, outside the timed
loop, and recorded in the row; a forced algorithm that does not serve a call
skips that row with the selector's reason (forcing it anyway would end the
communicator).
"""
from __future__ import annotations

from typing import Any, Optional, Tuple

from .backend import Backend, BackendUnavailable


class RingReduce(Backend):
    """ringreduce.Communicator.allreduce, the algorithm chosen per call."""

    name = "ringreduce"
    comm_backend: Optional[str] = None   # new_communicator(backend=...)
    shared_memory: Optional[bool] = None  # new_communicator(shared_memory=...)
    algo: Optional[str] = None           # forced algorithm (allreduce(..., algo=))
    what = "automatic algorithm choice"

    def setup(self) -> None:
        from ..world import new_communicator

        try:
            self.comm = new_communicator(self.comm_backend, chunk_bytes=self.chunk_bytes,
                                         shared_memory=self.shared_memory)
        except Exception as e:
            raise BackendUnavailable(f"cannot create a ringreduce communicator "
                                     f"(backend={self.comm_backend!r}): "
                                     f"{type(e).__name__}: {e}") from None
        if self.ctx.device == "cuda":
            # The device engine is made by the first device collective (every
            # rank at once); explain() before each size needs it to exist.
            import torch

            try:
                self.comm.allreduce(torch.zeros(1, device="cuda"))
                torch.cuda.synchronize()
            except Exception as e:
                raise BackendUnavailable(f"no device engine: {type(e).__name__}: {e}") from None
        self.description = (f"ringreduce all-reduce, {self.what}; communicator backend "
                            f"{self.comm.backend!r}, chunk {self.comm.chunk_bytes} B")
        self._algo = self.forced()  # asked once: run() is timed

    def forced(self) -> Optional[str]:
        return self.algo

    def select(self, inp: Any, op: str) -> Tuple[Optional[str], Optional[str]]:
        algo = self.forced()
        try:
            name, why = self.comm.explain("allreduce", inp, op, algo=algo)
        except (ValueError, TypeError) as e:
            raise BackendUnavailable(f"{algo or 'the selector'} does not serve this call: "
                                     f"{e}") from None
        return str(name), str(why)

    def run(self, inp: Any, out: Optional[Any], op: str) -> None:
        if self._algo is None:
            self.comm.allreduce(inp, op, out=out)  # as a user calls it
        else:
            self.comm.allreduce(inp, op, out=out, algo=self._algo)

    def close(self) -> None:
        comm = getattr(self, "comm", None)
        if comm is not None:
            comm.finalize()


class RingReduceRing(RingReduce):
    """The ring, forced: the GPU ring kernel on device buffers, the host ring otherwise."""

    name = "ringreduce-ring"

    @property
    def what(self) -> str:  # type: ignore[override]
        return f"algorithm forced to {self.forced()!r}"

    def forced(self) -> Optional[str]:
        return "gpu_ring" if self.ctx.device == "cuda" else "ring"


class RingReduceNoShm(RingReduce):
    name = "ringreduce-noshm"
    shared_memory = False
    what = "automatic algorithm choice over the host transport alone (shared_memory=False)"


class RingReducePs(RingReduce):
    name = "ringreduce-ps"
    algo = "parameter_server"
    what = "algorithm forced to 'parameter_server' (one rank reduces everything)"


class RingReducePsSharded(RingReduce):
    name = "ringreduce-ps-sharded"
    algo = "sharded_ps"
    what = "algorithm forced to 'sharded_ps' (every rank serves 1/N of the buffer)"


class RingReduceMpi(RingReduce):
    name = "ringreduce-mpi"
    comm_backend = "mpi"
    what = "automatic algorithm choice over the MPI transport"


class RingReduceUcx(RingReduce):
    name = "ringreduce-ucx"
    comm_backend = "ucx"

    @property
    def what(self) -> str:  # type: ignore[override]
        import os

        from .. import settings

        tls = settings.get("RINGREDUCE_UCX_TLS") or os.environ.get("UCX_TLS") or "default"
        dev = settings.get("RINGREDUCE_UCX_NET_DEVICES") or "automatic"
        return f"automatic algorithm choice over UCX (transports {tls}, devices {dev})"


class RingReduceUcxNoShm(RingReduceUcx):
    name = "ringreduce-ucx-noshm"
    shared_memory = False

    @property
    def what(self) -> str:  # type: ignore[override]
        return super().what + ", shared_memory=False: every byte over UCX"


class RingReduceNccl(RingReduce):
    name = "ringreduce-nccl"
    comm_backend = "nccl"
    what = "automatic algorithm choice, device engine over NCCL and CUDA-IPC"

    def skip_reason(self, dtype: str, op: str) -> Optional[str]:
        return None if self.ctx.device == "cuda" else "device buffers only (--device cuda)"

    def setup(self) -> None:
        if self.ctx.device != "cuda":
            raise BackendUnavailable("the NCCL engine takes device buffers only; use --device cuda")
        super().setup()


CLASSES = {c.name: c for c in (RingReduce, RingReduceRing, RingReduceNoShm, RingReduceMpi,
                               RingReduceUcx,
                               RingReduceUcxNoShm, RingReduceNccl, RingReducePs,
                               RingReducePsSharded)}
