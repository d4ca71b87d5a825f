"""ringreduce: a chunked ring all-reduce engine over NCCL and MPI."""
from .comm import (Communicator, Work, allgather, allreduce, barrier, broadcast, finalize, init,
                   local_rank, rank, reduce_scatter, size)
from .errors import CollectiveMismatch, CollectiveTimeout, RingReduceError

__version__ = "0.1.0"

__all__ = [
    "Communicator", "Work", "init", "finalize", "rank", "size", "local_rank",
    "allreduce", "reduce_scatter", "allgather", "broadcast", "barrier",
    "RingReduceError", "CollectiveTimeout", "CollectiveMismatch", "__version__",
]
