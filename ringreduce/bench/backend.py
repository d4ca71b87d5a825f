"""What every benchmarked backend is: the interface the measuring loop calls.

Every backend runs on the same torch tensors (NumPy views of them for
mpi4py), so all of them move the same bytes from the same memory, unless it
needs buffers of its own (torch's symmetric memory), which the loop then fills
and checks the same way. run(inp, out, op) reduces inp into out, or in place
when out is None. On the host it returns when the result is ready; for device
buffers it returns once the work is ordered on the caller's current CUDA
stream, so CUDA events recorded on that stream time it, and a CUDA graph
captures it.
"""
from __future__ import annotations

from typing import Any, Optional, Tuple

HALF = ("float16", "bfloat16")
HOST_ONLY = ("a host-side call on host memory: there is nothing a CUDA graph "
             "can capture")


class BackendUnavailable(RuntimeError):
    """The backend (or one of its rows) cannot run here; the message says why."""


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


class Backend:
    name = "?"
    description = ""
    checkable = True     # its result is an all-reduce the checker can verify
    collective = True    # busbw applies (False: the launch-cost row)

    def __init__(self, ctx: Context, chunk_bytes: Optional[int] = None) -> None:
        self.ctx = ctx
        # ringreduce's pipelining chunk in bytes for this backend (None: the context's)
        self.chunk_bytes = chunk_bytes if chunk_bytes is not None else ctx.chunk_bytes

    def skip_reason(self, dtype: str, op: str) -> Optional[str]:
        """Why this dtype/op cannot run (the same answer on every rank), or None."""
        return None

    def graph_skip_reason(self) -> Optional[str]:
        """Why this backend's calls cannot be captured in a CUDA graph, or None
        to try (a failed capture then skips the row with the error)."""
        return None if self.ctx.device == "cuda" else HOST_ONLY

    def setup(self) -> None:
        """Collective: every rank calls it at the same point."""

    def select(self, inp: Any, op: str) -> Tuple[Optional[str], Optional[str]]:
        """(algorithm, why) this call will run, for backends that choose one;
        raises BackendUnavailable when the call cannot run with this backend
        (e.g. a forced algorithm that does not serve it). Local, no communication."""
        return None, None

    def buffers(self, count: int, dtype: str) -> Optional[Tuple[Any, Any]]:
        """(input, output) tensors of its own for this size, or None to use the
        shared ones. May be collective: every rank calls it at the same point."""
        return None

    def run(self, inp: Any, out: Optional[Any], op: str) -> None:
        raise NotImplementedError

    def close(self) -> None:
        pass


def divide(t: Any, n: int) -> None:
    """avg for libraries without it: divide the sum, truncating for integers
    as ringreduce does."""
    if t.is_floating_point():
        t.div_(n)
    else:
        t.copy_(t.div(n, rounding_mode="trunc"))
