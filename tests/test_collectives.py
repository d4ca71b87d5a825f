"""Multi-rank correctness of every collective, under mpirun -np 1..4."""
import pytest

from conftest import WORKERS, needs_mpi, results, run_mpi


@needs_mpi
@pytest.mark.parametrize("np_", [1, 2, 3, 4])
def test_collectives_numpy(np_):
    out = results(run_mpi(np_, WORKERS / "collectives.py", "numpy", timeout=600).stdout)
    assert len(out) == np_, "every rank reports"
    for res in out:
        assert res["checked"] >= 6 * 8 * 5 * 3, res
        assert res["nfail"] == 0, res["failures"]


@needs_mpi
@pytest.mark.parametrize("np_", [2, 3])
def test_collectives_torch_small_chunks(np_):
    """torch CPU tensors, with 4 KiB chunks so every pipeline path runs."""
    pytest.importorskip("torch")
    out = results(run_mpi(np_, WORKERS / "collectives.py", "torch", 4096, timeout=600).stdout)
    assert len(out) == np_
    for res in out:
        assert res["nfail"] == 0, res["failures"]


@needs_mpi
def test_collectives_ring_only_for_small_counts():
    """RINGREDUCE_SMALL_BYTES=0: small counts take the ring too (counts below N included)."""
    out = results(run_mpi(3, WORKERS / "collectives.py", "numpy", timeout=600,
                          env={"RINGREDUCE_SMALL_BYTES": "0"}).stdout)
    assert len(out) == 3
    for res in out:
        assert res["nfail"] == 0, res["failures"]
