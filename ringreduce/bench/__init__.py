"""The all-reduce bandwidth benchmark (ringreduce-bench): harness, baselines,
report (tables, JSON, plot) and the ring cost-model fit."""
from .cli import parse_size, sizes
from .harness import algbw, busbw, count_wrong

__all__ = ["parse_size", "sizes", "algbw", "busbw", "count_wrong"]
