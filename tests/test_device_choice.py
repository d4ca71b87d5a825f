"""How device buffers travel over a host transport: the choice between
CUDA-aware MPI ("direct") and the pinned-host pipeline ("staged"). Pure
logic: runs without a GPU, in any build that has the CUDA part."""
import pytest

from ringreduce import _C, settings

pytestmark = pytest.mark.skipif(not _C.has_cuda, reason="ringreduce was built without CUDA")


def test_follows_cuda_awareness():
    assert _C.device_host_path(True, "auto") == "direct"
    assert _C.device_host_path(False, "") == "staged"


@pytest.mark.parametrize("forced", ["direct", "staged"])
@pytest.mark.parametrize("aware", [True, False])
def test_setting_overrides(forced, aware):
    assert _C.device_host_path(aware, forced) == forced


def test_setting_is_parsed_once(monkeypatch):
    monkeypatch.setenv("RINGREDUCE_MPI_DEVICE_PATH", "staged")
    assert settings.get("RINGREDUCE_MPI_DEVICE_PATH") == "staged"
    monkeypatch.setenv("RINGREDUCE_MPI_DEVICE_PATH", "zero-copy")
    with pytest.raises(ValueError, match="zero-copy"):
        settings.get("RINGREDUCE_MPI_DEVICE_PATH")


def test_bad_value_names_it():
    with pytest.raises(ValueError, match="zero-copy"):
        _C.device_host_path(True, "zero-copy")


def test_gpu_count_without_a_gpu_is_a_number():
    assert isinstance(_C.cuda_device_count(), int) and _C.cuda_device_count() >= 0
