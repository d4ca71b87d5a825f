"""The Python API under mpirun: async work, argument errors, reuse, lifecycle."""
import pytest

from conftest import WORKERS, needs_mpi, results, run_mpi

EXPECTED = {
    "call_before_init", "async_returns_work_and_result", "async_does_not_block_the_caller",
    "blocking_call_after_async_keeps_order", "work_wait_with_timeout_raises_when_late",
    "bad_arguments_are_clear_and_harmless", "zero_size_is_a_noop",
    "torch_and_numpy_share_memory", "chunk_size_per_call_and_per_communicator",
    "barrier_waits_for_everyone", "second_communicator_is_independent", "call_after_finalize",
}


@needs_mpi
@pytest.mark.parametrize("np_", [1, 2, 3])
def test_api(np_):
    out = {r["check"]: r["errors"] for r in results(run_mpi(np_, WORKERS / "api.py", timeout=180).stdout)}
    assert set(out) == EXPECTED
    failed = {k: v for k, v in out.items() if v}
    assert not failed, "\n".join(f"{k}: {v}" for k, v in failed.items())
