"""Exceptions raised by ringreduce. The core maps its C++ errors onto these."""


class RingReduceError(RuntimeError):
    """Base class: a collective failed. The message names the rank, the
    collective and its sequence number, and the peer and ring step involved."""


class CollectiveTimeout(RingReduceError, TimeoutError):
    """A collective did not finish within the communicator's timeout. The
    communicator was aborted; every pending and later call raises too."""


class CollectiveMismatch(RingReduceError):
    """Ranks disagree on the collective, op, dtype, count or root."""
