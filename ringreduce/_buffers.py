"""Any array -> (pointer, count, dtype, device, stream), without copies.

Order of detection: torch tensors, objects with __cuda_array_interface__
(CuPy, Numba), NumPy arrays and anything with the buffer protocol, then
DLPack producers. Pointers are raw addresses; the caller keeps the array
alive for as long as the collective runs.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from . import _C

# The dtype list is the core's (csrc/common/dtypes.h), exported as _C.DType.
DTYPES = dict(_C.DType.__members__)
ITEMSIZE = {"float16": 2, "bfloat16": 2, "float32": 4, "float64": 8, "int8": 1, "uint8": 1,
            "int16": 2, "uint16": 2, "int32": 4, "uint32": 4, "int64": 8, "uint64": 8,
            "bool": 1, "float8_e4m3fn": 1, "float8_e5m2": 1}
assert set(ITEMSIZE) == set(DTYPES), "every core dtype has a size here"
SUPPORTED = ", ".join(DTYPES)


@dataclass(slots=True)
class Buffer:
    obj: Any            # the array itself, kept alive while in use
    kind: str           # "torch", "cupy", "cai", "numpy"
    ptr: int
    count: int          # elements
    dtype: str
    device: int         # -1 for host memory
    stream: int         # caller's current stream (device buffers), else 0
    readonly: bool
    shape: tuple

    @property
    def nbytes(self) -> int:
        return self.count * ITEMSIZE[self.dtype]

    @property
    def code(self) -> "_C.DType":
        return DTYPES[self.dtype]


def _dtype_name(name: str) -> str:
    if name not in DTYPES:
        raise TypeError(f"dtype {name} is not supported; supported dtypes: {SUPPORTED}")
    return name


def _check_contiguous(ok: bool, what: str, strides) -> None:
    if not ok:
        raise ValueError(f"{what} is not contiguous (strides {strides}); pass a contiguous "
                         f"array, e.g. x.contiguous() or np.ascontiguousarray(x)")


def _is_torch(x: Any) -> bool:
    return type(x).__module__.startswith("torch") and hasattr(x, "data_ptr")


_TORCH_NAMES: dict = {}


def torch_current_stream(device: int) -> int:
    """The caller's current CUDA stream on `device`, as a raw handle."""
    import torch

    raw = getattr(torch._C, "_cuda_getCurrentRawStream", None)  # skips building a Stream object
    return raw(device) if raw is not None else torch.cuda.current_stream(device).cuda_stream


def _from_torch(x: Any) -> Buffer:
    name = _TORCH_NAMES.get(x.dtype)
    if name is None:
        name = _dtype_name(str(x.dtype).replace("torch.", ""))
        _TORCH_NAMES[x.dtype] = name
    if not x.is_contiguous():
        _check_contiguous(False, f"torch tensor of shape {tuple(x.shape)}", x.stride())
    if x.is_cuda:
        device = x.get_device()
        stream = torch_current_stream(device)
    elif x.device.type == "cpu":
        device, stream = -1, 0
    else:
        raise TypeError(f"torch tensors on {x.device} are not supported (only cpu and cuda)")
    return Buffer(x, "torch", x.data_ptr(), x.numel(), name, device, stream, False, tuple(x.shape))


def _from_cai(x: Any) -> Buffer:
    cai = x.__cuda_array_interface__
    kind = "cupy" if type(x).__module__.startswith("cupy") else "cai"
    dt = np.dtype(cai["typestr"])
    # __cuda_array_interface__ has no bfloat16 typestr; trust the array's own dtype name.
    name = "bfloat16" if "bfloat16" in str(getattr(x, "dtype", "")) else dt.name
    _dtype_name(name)
    shape = tuple(cai["shape"])
    count = int(np.prod(shape)) if shape else 1
    strides = cai.get("strides")
    if strides is not None and count > 1:
        expected, acc = [], dt.itemsize
        for dim in reversed(shape):
            expected.append(acc)
            acc *= dim
        ok = all(s == e for s, e, d in zip(strides, reversed(expected), shape) if d != 1)
        _check_contiguous(ok, f"device array of shape {shape}", strides)
    ptr, readonly = cai["data"]
    device, stream = _cai_device_and_stream(x, ptr, cai, kind)
    return Buffer(x, kind, ptr, count, name, device, stream, bool(readonly), shape)


def _cai_device_and_stream(x: Any, ptr: int, cai: dict, kind: str):
    if kind == "cupy":
        import cupy

        return x.device.id, cupy.cuda.get_current_stream().ptr
    device = _C.device_of_pointer(ptr) if getattr(_C, "has_cuda", False) and ptr else 0
    stream = cai.get("stream") or 0
    return device, 0 if stream in (1, 2) else stream


_NAMES = {int(code): name for name, code in DTYPES.items()}


def _from_numpy(a: np.ndarray, obj: Any) -> Buffer:
    if a.dtype.kind in "cOSUMmV":
        raise TypeError(f"dtype {a.dtype} is not supported; supported dtypes: {SUPPORTED}")
    ptr, count, code, readonly, contiguous, _ = _C.host_buffer(a)
    if code >= 0:
        name = _NAMES[code]
    elif a.dtype.itemsize == 2 and a.dtype.name == "bfloat16":  # ml_dtypes' bfloat16
        name = "bfloat16"
    else:
        raise TypeError(f"dtype {a.dtype} is not supported; supported dtypes: {SUPPORTED}")
    if not contiguous:
        _check_contiguous(False, f"numpy array of shape {a.shape}", a.strides)
    return Buffer(obj, "numpy", ptr, count, name, -1, 0, readonly, a.shape)


def as_buffer(x: Any, what: str = "x") -> Buffer:
    """Describe `x` without copying it. Raises TypeError or ValueError with the value."""
    if type(x) is np.ndarray:  # the common host case first: it is the latency path
        return _from_numpy(x, x)
    if _is_torch(x):
        return _from_torch(x)
    if hasattr(x, "__cuda_array_interface__"):
        return _from_cai(x)
    if isinstance(x, np.ndarray):
        return _from_numpy(x, x)
    if isinstance(x, (bytes, bytearray, memoryview)) or _has_buffer(x):
        mv = memoryview(x)
        if not mv.c_contiguous:
            _check_contiguous(False, f"buffer of shape {mv.shape}", mv.strides)
        a = np.asarray(mv)
        return _from_numpy(a, x)
    if hasattr(x, "__dlpack__"):
        try:
            a = np.from_dlpack(x)
        except Exception as e:  # a device array NumPy cannot see
            raise TypeError(f"{what}: DLPack array {type(x).__name__} could not be read on the "
                            f"host ({e}); pass a torch tensor or an object with "
                            f"__cuda_array_interface__ for device memory") from None
        return _from_numpy(a, x)
    raise TypeError(f"{what} must be an array (NumPy, PyTorch, CuPy, or a buffer), "
                    f"got {type(x).__name__}: {x!r:.80}")


def _has_buffer(x: Any) -> bool:
    try:
        memoryview(x)
        return True
    except TypeError:
        return False


def empty_like(buf: Buffer, count: int, shape: tuple | None = None) -> Any:
    """A new array of `count` elements of the same kind, dtype and device as buf."""
    shape = shape if shape is not None else (count,)
    if buf.kind == "torch":
        import torch

        return torch.empty(shape, dtype=buf.obj.dtype, device=buf.obj.device)
    if buf.kind == "cupy":
        import cupy

        with cupy.cuda.Device(buf.device):
            return cupy.empty(shape, dtype=buf.obj.dtype)
    if buf.kind == "numpy":
        dt = buf.obj.dtype if isinstance(buf.obj, np.ndarray) else np.dtype(buf.dtype)
        return np.empty(shape, dtype=dt)
    raise TypeError(f"cannot allocate an output like {type(buf.obj).__name__}; pass out=")


def counts_array(buf: Buffer, values) -> Any:
    """A small int64 array living where buf lives, for exchanging sizes."""
    if buf.kind == "torch":
        import torch

        return torch.tensor(values, dtype=torch.int64, device=buf.obj.device)
    if buf.kind == "cupy":
        import cupy

        with cupy.cuda.Device(buf.device):
            return cupy.asarray(values, dtype=cupy.int64)
    return np.asarray(values, dtype=np.int64)


def to_list(arr: Any) -> list:
    if hasattr(arr, "tolist") and not hasattr(arr, "__cuda_array_interface__") and not _is_torch(arr):
        return [int(v) for v in arr.tolist()]
    if _is_torch(arr):
        return [int(v) for v in arr.cpu().tolist()]
    return [int(v) for v in arr.get().tolist()]  # cupy
