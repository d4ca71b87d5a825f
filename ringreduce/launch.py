"""Who am I? Rank, size and local rank from mpirun, torchrun, or a single process."""
from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class LaunchInfo:
    rank: int
    size: int
    local_rank: int
    local_size: int
    launcher: str  # "mpirun", "torchrun" or "single"


def _env_int(*names: str) -> int | None:
    for n in names:
        v = os.environ.get(n)
        if v not in (None, ""):
            try:
                return int(v)
            except ValueError:
                raise ValueError(f"environment variable {n}={v!r} is not an integer") from None
    return None


def detect() -> LaunchInfo:
    """Read the launcher's environment. mpirun wins over torchrun when both are set."""
    # Open MPI, then MPICH/Hydra (and Intel MPI), then PMIx-based launchers such as srun.
    size = _env_int("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE", "MPI_LOCALNRANKS_WORLD")
    rank = _env_int("OMPI_COMM_WORLD_RANK", "PMI_RANK", "PMIX_RANK")
    if size is not None and rank is not None:
        local_rank = _env_int("OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID", "SLURM_LOCALID")
        local_size = _env_int("OMPI_COMM_WORLD_LOCAL_SIZE", "MPI_LOCALNRANKS", "SLURM_NTASKS_PER_NODE")
        return LaunchInfo(rank, size, local_rank if local_rank is not None else rank,
                          local_size if local_size is not None else size, "mpirun")
    size = _env_int("WORLD_SIZE")
    rank = _env_int("RANK")
    if size is not None and rank is not None:
        local_rank = _env_int("LOCAL_RANK")
        local_size = _env_int("LOCAL_WORLD_SIZE")
        return LaunchInfo(rank, size, local_rank if local_rank is not None else rank,
                          local_size if local_size is not None else size, "torchrun")
    return LaunchInfo(0, 1, 0, 1, "single")
