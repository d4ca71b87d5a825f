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


# ---- which engine a device buffer gets (ringreduce/_device.py), with the
# engine makers replaced: the branches run here without a GPU ----------------

class _Impl:
    rank, size, has_host_transport = 0, 2, True

    def __init__(self, ucx: bool) -> None:
        self.transport_settings = "TLS=self,sm (default)" if ucx else ""


class _Buf:
    device = 0


def _engines(monkeypatch, *, ucx: bool, shares: bool, ucx_why: str = "", backend=None):
    from ringreduce._device import DeviceEngines
    from ringreduce.launch import LaunchInfo

    made = []
    monkeypatch.setattr(_C, "add_ucx_device_engine",
                        lambda impl, dev: made.append("ucx") or ucx_why, raising=False)
    monkeypatch.setattr(_C, "add_host_path_engine",
                        lambda impl, dev, setting: made.append(setting) or setting)
    monkeypatch.setattr(_C, "add_nccl_engine", lambda impl, dev, uid: made.append("nccl"))
    e = DeviceEngines(_Impl(ucx), LaunchInfo(0, 2, 0, 2, "mpirun"), backend)
    monkeypatch.setattr(e, "rank_device", lambda: 0)
    monkeypatch.setattr(e, "_shares_gpu", lambda dev: shares)
    monkeypatch.setattr(e, "_nccl_unique_id", lambda: b"id")
    return e, made


@pytest.mark.parametrize("ucx,shares,why,path", [
    (True, True, "", "ucx"),                       # UCX host, one GPU shared: UCX's CUDA transports
    (True, True, "rank 1: no CUDA memory", "staged"),  # a rank without them: every rank stages
    (True, False, "", "nccl"),                     # a GPU per rank: NCCL stays the default
    (False, True, "", "staged"),                   # MPI host: staged, UCX never asked
])
def test_ucx_device_path_auto(monkeypatch, ucx, shares, why, path):
    monkeypatch.delenv("RINGREDUCE_UCX_DEVICE_PATH", raising=False)
    e, made = _engines(monkeypatch, ucx=ucx, shares=shares, ucx_why=why)
    e.ensure(_Buf())
    assert e.path == path
    assert ("ucx" in made) == (ucx and shares), made


def test_ucx_device_path_forced(monkeypatch):
    monkeypatch.setenv("RINGREDUCE_UCX_DEVICE_PATH", "ucx")
    e, made = _engines(monkeypatch, ucx=True, shares=False)
    e.ensure(_Buf())
    assert e.path == "ucx" and made == ["ucx"]
    from ringreduce.errors import RingReduceError

    e, made = _engines(monkeypatch, ucx=True, shares=True, ucx_why="rank 0: no CUDA memory")
    with pytest.raises(RingReduceError, match="RINGREDUCE_UCX_DEVICE_PATH=ucx: rank 0: no CUDA"):
        e.ensure(_Buf())
    e, made = _engines(monkeypatch, ucx=False, shares=True)
    with pytest.raises(RingReduceError, match="host transport is not UCX"):
        e.ensure(_Buf())


def test_ucx_device_path_staged_setting(monkeypatch):
    monkeypatch.setenv("RINGREDUCE_UCX_DEVICE_PATH", "staged")
    e, made = _engines(monkeypatch, ucx=True, shares=True)
    e.ensure(_Buf())
    assert e.path == "staged" and made == ["staged"]


@pytest.mark.skipif(not getattr(_C, "has_ucx", False), reason="built without UCX")
def test_ucx_cuda_probe_and_refusal_without_a_gpu():
    """The real probe and engine maker: where UCX has no CUDA memory (no GPU here) both say
    why, and nothing is made."""
    if _C.cuda_device_count() > 0:
        pytest.skip("a GPU is visible: the GPU tests cover the made engine")
    why = _C.ucx_cuda_memory()
    assert isinstance(why, str) and why, why
    import ringreduce as rr

    comm = rr.new_communicator(backend="ucx")
    try:
        got = _C.add_ucx_device_engine(comm._impl, 0)
        assert got.startswith("rank 0: ") and why in got, got
        assert comm.engines == ["ucx"], comm.engines  # the host engine only
    finally:
        comm.finalize()
