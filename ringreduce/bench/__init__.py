"""The all-reduce bandwidth benchmark (ringreduce-bench): backends (rows),
the measuring loop, the checker, reports (tables, JSON, plot) and the cost
models fitted to its results."""
from .check import count_wrong
from .cli import parse_size, sizes
from .rows import algbw, busbw

__all__ = ["parse_size", "sizes", "algbw", "busbw", "count_wrong"]
