"""Device reductions against the host reducer, bit for bit (one GPU).

The inputs of tests/test_numerics.py (random bit patterns, ordinary values, the edge grid)
go through CudaReducer and CpuReducer; the bytes must be equal for every reducible dtype x
legal op, at sizes that reach the kernel's vector body, its grid-stride loop and its scalar
head and tail, and at pointer offsets that share or break 16-byte alignment. Buffers travel
as torch uint8 tensors, so dtypes torch lacks need nothing from it. Skipped without a CUDA
build or a GPU.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from ringreduce import _C

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
import test_numerics as tn  # noqa: E402

torch = pytest.importorskip("torch")

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not _C.has_cuda, reason="ringreduce was built without CUDA"),
    pytest.mark.skipif(_C.has_cuda and _C.cuda_device_count() == 0, reason="needs a GPU"),
    pytest.mark.skipif(not torch.cuda.is_available(), reason="torch sees no GPU"),
]

LEGAL = [(d, o) for d, o in tn.CASES if tn.legal(d, o)]
# (elements, offset of dst, a, b in elements): vector body only, heads and tails, several
# grid-stride steps (one step of 132 SMs x 4 blocks x 256 threads x 4 vectors is ~8.6 MB),
# and pointers that share no 16-byte phase (the scalar path).
SHAPES = [(1, (0, 0, 0)), (7, (0, 0, 0)), (4099, (1, 1, 1)), (100003, (3, 3, 3)),
          (5_000_011, (0, 0, 0)), (20011, (0, 1, 2))]


def device_bytes(x: np.ndarray, offset_elems: int, pad: int = 64) -> tuple:
    """x's bytes on the GPU at `offset_elems` past a 256-byte boundary; (tensor, pointer)."""
    raw = np.ascontiguousarray(x).view(np.uint8)
    start = offset_elems * x.itemsize
    t = torch.zeros(raw.size + start + pad, dtype=torch.uint8, device="cuda")
    t[start:start + raw.size] = torch.from_numpy(raw.copy()).cuda()
    return t, t.data_ptr() + start


def from_device(t, ptr: int, like: np.ndarray) -> np.ndarray:
    start = ptr - t.data_ptr()
    return t[start:start + like.nbytes].cpu().numpy().view(like.dtype)


def stream() -> int:
    return torch.cuda.current_stream().cuda_stream


@pytest.mark.parametrize("dtype,op", LEGAL, ids=[f"{d}-{o}" for d, o in LEGAL])
def test_reduce_device_equals_host(dtype, op):
    dev = torch.cuda.current_device()
    for n, (od, oa, ob) in SHAPES:
        a, b = tn.make_inputs(dtype, n, seed=n + 17 * tn.CODES[dtype] + tn.OPS[op])
        want = tn.host_reduce(dtype, op, a, b)
        ta, pa = device_bytes(a, oa)
        tb, pb = device_bytes(b, ob)
        td, pd = device_bytes(np.full(a.nbytes, 0x5A, np.uint8).view(a.dtype), od)  # poisoned
        _C.reduce_device(dev, stream(), pd, pa, pb, n, tn.CODES[dtype], tn.OPS[op])
        torch.cuda.synchronize()
        tn.assert_same_bits(from_device(td, pd, a), want, dtype, f"{dtype} {op} n={n}", (a, b))
        # In place, into a: the ring's common case.
        _C.reduce_device(dev, stream(), pa, pa, pb, n, tn.CODES[dtype], tn.OPS[op])
        torch.cuda.synchronize()
        tn.assert_same_bits(from_device(ta, pa, a), want, dtype, f"{dtype} {op} n={n} in place")


@pytest.mark.parametrize("dtype", [d for d in tn.REDUCIBLE if d != "bool"])
def test_finalize_device_equals_host(dtype):
    dev = torch.cuda.current_device()
    for n, (od, _, _) in SHAPES:
        s, _ = tn.make_inputs(dtype, n, seed=n)
        for world in (2, 3, 7):
            want = s.copy()
            _C.finalize_host(want.ctypes.data, n, tn.CODES[dtype], tn.OPS["avg"], world)
            t, p = device_bytes(s, od)
            _C.finalize_device(dev, stream(), p, n, tn.CODES[dtype], tn.OPS["avg"], world)
            torch.cuda.synchronize()
            tn.assert_same_bits(from_device(t, p, s), want, dtype, f"{dtype} avg/{world} n={n}")


@pytest.mark.parametrize("dtype", list(tn.CODES))
def test_any_non_finite_device_equals_host(dtype):
    dev = torch.cuda.current_device()
    code = tn.CODES[dtype]
    bt = tn.bits_type(dtype)
    rng = np.random.default_rng(code)
    for n in (1, 1000, 1 << 20):
        x = np.frombuffer(rng.bytes(n * bt.itemsize), dtype=bt).copy()
        if dtype in tn.FLOATS:  # mostly finite, so the answer is not always True
            x = tn.to_storage(dtype, rng.standard_normal(n)).view(bt).copy()
        for poke in (None, n - 1):
            y = x.copy()
            if poke is not None and dtype in tn.EDGES:
                y[poke] = tn.EDGES[dtype][2]  # +inf
            t, p = device_bytes(y, 0)
            want = _C.any_non_finite_host(y.ctypes.data, n, code)
            assert _C.any_non_finite_device(dev, stream(), p, n, code) == want, (dtype, n, poke)


def test_device_conversions_match_bit_tricks():
    """All 2^32 floats to half and bfloat16, all 2^16 halves to float: no differing input."""
    assert _C.device_conversion_mismatches(torch.cuda.current_device()) == (0, 0, 0)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
@pytest.mark.parametrize("op", ["sum", "prod", "min", "max"])
def test_every_half_pattern_against_random_partners(dtype, op):
    """Each of the 65536 patterns meets 64 random partners (4M pairs) on both sides."""
    dev = torch.cuda.current_device()
    rng = np.random.default_rng(5)
    a = np.tile(np.arange(1 << 16, dtype=np.uint32).astype(np.uint16), 64)
    b = np.frombuffer(rng.bytes(a.nbytes), dtype=np.uint16).copy()
    want = tn.host_reduce(dtype, op, a, b)
    ta, pa = device_bytes(a, 0)
    tb, pb = device_bytes(b, 0)
    _C.reduce_device(dev, stream(), pa, pa, pb, a.size, tn.CODES[dtype], tn.OPS[op])
    torch.cuda.synchronize()
    tn.assert_same_bits(from_device(ta, pa, a), want, dtype, f"{dtype} {op} all patterns")


def test_refusals_on_device():
    dev = torch.cuda.current_device()
    t = torch.zeros(64, dtype=torch.uint8, device="cuda")
    p = t.data_ptr()
    with pytest.raises(ValueError, match="needs an integer or bool"):
        _C.reduce_device(dev, stream(), p, p, p, 4, tn.CODES["float32"], tn.OPS["bxor"])
    with pytest.raises(ValueError, match="moved as bytes only"):
        _C.reduce_device(dev, stream(), p, p, p, 4, tn.CODES["float8_e5m2"], tn.OPS["sum"])
    with pytest.raises(ValueError, match="avg"):
        _C.finalize_device(dev, stream(), p, 4, tn.CODES["bool"], tn.OPS["avg"], 2)
