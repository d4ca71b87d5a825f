"""Checking results outside the timed loop: each rank's input tensor, the
expected result as a float64 tensor, and the count of wrong elements."""
from __future__ import annotations

from typing import Any, Dict, Tuple

# The inputs themselves (rank_table, expected_table) come from one place,
# shared with the tests; this is the only module of the benchmark that imports them.
from .harness import ITEMSIZE, PERIOD, expected_table, rank_table

CHECK_BLOCK = PERIOD * 1024    # elements compared at a time (bounds the float64 temporaries)

__all__ = ["ITEMSIZE", "PERIOD", "CHECK_BLOCK", "torch_dtype", "fill_periodic", "count_wrong",
           "Tables"]


def torch_dtype(name: str):
    import torch

    return getattr(torch, name)


def fill_periodic(t: Any, table: Any) -> None:
    """Write table repeated over the flat tensor t, by doubling copies (no big temporary)."""
    flat = t.view(-1)
    n = flat.numel()
    k = min(n, table.numel())
    if k == 0:
        return
    flat[:k].copy_(table[:k])
    while k < n:
        m = min(k, n - k)
        flat[k:k + m].copy_(flat[:m])
        k += m


def count_wrong(result: Any, expected: Any, rtol: float = 0.0) -> int:
    """Elements of the flat tensor `result` that differ from `expected`, a
    float64 tensor of PERIOD values repeated over the result (compared in
    float64; NaN always counts as wrong)."""
    import torch

    flat = result.reshape(-1)
    n = flat.numel()
    period = expected.numel()
    if n == 0:
        return 0
    reps = -(-min(n, CHECK_BLOCK) // period)
    exp_block = expected.to(flat.device).repeat(reps)
    block = reps * period
    wrong = 0
    for start in range(0, n, block):
        got = flat[start:start + block].to(torch.float64)
        e = exp_block[:got.numel()]
        if rtol == 0.0:
            bad = got != e
        else:
            bad = ~(torch.abs(got - e) <= rtol * torch.abs(e))
        wrong += int(bad.sum().item())
    return wrong


class Tables:
    """This rank's input table (in the dtype, on the device) and the expected
    float64 table with its tolerance, per (dtype, op), made once."""

    def __init__(self, seed: int, rank: int, nranks: int, device: str) -> None:
        self.seed, self.rank, self.nranks = seed, rank, nranks
        self.device = "cuda" if device == "cuda" else "cpu"
        self._cache: Dict[Tuple[str, str], Tuple[Any, Any, float]] = {}

    def get(self, dtype: str, op: str) -> Tuple[Any, Any, float]:
        import torch

        key = (dtype, op)
        if key not in self._cache:
            mine = rank_table(self.seed, self.rank, self.nranks, dtype, op)
            exp, rtol = expected_table(self.seed, self.nranks, dtype, op)
            self._cache[key] = (torch.from_numpy(mine).to(torch_dtype(dtype)).to(self.device),
                                torch.from_numpy(exp).to(self.device), rtol)
        return self._cache[key]
