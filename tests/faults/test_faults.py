"""Dead, stopped and mismatched ranks raise within the timeout; nothing hangs."""
import pytest

from conftest import ROOT, needs_mpi, results, run_mpi

WORKER = ROOT / "tests" / "faults" / "fault_worker.py"
TIMEOUT = 3.0
# Open MPI aborts the whole job when one rank dies; keep the survivors
# running so we can watch them raise.
KEEP_GOING = ("--mca", "orte_abort_on_non_zero_status", "0")


def survivors(mode, np_=3):
    p = run_mpi(np_, WORKER, mode, TIMEOUT, timeout=90, mpirun_args=KEEP_GOING, check=False)
    out = {res["rank"]: res for res in results(p.stdout)}
    return out, p


@needs_mpi
@pytest.mark.parametrize("mode", ["kill", "stop"])
def test_dead_or_stopped_peer_raises_within_timeout(mode):
    out, p = survivors(mode)
    assert {0, 2} <= set(out), f"survivors must report\n{p.stdout}\n{p.stderr[-2000:]}"
    if 1 in out:
        # A stopped rank that mpirun resumes while cleaning up finds its
        # peers' notices and raises at once: never a result, never a hang.
        assert out.pop(1)["error"] == "CollectiveTimeout", p.stdout
    for rank, res in out.items():
        assert res["error"] == "CollectiveTimeout", res
        assert TIMEOUT - 0.1 <= res["seconds"] <= TIMEOUT + 3, res
        msg = res["message"]
        # Names the rank, the collective, its sequence number, the ring step,
        # the bytes done and the peer that stalled.
        assert f"rank {rank}: allreduce #1" in msg, msg
        assert "step" in msg and "bytes" in msg and "rank 1" in msg, msg
        # The communicator is poisoned: later calls fail at once, same type.
        assert res["later_error"] == "CollectiveTimeout", res
        assert "aborted" in res["later_message"]


@needs_mpi
def test_mismatched_count_with_check_raises_everywhere():
    out, p = survivors("mismatch_checked")
    assert set(out) == {0, 1, 2}, p.stdout
    for res in out.values():
        assert res["error"] == "CollectiveMismatch", res
        assert "count differs" in res["message"], res
        assert "ranks 0 2 have 1000" in res["message"] and "ranks 1 have 1007" in res["message"]
        assert res["later_error"] is None, "communicator stays usable after a checked mismatch"


@needs_mpi
def test_mismatched_op_with_check_names_the_field():
    out, _ = survivors("mismatch_op_checked")
    assert set(out) == {0, 1, 2}
    for res in out.values():
        assert res["error"] == "CollectiveMismatch" and "op differs" in res["message"], res


@needs_mpi
def test_mismatched_count_without_check_errors_not_corrupts():
    """Without the check the MPI transport still sees the size difference
    (truncation or a short message) and raises; ranks it does not reach time
    out. No rank returns normally with a wrong result."""
    out, p = survivors("mismatch_unchecked")
    assert set(out) == {0, 1, 2}, p.stdout
    for res in out.values():
        assert res["error"] in ("CollectiveMismatch", "CollectiveTimeout", "RingReduceError"), res
    assert any(res["error"] == "CollectiveMismatch" for res in out.values())


@needs_mpi
def test_nan_check_names_the_rank():
    out, _ = survivors("nan_checked")
    assert set(out) == {0, 1, 2}
    for res in out.values():
        assert res["error"] == "RingReduceError" and "rank(s) 1" in res["message"], res
        assert res["later_error"] is None
