"""ringreduce: a chunked ring all-reduce engine over NCCL, MPI and UCX."""
from .comm import Communicator, Work
from .errors import CollectiveMismatch, CollectiveTimeout, RingReduceError
from .world import (all_to_all, allgather, allreduce, barrier, broadcast, finalize, gather, init,
                    local_rank, new_communicator, rank, recv, reduce, reduce_scatter, scatter,
                    send, size)

__version__ = "0.2.0"

__all__ = [
    "Communicator", "Work", "init", "new_communicator", "finalize", "rank", "size", "local_rank",
    "allreduce", "reduce_scatter", "allgather", "broadcast", "barrier", "reduce", "gather",
    "scatter", "all_to_all", "send", "recv",
    "RingReduceError", "CollectiveTimeout", "CollectiveMismatch", "__version__",
]
