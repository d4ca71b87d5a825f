"""Inputs every rank can regenerate, float64 references and tolerances."""
from __future__ import annotations

import hashlib
import zlib

import numpy as np

DTYPES = ["float16", "bfloat16", "float32", "float64", "int8", "uint8", "int32", "int64"]
OPS = ["sum", "prod", "min", "max", "avg"]
EPS = {"float16": 2.0 ** -10, "bfloat16": 2.0 ** -7, "float32": 2.0 ** -23, "float64": 2.0 ** -52}


def seed_of(*parts) -> int:
    return zlib.crc32(repr(parts).encode())


def make_input(rank: int, count: int, dtype: str, op: str, salt=0) -> np.ndarray:
    """float64 values exactly representable in dtype, small enough not to overflow."""
    rng = np.random.default_rng(seed_of(rank, count, dtype, op, salt))
    if dtype in EPS:
        if op == "prod":
            v = rng.choice([0.5, 1.0, 1.5, 2.0, -1.0], size=count)
        else:
            v = np.round(rng.uniform(-4, 4, size=count) * 64) / 64
    elif dtype == "uint8":
        v = rng.integers(0, 4, size=count)
    else:
        v = rng.integers(-2 if op == "prod" else -3, 3 if op == "prod" else 4, size=count)
    return v.astype(np.float64)


def reference(inputs: list, op: str, dtype: str) -> np.ndarray:
    stack = np.stack(inputs) if inputs[0].size else np.zeros((len(inputs), 0))
    n = len(inputs)
    if op == "sum":
        return stack.sum(0)
    if op == "prod":
        return stack.prod(0)
    if op == "min":
        return stack.min(0)
    if op == "max":
        return stack.max(0)
    s = stack.sum(0)
    return np.trunc(s / n) if dtype not in EPS else s / n


def tolerance(inputs: list, ref: np.ndarray, op: str, dtype: str) -> np.ndarray:
    if dtype not in EPS or op in ("min", "max"):
        return np.zeros_like(ref)
    n = len(inputs)
    eps = EPS[dtype]
    if op == "prod":
        return 2 * n * eps * np.abs(ref)
    return 2 * n * eps * np.sum(np.abs(np.stack(inputs)), axis=0) + 1e-300


def to_array(values: np.ndarray, dtype: str, kind: str = "numpy"):
    """values (float64) as a `kind` array of `dtype`."""
    if kind == "torch" or dtype == "bfloat16":
        import torch

        return torch.tensor(values, dtype=torch.float64).to(getattr(torch, dtype))
    return values.astype(dtype)


def to_float64(x) -> np.ndarray:
    if hasattr(x, "detach"):
        return x.detach().to("cpu").double().numpy()
    return np.asarray(x, dtype=np.float64)


def digest(x) -> str:
    if hasattr(x, "detach"):
        import torch

        t = x.detach().cpu().contiguous().reshape(-1)
        b = t.view(torch.uint8).numpy().tobytes() if t.numel() else b""
    else:
        b = np.ascontiguousarray(x).tobytes()
    return hashlib.sha256(b).hexdigest()


def point_to_point_checks(comm, fail) -> int:
    """Tagged send/recv and receives from any source, on every rank of comm
    (calls fail(message) for each wrong result). Returns the checks made."""
    r, n = comm.rank, comm.size
    if n < 2:
        return 0
    made = 0
    # Tagged: every rank sends to every other, tag = its own rank.
    for dst in range(n):
        if dst == r:
            for src in range(n):
                if src != r:
                    got = np.full(7, -1, np.int64)
                    w = comm.recv(got, src, tag=src, async_op=True)
                    w.wait()
                    if not (got == src).all() or w.source != src:
                        fail(f"tagged recv from {src}: {got.tolist()} (source {w.source})")
                    made += 1
        else:
            comm.send(np.full(7, r, np.int64), dst, tag=r)
    comm.barrier()
    # From any source: rank 0 takes one message from every other rank, in
    # whatever order they come.
    if r == 0:
        seen = []
        for _ in range(n - 1):
            got = np.full(5, -1, np.int32)
            w = comm.recv(got, None, async_op=True)
            w.wait()
            seen.append(w.source)
            if w.source is None or not (got == w.source * 10).all():
                fail(f"recv from any source: {got.tolist()} from {w.source}")
        if sorted(seen) != list(range(1, n)):
            fail(f"recv from any source: sources {seen}")
        made += 1
    else:
        comm.send(np.full(5, r * 10, np.int32), 0)
    comm.barrier()
    return made
