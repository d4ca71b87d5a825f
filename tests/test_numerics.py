"""The arithmetic of common/numerics.h, through the host reducer, against NumPy bit for bit.

Every reducible dtype x every op: legal pairs match a NumPy reference written from the rules
in numerics.h (float16/bfloat16 widened to float32, combined, rounded once to nearest even;
NaN results canonical; min/max propagate NaN; integers wrap; bool is 0/1), illegal pairs
raise ValueError with opRefusal's reason. Inputs mix random bit patterns, ordinary values and
a grid of edge values (every pair of NaN, +-inf, -0.0, subnormals, extremes) at the front.
tests/gpu/test_reduce_gpu.py runs the same inputs through the device reducer.
"""
from __future__ import annotations

import re
import zlib

import numpy as np
import pytest

from ringreduce import _C

CODES = _C.dtype_codes()
OPS = _C.op_codes()
REDUCIBLE = [d for d in CODES if not d.startswith("float8")]
FLOATS = ["float16", "bfloat16", "float32", "float64"]
STORAGE = {"bfloat16": np.dtype(np.uint16), "bool": np.dtype(np.uint8),
           "float8_e4m3fn": np.dtype(np.uint8), "float8_e5m2": np.dtype(np.uint8)}
CANONICAL_NAN = {"float16": 0x7E00, "bfloat16": 0x7FC0, "float32": 0x7FC00000,
                 "float64": 0x7FF8000000000000}
EDGES = {
    "float16": [0x0000, 0x8000, 0x7C00, 0xFC00, 0x7E00, 0xFE00, 0x7C01, 0x7BFF, 0xFBFF, 0x0001,
                0x03FF, 0x0400, 0x3C00, 0xBC00, 0x3555],
    "bfloat16": [0x0000, 0x8000, 0x7F80, 0xFF80, 0x7FC0, 0xFFC0, 0x7F81, 0x7F7F, 0xFF7F, 0x0001,
                 0x007F, 0x0080, 0x3F80, 0xBF80, 0x3EAB],
    "float32": [0x00000000, 0x80000000, 0x7F800000, 0xFF800000, 0x7FC00000, 0xFFC00000,
                0x7F800001, 0x7F7FFFFF, 0xFF7FFFFF, 0x00000001, 0x007FFFFF, 0x00800000,
                0x3F800000, 0xBF800000, 0x3EAAAAAB],
    "float64": [0, 1 << 63, 0x7FF0 << 48, 0xFFF0 << 48, 0x7FF8 << 48, 0xFFF8 << 48,
                (0x7FF0 << 48) | 1, 0x7FEFFFFFFFFFFFFF, 0xFFEFFFFFFFFFFFFF, 1,
                0x000FFFFFFFFFFFFF, 0x0010000000000000, 0x3FF0 << 48, 0xBFF0 << 48,
                0x3FD5555555555555],
}


def storage(dtype: str) -> np.dtype:
    return STORAGE[dtype] if dtype in STORAGE else np.dtype(dtype)


def bits_type(dtype: str) -> np.dtype:
    return np.dtype(f"uint{8 * storage(dtype).itemsize}")


def legal(dtype: str, op: str) -> bool:
    return _C.op_refusal(CODES[dtype], OPS[op]) == ""


def edge_grid(dtype: str) -> tuple[np.ndarray, np.ndarray]:
    """Every ordered pair of edge values, as raw bits."""
    bt = bits_type(dtype)
    if dtype in EDGES:
        e = np.array(EDGES[dtype], dtype=np.uint64).astype(bt)
    elif dtype == "bool":
        e = np.array([0, 1, 2, 128, 255], dtype=np.uint8)  # any non-zero byte is true
    else:
        info = np.iinfo(dtype)
        vals = [0, 1, 7, info.min, info.max, info.max // 2 + 1]
        vals += [-1, info.min + 1] if info.min else [2, 3]
        e = np.array(vals, dtype=dtype).view(bt)
    return np.repeat(e, e.size), np.tile(e, e.size)


def make_inputs(dtype: str, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Two storage arrays of n elements: edge grid, then random bits and ordinary values."""
    rng = np.random.default_rng(seed)
    bt = bits_type(dtype)
    out = []
    for _ in range(2):
        if dtype == "bool":
            x = rng.integers(0, 2, n).astype(np.uint8)
            x[rng.integers(0, n, n // 16)] = rng.integers(2, 256, n // 16).astype(np.uint8)
        else:
            x = np.frombuffer(rng.bytes(n * bt.itemsize), dtype=bt).copy()  # any bit pattern
            if dtype in FLOATS:  # half of them ordinary values, over a wide exponent range
                v = rng.standard_normal(n) * 2.0 ** rng.integers(-20, 20, n)
                sel = rng.random(n) < 0.5
                vals = to_storage(dtype, v.astype(np.float32) if dtype != "float64" else v)
                x[sel] = vals.view(bt)[sel]
        out.append(x.view(storage(dtype)))
    ea, eb = edge_grid(dtype)
    k = min(n, ea.size)
    out[0].view(bt)[:k] = ea[:k]
    out[1].view(bt)[:k] = eb[:k]
    return out[0], out[1]


def bf16_from_float32(x: np.ndarray) -> np.ndarray:
    torch = pytest.importorskip("torch")
    return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).to(
        torch.bfloat16).view(torch.int16).numpy().view(np.uint16)


def to_storage(dtype: str, x: np.ndarray) -> np.ndarray:
    """Compute values (float32/float64) -> storage bits, rounded to nearest even, canonical NaN."""
    with np.errstate(all="ignore"):  # overflow to infinity is the rule
        return _to_storage(dtype, x)


def _to_storage(dtype: str, x: np.ndarray) -> np.ndarray:
    if dtype == "float16":
        s = x.astype(np.float32).astype(np.float16).view(np.uint16).copy()
    elif dtype == "bfloat16":
        s = bf16_from_float32(x).copy()
    else:
        s = np.array(x, dtype=dtype).view(bits_type(dtype)).copy()
    s[np.isnan(x)] = CANONICAL_NAN[dtype]
    return s.view(storage(dtype))


def to_compute(dtype: str, s: np.ndarray) -> np.ndarray:
    if dtype == "float16":
        return s.view(np.float16).astype(np.float32)
    if dtype == "bfloat16":
        return (s.view(np.uint16).astype(np.uint32) << 16).view(np.float32)
    return s.view(dtype)


def reference(dtype: str, op: str, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """numerics.h's rules, written with NumPy."""
    if dtype == "bool":
        x, y = a != 0, b != 0
        fn = {"sum": np.logical_or, "max": np.logical_or, "bor": np.logical_or,
              "prod": np.logical_and, "min": np.logical_and, "band": np.logical_and,
              "bxor": np.logical_xor}[op]
        return fn(x, y).astype(np.uint8)
    if dtype in FLOATS:
        x, y = to_compute(dtype, a), to_compute(dtype, b)
        nan = np.isnan(x) | np.isnan(y)
    else:
        x, y = a, b
        nan = np.zeros(a.shape, dtype=bool)
    with np.errstate(all="ignore"):  # integer arrays wrap; inf - inf is NaN
        r = {"sum": lambda: x + y, "avg": lambda: x + y, "prod": lambda: x * y,
             "min": lambda: np.where(nan, x + y, np.where(y < x, y, x)),
             "max": lambda: np.where(nan, x + y, np.where(x < y, y, x)),
             "band": lambda: x & y, "bor": lambda: x | y, "bxor": lambda: x ^ y}[op]()
    return to_storage(dtype, r) if dtype in FLOATS else r.astype(dtype)


def reference_avg(dtype: str, s: np.ndarray, world: int) -> np.ndarray:
    if dtype in FLOATS:
        x = to_compute(dtype, s)
        with np.errstate(all="ignore"):
            return to_storage(dtype, x / x.dtype.type(world))
    if np.issubdtype(s.dtype, np.signedinteger):  # C division truncates toward zero
        q, r = np.divmod(s, s.dtype.type(world))
        return (q + ((r != 0) & (s < 0))).astype(s.dtype)
    return s // s.dtype.type(world)


def assert_same_bits(got: np.ndarray, want: np.ndarray, dtype: str, what: str,
                     inputs: tuple = ()) -> None:
    bt = bits_type(dtype)
    g, w = got.view(bt), want.view(bt)
    bad = np.flatnonzero(g != w)
    if bad.size:
        i = bad[:5]
        ins = " ".join(f"in{k}={np.asarray(x).view(bt)[i].tolist()}" for k, x in enumerate(inputs))
        pytest.fail(f"{what}: {bad.size} of {g.size} elements differ; at {i.tolist()} "
                    f"got {g[i].tolist()} want {w[i].tolist()} {ins}")


def host_reduce(dtype, op, a, b, out=None):
    out = np.empty_like(a) if out is None else out
    _C.reduce_host(out.ctypes.data, a.ctypes.data, b.ctypes.data, a.size, CODES[dtype], OPS[op])
    return out


CASES = [(d, o) for d in REDUCIBLE for o in OPS]
N = 4099  # odd: exercises the vector loops' remainders


@pytest.mark.parametrize("dtype,op", CASES, ids=[f"{d}-{o}" for d, o in CASES])
def test_reduce_host_matches_numpy(dtype, op):
    a, b = make_inputs(dtype, N, seed=zlib.crc32(f"{dtype}-{op}".encode()))
    if not legal(dtype, op):
        with pytest.raises(ValueError, match=re.escape(_C.op_refusal(CODES[dtype], OPS[op]))):
            host_reduce(dtype, op, a, b)
        return
    want = reference(dtype, op, a, b)
    assert_same_bits(host_reduce(dtype, op, a, b), want, dtype, f"{dtype} {op}", (a, b))
    # In place (dst is a, then b) and at an odd offset: the same bits.
    a2, b2 = a.copy(), b.copy()
    host_reduce(dtype, op, a2, b, out=a2)
    host_reduce(dtype, op, a, b2, out=b2)
    assert_same_bits(a2, want, dtype, f"{dtype} {op} into a")
    assert_same_bits(b2, want, dtype, f"{dtype} {op} into b")
    assert_same_bits(host_reduce(dtype, op, a[1:], b[1:]), want[1:], dtype, f"{dtype} {op} +1")


@pytest.mark.parametrize("dtype", REDUCIBLE)
def test_finalize_avg_host(dtype):
    s, _ = make_inputs(dtype, N, seed=7)
    if dtype == "bool":
        with pytest.raises(ValueError, match="avg"):
            _C.finalize_host(s.ctypes.data, s.size, CODES[dtype], OPS["avg"], 2)
        return
    for world in (1, 2, 3, 7):
        x = s.copy()
        _C.finalize_host(x.ctypes.data, x.size, CODES[dtype], OPS["avg"], world)
        want = s if world == 1 else reference_avg(dtype, s, world)
        assert_same_bits(x, want, dtype, f"{dtype} avg / {world}", (s,))
    x = s.copy()
    _C.finalize_host(x.ctypes.data, x.size, CODES[dtype], OPS["sum"], 3)  # not avg: untouched
    assert_same_bits(x, s, dtype, "sum finalize")
    with pytest.raises(ValueError, match="world size"):
        _C.finalize_host(x.ctypes.data, x.size, CODES[dtype], OPS["avg"], 0)


@pytest.mark.parametrize("dtype", list(CODES))
def test_any_non_finite_host(dtype):
    bt = bits_type(dtype)
    code = CODES[dtype]
    patterns = {"float16": (0x3C00, [0x7C00, 0xFE00]), "bfloat16": (0x3F80, [0xFF80, 0x7FC1]),
                "float32": (0x3F800000, [0x7F800000, 0xFFC00000]),
                "float64": (0x3FF0 << 48, [0xFFF0 << 48, 0x7FF8 << 48]),
                "float8_e5m2": (0x3C, [0x7C, 0xFF]), "float8_e4m3fn": (0x7E, [0x7F, 0xFF])}
    if dtype not in patterns:  # integers and bool have no non-finite values
        x = np.full(1000, np.iinfo(bt).max, dtype=bt)
        assert not _C.any_non_finite_host(x.ctypes.data, x.size, code)
        return
    finite, bad = patterns[dtype]
    for n in (1, 17, 1000):
        x = np.full(n, finite, dtype=np.uint64).astype(bt)
        assert not _C.any_non_finite_host(x.ctypes.data, n, code)
        for v in bad:
            y = x.copy()
            y[n // 2] = v
            assert _C.any_non_finite_host(y.ctypes.data, n, code), (dtype, n, hex(v))


def test_unknown_codes_and_empty_spans():
    x = np.zeros(4, dtype=np.float32)
    p = x.ctypes.data
    with pytest.raises(ValueError, match="unknown dtype code 99"):
        _C.reduce_host(p, p, p, 4, 99, OPS["sum"])
    with pytest.raises(ValueError, match="unknown reduce op code 42"):
        _C.reduce_host(p, p, p, 4, CODES["float32"], 42)
    with pytest.raises(ValueError, match="count"):
        _C.reduce_host(p, p, p, -1, CODES["float32"], OPS["sum"])
    _C.reduce_host(0, 0, 0, 0, CODES["float32"], OPS["sum"])  # nothing to touch
    for d in ("float8_e4m3fn", "float8_e5m2"):
        with pytest.raises(ValueError, match="moved as bytes only"):
            _C.reduce_host(p, p, p, 4, CODES[d], OPS["max"])


def quiet(f32: np.ndarray) -> np.ndarray:
    """Sets the quiet bit of NaNs: a float through a Python float (a double) loses signalling."""
    u = f32.view(np.uint32).copy()
    u[np.isnan(f32)] |= 0x00400000
    return u


def test_half_patterns_round_trip():
    bits = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16)
    ref = bits.view(np.float16).astype(np.float32)
    got = np.array([_C.half_to_float(int(b)) for b in bits], dtype=np.float32)
    assert_same_bits(quiet(got), quiet(ref), "float32", "half -> float, NaN payloads included")
    # half -> float -> half through a reduction: x + (-0.0) is x for every x.
    zero = np.full(bits.size, 0x8000, dtype=np.uint16)
    back = host_reduce("float16", "sum", bits, zero)
    want = bits.copy()
    want[np.isnan(ref)] = CANONICAL_NAN["float16"]
    assert_same_bits(back, want, "float16", "half round trip")


def test_bf16_patterns_round_trip():
    torch = pytest.importorskip("torch")
    bits = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16)
    ref = torch.from_numpy(bits.view(np.int16).copy()).view(torch.bfloat16).float().numpy()
    got = np.array([_C.bf16_to_float(int(b)) for b in bits], dtype=np.float32)
    assert_same_bits(quiet(got), quiet(ref), "float32", "bf16 -> float")
    zero = np.full(bits.size, 0x8000, dtype=np.uint16)
    back = host_reduce("bfloat16", "sum", bits, zero)
    want = bits.copy()
    want[np.isnan(ref)] = CANONICAL_NAN["bfloat16"]
    assert_same_bits(back, want, "bfloat16", "bf16 round trip")


def test_float_to_half_and_bf16_rounding():
    """The scalar conversions on random float32 patterns: nearest even; NaN keeps its sign."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    u = np.concatenate([rng.integers(0, 1 << 32, 30000, dtype=np.uint64).astype(np.uint32),
                        (rng.integers(0x33000000, 0x47800000, 30000)).astype(np.uint32),
                        np.array([0x477FE000, 0x477FEFFF, 0x477FF000, 0x33000000, 0x33000001,
                                  0x387FE000, 0x387FF000, 0x7F7FFFFF, 0x7F800001], np.uint32)])
    f = u.view(np.float32)
    nan = np.isnan(f)
    with np.errstate(all="ignore"):
        want_h = f.astype(np.float16).view(np.uint16).copy()
    want_h[nan] = 0x7E00 | ((u[nan] >> 16) & 0x8000).astype(np.uint16)
    got_h = np.array([_C.float_to_half(float(x)) for x in f], dtype=np.uint16)
    assert_same_bits(got_h, want_h, "float16", "float -> half", (u,))
    want_b = torch.from_numpy(f.copy()).to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)
    want_b = want_b.copy()
    want_b[nan] = ((u[nan] >> 16) | 0x40).astype(np.uint16)
    got_b = np.array([_C.float_to_bf16(float(x)) for x in f], dtype=np.uint16)
    assert_same_bits(got_b, want_b, "bfloat16", "float -> bf16", (u,))
