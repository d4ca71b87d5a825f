"""NCCL path: a dead or stopped peer ends in an error within the timeout."""
import pytest

from conftest import ROOT, needs_mpi, results, run_mpi
from ringreduce import _C

WORKER = ROOT / "tests" / "faults" / "fault_worker.py"
TIMEOUT = 5.0
pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not _C.has_cuda, reason="ringreduce was built without CUDA"),
    pytest.mark.skipif(_C.has_cuda and _C.cuda_device_count() < 2, reason="needs 2 GPUs"),
]


@needs_mpi
@pytest.mark.parametrize("mode", ["stop_cuda", "kill_cuda"])
def test_nccl_dead_or_stopped_peer(mode):
    p = run_mpi(2, WORKER, mode, TIMEOUT, timeout=120,
                mpirun_args=("--mca", "orte_abort_on_non_zero_status", "0"), check=False)
    out = {res["rank"]: res for res in results(p.stdout)}
    assert 0 in out, f"the survivor must report\n{p.stdout}\n{p.stderr[-3000:]}"
    res = out[0]
    assert res["error"] == "CollectiveTimeout", res
    assert res["seconds"] <= TIMEOUT + 5, res
    assert "rank 0" in res["message"] and "allreduce" in res["message"], res
    assert res["later_error"] == "CollectiveTimeout", res
