"""Reproducible inputs and expected results of the benchmark.

Every rank regenerates every rank's input from (seed, rank), so the expected
result is known everywhere without communication. Inputs are a short table
(period PERIOD elements, a prime, so a segment or chunk landing at the wrong
offset shows up as wrong values) repeated over the buffer; the expected result
is the float64 reduction of the N tables, repeated the same way.
"""
from __future__ import annotations

from typing import Tuple

import numpy as np

PERIOD = 1021                  # elements; prime

ITEMSIZE = {"float16": 2, "bfloat16": 2, "float32": 4, "float64": 8,
            "int8": 1, "uint8": 1, "int32": 4, "int64": 8}
# Largest integer magnitude every value (and partial result) must stay within
# for a sum to be exact in the dtype.
_EXACT = {"float16": 2048, "bfloat16": 256, "float32": 1 << 24, "float64": 1 << 53,
          "int8": 127, "uint8": 255, "int32": (1 << 31) - 1, "int64": (1 << 63) - 1}
_EPS = {"float16": 2.0 ** -10, "bfloat16": 2.0 ** -7, "float32": 2.0 ** -23,
        "float64": 2.0 ** -52}


# -- inputs and expected results -------------------------------------------------------
def value_range(dtype: str, op: str, nranks: int) -> Tuple[int, int]:
    """Integer range of input values that keeps every partial result exact."""
    limit = _EXACT[dtype]
    k = min(limit // max(nranks, 1), 1000) if op in ("sum", "avg") else min(limit, 1000)
    return (0, k) if dtype == "uint8" else (-k, k)


def rank_table(seed: int, rank: int, nranks: int, dtype: str, op: str) -> np.ndarray:
    """Rank `rank`'s PERIOD input values (float64 holding small integers)."""
    rng = np.random.default_rng([seed, rank, nranks])
    if op == "prod":
        # Magnitudes 1, and 2 on exactly one rank for every third element:
        # any product has magnitude <= 2 and is exact in every dtype.
        j = np.arange(PERIOD)
        mag = np.where((j % 3 == 0) & (j % nranks == rank), 2.0, 1.0)
        if dtype == "uint8":
            return mag
        return mag * rng.choice([-1.0, 1.0], size=PERIOD)
    lo, hi = value_range(dtype, op, nranks)
    return rng.integers(lo, hi + 1, size=PERIOD).astype(np.float64)


def expected_table(seed: int, nranks: int, dtype: str, op: str) -> Tuple[np.ndarray, float]:
    """(expected PERIOD values in float64, relative tolerance). The tolerance
    is 0 except for floating avg, whose final division rounds."""
    tables = np.stack([rank_table(seed, r, nranks, dtype, op) for r in range(nranks)])
    if op == "sum":
        return tables.sum(axis=0), 0.0
    if op == "prod":
        return tables.prod(axis=0), 0.0
    if op == "min":
        return tables.min(axis=0), 0.0
    if op == "max":
        return tables.max(axis=0), 0.0
    s = tables.sum(axis=0)
    if dtype in _EPS:
        return s / nranks, _EPS[dtype]
    return np.trunc(s / nranks), 0.0


# The measuring loop, the checker, the timers and the control channel that lived
# here are in measure.py, check.py, timing.py and control.py.
