"""Text output: nccl-tests style tables, the comparison of ringreduce with
each baseline, the target summaries, and the progress bar."""
from __future__ import annotations

import sys
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

from .baselines import is_ringreduce
from .cli import format_size
from .rows import Row, geomean

_HEAD = ("#{:>12} {:>12} {:>9} {:>6}   {:>10} {:>7} {:>7} {:>6}   {:>10} {:>7} {:>7} {:>6}")
_LINE = (" {:>12} {:>12} {:>9} {:>6}   {:>10} {:>7} {:>7} {:>6}   {:>10} {:>7} {:>7} {:>6}")

# The targets the summary lines check: (first size, last size) in bytes.
BUSBW_RANGE = (1 << 20, 256 << 20)
LATENCY_RANGE = (8, 64 << 10)
LAUNCH = "launch"          # the one-kernel-launch row: compared on time only
LAUNCH_TARGET = 1.3        # an eager call costs at most this many launches


def _time(us: Optional[float]) -> str:
    if us is None:
        return "-"
    return f"{us:.1f}" if us < 1e5 else f"{us:.0f}"


def _bw(x: Optional[float]) -> str:
    return "-" if x is None else f"{x:.2f}"


def _wrong(w: Any, present: bool) -> str:
    if not present:
        return "-"
    return "N/A" if w is None else str(w)


def labels(rows: Sequence[Row]) -> List[Tuple[str, bool]]:
    """(backend, graph) pairs in the order they first appear."""
    return list(dict.fromkeys((r.backend, r.graph) for r in rows))


def backend_table(rows: Sequence[Row], backend: str, description: str = "",
                  graph: bool = False) -> str:
    """One backend's results, one line per (size, dtype, op), out-of-place then
    in-place; ringreduce rows also say which algorithm ran."""
    mine = [r for r in rows if r.backend == backend and r.graph == graph]
    keys: List[Tuple[int, str, str]] = []
    by: Dict[Tuple[int, str, str, bool], Row] = {}
    for r in mine:
        k = (r.bytes, r.dtype, r.op)
        if k not in keys:
            keys.append(k)
        by[k + (r.inplace,)] = r
    label = backend + (f" (CUDA graph replays)" if graph else "")
    has_algo = any(r.algo for r in mine)
    out = [f"# backend: {label}" + (f" -- {description}" if description else ""),
           "#" + " " * 45 + f"{'out-of-place':^33}   {'in-place':^33}",
           _HEAD.format("size", "count", "type", "redop", "time", "algbw", "busbw", "#wrong",
                        "time", "algbw", "busbw", "#wrong") + ("   algorithm" if has_algo else ""),
           _HEAD.format("(B)", "(elements)", "", "", "(us)", "(GB/s)", "(GB/s)", "",
                        "(us)", "(GB/s)", "(GB/s)", "")]
    for k in keys:
        o, i = by.get(k + (False,)), by.get(k + (True,))
        any_row = o or i
        assert any_row is not None
        out.append(_LINE.format(
            k[0], any_row.count, k[1], k[2],
            _time(o.time_us if o else None), _bw(o.algbw if o else None),
            _bw(o.busbw if o else None), _wrong(o.wrong if o else None, o is not None),
            _time(i.time_us if i else None), _bw(i.algbw if i else None),
            _bw(i.busbw if i else None), _wrong(i.wrong if i else None, i is not None))
            + (f"   {any_row.algo or '-'}" if has_algo else ""))
    wrong = sum(r.wrong or 0 for r in mine)
    checked = [r for r in mine if r.wrong is not None]
    oop = [r.busbw for r in mine if not r.inplace]
    avg = sum(oop) / max(1, len(oop))
    out.append(f"# {label}: out of bounds values : {wrong} "
               f"{'OK' if wrong == 0 else 'FAILED'}" + ("" if checked else " (not checked)"))
    out.append(f"# {label}: avg bus bandwidth (out-of-place) : {avg:.3f} GB/s")
    return "\n".join(out)


def _index(rows: Iterable[Row]) -> Dict[Tuple[str, bool, int, str, str, bool], Row]:
    return {(r.backend, r.graph, r.bytes, r.dtype, r.op, r.inplace): r for r in rows}


def ratio_pairs(backends: Sequence[str]) -> List[Tuple[str, str]]:
    """(ringreduce backend, baseline) pairs to compare."""
    ours = [b for b in backends if is_ringreduce(b)]
    theirs = [b for b in backends if not is_ringreduce(b)]
    pairs = [(a, b) for a in ours for b in theirs]
    if not theirs and len(ours) > 1:
        pairs = [(ours[0], b) for b in ours[1:]]
    return pairs


def ratios(rows: Sequence[Row], ours: str, base: str, inplace: bool = False,
           graph: bool = False) -> List[Tuple[int, str, str, float, float]]:
    """(bytes, dtype, op, busbw ratio ours/base, time ratio ours/base) per common size.
    The busbw ratio is base time / our time (the same bytes move), so it stays
    defined with one rank where busbw is 0."""
    idx = _index(rows)
    out = []
    for r in rows:
        if r.backend != ours or r.inplace != inplace or r.graph != graph:
            continue
        b = idx.get((base, graph, r.bytes, r.dtype, r.op, inplace))
        if b is None or r.time_us <= 0 or b.time_us <= 0:
            continue
        out.append((r.bytes, r.dtype, r.op, b.time_us / r.time_us, r.time_us / b.time_us))
    return out


def _span(sizes: Sequence[int]) -> str:
    s = sorted(set(sizes))
    return f"{format_size(s[0])}..{format_size(s[-1])}" if len(s) > 1 else format_size(s[0])


def summary_lines(oop: Sequence[Tuple[int, str, str, float, float]], ours: str, base: str,
                  graph: bool = False) -> List[str]:
    """The targets, over the sizes that actually ran in each target range:
    busbw over 1 MiB..256 MiB, time over 8 B..64 KiB (time only against the launch row)."""
    mode = " (graph)" if graph else ""
    big = [(b, x) for b, _, _, x, _ in oop if BUSBW_RANGE[0] <= b <= BUSBW_RANGE[1]]
    small = [(b, y) for b, _, _, _, y in oop if LATENCY_RANGE[0] <= b <= LATENCY_RANGE[1]]
    out = []
    if big and base != LAUNCH:
        xs = [x for _, x in big]
        out.append(f"# {ours}/{base}{mode} out-of-place busbw at {_span([b for b, _ in big])} "
                   f"({len(big)} sizes of the 1M..256M target range): min {min(xs):.2f}x, "
                   f"geomean {geomean(xs):.2f}x, max {max(xs):.2f}x")
    if small:
        ys = [y for _, y in small]
        target = f"; target <= {LAUNCH_TARGET:g}x" if base == LAUNCH else ""
        out.append(f"# {ours}/{base}{mode} out-of-place time at {_span([b for b, _ in small])} "
                   f"({len(small)} sizes of the 8..64K target range): max {max(ys):.2f}x, "
                   f"geomean {geomean(ys):.2f}x, min {min(ys):.2f}x{target}")
    return out


def comparison_table(rows: Sequence[Row], backends: Sequence[str]) -> str:
    """Per-size ratios of the first ringreduce backend against each baseline
    (eager, then graph), and summary lines for every ringreduce/baseline pair."""
    pairs = ratio_pairs(backends)
    if not pairs:
        return ""
    lines = ["# comparison: busbw ratio = ours/baseline (> 1: ringreduce moves more), "
             "time ratio = ours/baseline (< 1: ringreduce is faster)"]
    first = pairs[0][0]
    for graph in (False, True):
        mode = " (graph)" if graph else ""
        for ours, base in pairs:
            oop = ratios(rows, ours, base, False, graph)
            ip = {(b, d, o): (x, y) for b, d, o, x, y in ratios(rows, ours, base, True, graph)}
            if not oop and not ip:
                continue
            if ours == first:
                lines.append(f"# {ours} vs {base}{mode}")
                lines.append("#{:>12} {:>9} {:>6}   {:>12} {:>12}   {:>12} {:>12}".format(
                    "size", "type", "redop", "oop busbw x", "oop time x", "ip busbw x",
                    "ip time x"))
                keys = [(b, d, o) for b, d, o, _, _ in oop] or list(ip)
                oo = {(b, d, o): (x, y) for b, d, o, x, y in oop}
                for k in keys:
                    a, c = oo.get(k), ip.get(k)
                    lines.append(" {:>12} {:>9} {:>6}   {:>12} {:>12}   {:>12} {:>12}".format(
                        k[0], k[1], k[2],
                        f"{a[0]:.2f}" if a and base != LAUNCH else "-",
                        f"{a[1]:.2f}" if a else "-",
                        f"{c[0]:.2f}" if c and base != LAUNCH else "-",
                        f"{c[1]:.2f}" if c else "-"))
            lines.extend(summary_lines(oop, ours, base, graph))
    return "\n".join(lines)


def skipped_lines(skipped_rows: Sequence[Dict[str, Any]]) -> List[str]:
    """One line per backend, mode and reason, naming the sizes it covers."""
    out = []
    for s in skipped_rows:
        mode = "graph" if s["graph"] else "eager"
        out.append(f"# skipped {s['backend']} ({mode}) {s['dtype']} {s['op']} at "
                   f"{_span(s['bytes'])} ({len(s['bytes'])} sizes): {s['reason']}")
    return out


class Progress:
    """A one-line progress bar on stderr (rank 0, terminals only)."""

    def __init__(self, total: int, enabled: bool) -> None:
        self.total = max(total, 1)
        self.done = 0
        self.enabled = enabled and sys.stderr.isatty()

    def step(self, label: str) -> None:
        self.done += 1
        if not self.enabled:
            return
        width = 30
        k = int(width * self.done / self.total)
        sys.stderr.write(f"\r[{'#' * k}{'.' * (width - k)}] {self.done}/{self.total} "
                         f"{label:<40.40}")
        sys.stderr.flush()

    def close(self) -> None:
        if self.enabled:
            sys.stderr.write("\r" + " " * 90 + "\r")
            sys.stderr.flush()
