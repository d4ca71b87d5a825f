"""How device buffers travel over MPI: the choice between CUDA-aware MPI
("direct") and the pinned-host pipeline ("staged"). Pure logic: runs without
a GPU, in any build that has the CUDA part."""
import pytest

from ringreduce import _C

pytestmark = pytest.mark.skipif(not _C.has_cuda, reason="ringreduce was built without CUDA")


def test_follows_cuda_awareness(monkeypatch):
    monkeypatch.delenv("RINGREDUCE_MPI_DEVICE_PATH", raising=False)
    assert _C.mpi_device_path(True) == "direct"
    assert _C.mpi_device_path(False) == "staged"


@pytest.mark.parametrize("forced", ["direct", "staged"])
@pytest.mark.parametrize("aware", [True, False])
def test_environment_overrides(monkeypatch, forced, aware):
    monkeypatch.setenv("RINGREDUCE_MPI_DEVICE_PATH", forced)
    assert _C.mpi_device_path(aware) == forced


def test_empty_override_is_no_override(monkeypatch):
    monkeypatch.setenv("RINGREDUCE_MPI_DEVICE_PATH", "")
    assert _C.mpi_device_path(False) == "staged"


def test_bad_override_names_the_value(monkeypatch):
    monkeypatch.setenv("RINGREDUCE_MPI_DEVICE_PATH", "zero-copy")
    with pytest.raises(ValueError, match="zero-copy"):
        _C.mpi_device_path(True)


def test_gpu_count_without_a_gpu_is_a_number():
    assert isinstance(_C.cuda_device_count(), int) and _C.cuda_device_count() >= 0
