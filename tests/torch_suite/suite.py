"""torch's own distributed test suite (torch.testing._internal.distributed.
distributed_test, the one gloo, nccl, mpi and ucc run), with "ringreduce"
registered as a plug-in backend.

This module is what pytest collects and what torch's spawned ranks import
(MultiProcessTestCase spawns them with the test module's name), so it sets
the suite's environment before torch's test modules read it:

    BACKEND      ringreduce (default) or gloo, the baseline
    WORLD_SIZE   2 (default) or 3

Every rank initialises torch.distributed with init_method file:// and the
rank and size the suite gives it: no launcher. Run it through
tests/torch_suite/run.py, which runs both backends at each world size and
writes the counts.
"""
from __future__ import annotations

import os

os.environ.setdefault("BACKEND", "ringreduce")
os.environ.setdefault("WORLD_SIZE", "2")

import torch  # noqa: E402
from torch.testing._internal.common_distributed import DistTestCases  # noqa: E402

BACKEND = os.environ["BACKEND"]
if BACKEND == "ringreduce":
    import ringreduce.torch  # noqa: F401,E402  (registers the backend)

    # What the suite asks a plug-in backend to declare: it is one, it runs
    # subgroups and DDP, and it takes CUDA tensors (gpu, cuda: the sets gloo,
    # nccl and ucc are in; on a machine without a GPU the tests that need
    # one skip themselves, for every backend alike).
    for feature in ("plugin", "subgroup", "ddp", "gpu", "cuda"):
        DistTestCases.backend_feature[feature].add(BACKEND)

from torch.testing._internal.common_utils import run_tests  # noqa: E402
from torch.testing._internal.distributed.distributed_test import (  # noqa: E402
    DistributedTest, TestDistBackend)


class TestDistBackendWithSpawn(TestDistBackend, DistributedTest._DistTestBase):
    def setUp(self) -> None:
        super().setUp()
        self._spawn_processes()
        torch.backends.cudnn.flags(enabled=True, allow_tf32=False).__enter__()


if __name__ == "__main__":
    run_tests()
