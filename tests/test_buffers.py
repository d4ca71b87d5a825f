"""Buffer adapters: pointers without copies, clear errors on bad input."""
import numpy as np
import pytest

from ringreduce._buffers import as_buffer


def test_numpy_is_zero_copy():
    a = np.arange(10, dtype=np.float32)
    b = as_buffer(a)
    assert b.ptr == a.ctypes.data and b.count == 10 and b.dtype == "float32"
    assert b.device == -1 and not b.readonly and b.nbytes == 40


@pytest.mark.parametrize("dt", ["float16", "float32", "float64", "int8", "uint8", "int32", "int64"])
def test_numpy_dtypes(dt):
    assert as_buffer(np.zeros(3, dt)).dtype == dt


def test_torch_cpu_is_zero_copy():
    torch = pytest.importorskip("torch")
    for dt in (torch.float16, torch.bfloat16, torch.float32, torch.float64, torch.int8,
               torch.uint8, torch.int32, torch.int64):
        t = torch.zeros(2, 3, dtype=dt)
        b = as_buffer(t)
        assert b.ptr == t.data_ptr() and b.count == 6 and b.device == -1
        assert b.dtype == str(dt).replace("torch.", "")


def test_buffer_protocol_and_readonly():
    b = as_buffer(bytearray(8))
    assert b.dtype == "uint8" and b.count == 8 and not b.readonly
    assert as_buffer(b"abcd").readonly
    ro = np.zeros(4, np.float32)
    ro.flags.writeable = False
    assert as_buffer(ro).readonly


def test_non_contiguous_is_value_error():
    a = np.zeros((4, 4), np.float32)[:, 1]
    with pytest.raises(ValueError, match="not contiguous"):
        as_buffer(a)


@pytest.mark.parametrize("dt", ["complex64", "object", "float128" if hasattr(np, "float128") else "complex128"])
def test_unsupported_dtype_is_type_error(dt):
    with pytest.raises(TypeError, match="not supported"):
        as_buffer(np.zeros(3, dtype=dt))


@pytest.mark.parametrize("obj", [None, 3, "abc", [1, 2, 3], {"a": 1}])
def test_non_array_is_type_error(obj):
    with pytest.raises(TypeError):
        as_buffer(obj)


def test_torch_non_contiguous_and_new_dtypes():
    torch = pytest.importorskip("torch")
    with pytest.raises(ValueError, match="not contiguous"):
        as_buffer(torch.zeros(4, 4).t())
    for dt in ("bool", "int16", "uint16", "uint32", "uint64", "float8_e4m3fn", "float8_e5m2"):
        assert as_buffer(torch.zeros(3, dtype=getattr(torch, dt))).dtype == dt
    with pytest.raises(TypeError, match="not supported"):
        as_buffer(torch.zeros(3, dtype=torch.complex64))
