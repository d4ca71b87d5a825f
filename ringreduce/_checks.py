"""Argument checks shared by the collectives: each raises at the boundary,
naming the value that was wrong. The same checks run on every rank."""
from __future__ import annotations

from typing import Any, List, Optional, Sequence

from ._buffers import Buffer, as_buffer


def where(b: Buffer) -> str:
    return "host" if b.device < 0 else f"cuda:{b.device}"


def overlaps(a: Buffer, b: Buffer) -> bool:
    if a.device != b.device:
        return False
    return a.ptr < b.ptr + b.nbytes and b.ptr < a.ptr + a.nbytes


def segment_counts(count: int, n: int) -> List[int]:
    """The ring's segments: count split into n parts, the first count % n one longer."""
    base, extra = divmod(count, n)
    return [base + (1 if r < extra else 0) for r in range(n)]


def check_root(root: Any, size: int, what: str = "root") -> None:
    if not isinstance(root, int) or isinstance(root, bool) or not 0 <= root < size:
        raise ValueError(f"{what} must be a rank in [0, {size}), got {root!r}")


def check_tag(tag: Any) -> None:
    if not isinstance(tag, int) or isinstance(tag, bool) or not -(1 << 63) <= tag < (1 << 63):
        raise ValueError(f"tag must be an integer that fits 64 bits, got {tag!r}")


def check_inplace(b: Buffer, what: str) -> None:
    """b will be written in place."""
    if b.readonly:
        raise ValueError(f"{what} is read-only and cannot be written in place; pass a writable "
                         "array (or out= where the call takes one)")
    if b.kind == "torch" and b.obj.requires_grad and b.obj.is_leaf:
        # torch's own words for the same mistake.
        raise RuntimeError("a leaf Variable that requires grad is being used in an in-place "
                           "operation.")


def check_out(inp: Buffer, out: Any, count: int, what: str) -> Buffer:
    ob = as_buffer(out, "out")
    if ob.dtype != inp.dtype:
        raise TypeError(f"out has dtype {ob.dtype}, expected {inp.dtype} like the input")
    if ob.count != count:
        raise ValueError(f"out holds {ob.count} elements (shape {ob.shape}); {what} needs {count}")
    if ob.device != inp.device:
        raise ValueError(f"out is on {where(ob)} but the input is on {where(inp)}")
    check_inplace(ob, "out")
    return ob


def check_sizes(sizes: Sequence[Any], size: int, rank: Optional[int],
                count: Optional[int]) -> List[int]:
    """A list of `size` element counts >= 0 (with this rank's own count at
    index `rank` when given)."""
    try:
        values = [int(s) for s in sizes]
    except (TypeError, ValueError):
        raise TypeError(f"sizes must be a sequence of integers, got {sizes!r}") from None
    if any(isinstance(s, bool) or int(s) != s for s in sizes):
        raise TypeError(f"sizes must be integers, got {list(sizes)!r}")
    if len(values) != size or any(v < 0 for v in values):
        raise ValueError(f"sizes {values} must list {size} counts >= 0, one per rank")
    if rank is not None and values[rank] != count:
        raise ValueError(f"sizes {values} must hold this rank's {count} at index {rank}")
    return values


def mark_written(b: Buffer) -> None:
    """An in-place write, as autograd must see it: bump the version counter."""
    if b.kind == "torch" and not b.obj.is_inference():
        from torch.autograd.graph import increment_version

        increment_version(b.obj)
