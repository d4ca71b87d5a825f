"""Output: nccl-tests style tables, the ringreduce-vs-baseline comparison, JSON and the plot."""
from __future__ import annotations

import json
import os
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

from .baselines import is_ringreduce
from .cli import format_size
from .harness import Row, geomean

_HEAD = ("#{:>12} {:>12} {:>9} {:>6}   {:>10} {:>7} {:>7} {:>6}   {:>10} {:>7} {:>7} {:>6}")
_LINE = (" {:>12} {:>12} {:>9} {:>6}   {:>10} {:>7} {:>7} {:>6}   {:>10} {:>7} {:>7} {:>6}")


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


def backend_table(rows: Sequence[Row], backend: str, description: str = "") -> str:
    """One backend's results, one line per (size, dtype, op), out-of-place then in-place."""
    mine = [r for r in rows if r.backend == backend]
    keys: List[Tuple[int, str, str]] = []
    by: Dict[Tuple[int, str, str, bool], Row] = {}
    for r in mine:
        k = (r.bytes, r.dtype, r.op)
        if k not in keys:
            keys.append(k)
        by[k + (r.inplace,)] = r
    out = [f"# backend: {backend}" + (f" -- {description}" if description else ""),
           "#" + " " * 45 + f"{'out-of-place':^33}   {'in-place':^33}",
           _HEAD.format("size", "count", "type", "redop", "time", "algbw", "busbw", "#wrong",
                        "time", "algbw", "busbw", "#wrong"),
           _HEAD.format("(B)", "(elements)", "", "", "(us)", "(GB/s)", "(GB/s)", "",
                        "(us)", "(GB/s)", "(GB/s)", "")]
    for k in keys:
        o, i = by.get(k + (False,)), by.get(k + (True,))
        any_row = o or i
        out.append(_LINE.format(
            k[0], any_row.count, k[1], k[2],
            _time(o.time_us if o else None), _bw(o.algbw if o else None),
            _bw(o.busbw if o else None), _wrong(o.wrong if o else None, o is not None),
            _time(i.time_us if i else None), _bw(i.algbw if i else None),
            _bw(i.busbw if i else None), _wrong(i.wrong if i else None, i is not None)))
    wrong = sum(r.wrong or 0 for r in mine)
    checked = [r for r in mine if r.wrong is not None]
    avg = sum(r.busbw for r in mine if not r.inplace) / max(1, sum(1 for r in mine if not r.inplace))
    out.append(f"# {backend}: out of bounds values : {wrong} "
               f"{'OK' if wrong == 0 else 'FAILED'}" + ("" if checked else " (not checked)"))
    out.append(f"# {backend}: avg bus bandwidth (out-of-place) : {avg:.3f} GB/s")
    return "\n".join(out)


def _index(rows: Iterable[Row]) -> Dict[Tuple[str, int, str, str, bool], Row]:
    return {(r.backend, r.bytes, r.dtype, r.op, r.inplace): r for r in rows}


def ratio_pairs(backends: Sequence[str]) -> List[Tuple[str, str]]:
    """(ringreduce backend, baseline) pairs to compare."""
    ours = [b for b in backends if is_ringreduce(b)]
    theirs = [b for b in backends if not is_ringreduce(b)]
    pairs = [(a, b) for a in ours for b in theirs]
    if not theirs and len(ours) > 1:
        pairs = [(ours[0], b) for b in ours[1:]]
    return pairs


def ratios(rows: Sequence[Row], ours: str, base: str, inplace: bool = False
           ) -> List[Tuple[int, str, str, float, float]]:
    """(bytes, dtype, op, busbw ratio ours/base, time ratio ours/base) per common size.
    The busbw ratio is base time / our time (the same bytes move), so it stays
    defined with one rank where busbw is 0."""
    idx = _index(rows)
    out = []
    for r in rows:
        if r.backend != ours or r.inplace != inplace:
            continue
        b = idx.get((base, r.bytes, r.dtype, r.op, inplace))
        if b is None or r.time_us <= 0 or b.time_us <= 0:
            continue
        out.append((r.bytes, r.dtype, r.op, b.time_us / r.time_us, r.time_us / b.time_us))
    return out


def comparison_table(rows: Sequence[Row], backends: Sequence[str]) -> str:
    pairs = ratio_pairs(backends)
    if not pairs:
        return ""
    lines = ["# comparison: busbw ratio = ours/baseline (> 1: ringreduce moves more), "
             "time ratio = ours/baseline (< 1: ringreduce is faster)"]
    for ours, base in pairs:
        oop = ratios(rows, ours, base, False)
        ip = {(b, d, o): (x, y) for b, d, o, x, y in ratios(rows, ours, base, True)}
        if not oop and not ip:
            continue
        lines.append(f"# {ours} vs {base}")
        lines.append("#{:>12} {:>9} {:>6}   {:>12} {:>12}   {:>12} {:>12}".format(
            "size", "type", "redop", "oop busbw x", "oop time x", "ip busbw x", "ip time x"))
        keys = [(b, d, o) for b, d, o, _, _ in oop] or list(ip)
        oo = {(b, d, o): (x, y) for b, d, o, x, y in oop}
        for k in keys:
            a = oo.get(k)
            c = ip.get(k)
            lines.append(" {:>12} {:>9} {:>6}   {:>12} {:>12}   {:>12} {:>12}".format(
                k[0], k[1], k[2],
                f"{a[0]:.2f}" if a else "-", f"{a[1]:.2f}" if a else "-",
                f"{c[0]:.2f}" if c else "-", f"{c[1]:.2f}" if c else "-"))
        lines.extend(summary_lines(oop, ours, base))
    return "\n".join(lines)


def summary_lines(oop: Sequence[Tuple[int, str, str, float, float]], ours: str, base: str
                  ) -> List[str]:
    """The issue's targets: busbw 1 MiB..256 MiB, and latency 8 B..64 KiB."""
    big = [x for b, _, _, x, _ in oop if (1 << 20) <= b <= (256 << 20)]
    small = [y for b, _, _, _, y in oop if 8 <= b <= (64 << 10)]
    out = []
    if big:
        out.append(f"# {ours}/{base} out-of-place busbw, 1 MiB..256 MiB: min {min(big):.2f}x, "
                   f"geomean {geomean(big):.2f}x, max {max(big):.2f}x ({len(big)} sizes)")
    if small:
        out.append(f"# {ours}/{base} out-of-place time, 8 B..64 KiB: max {max(small):.2f}x, "
                   f"geomean {geomean(small):.2f}x, min {min(small):.2f}x ({len(small)} sizes)")
    return out


def write_json(path: str, machine: Dict[str, Any], command: str, world_size: int,
               rows: Sequence[Row], extra: Optional[Dict[str, Any]] = None) -> None:
    doc: Dict[str, Any] = {"machine": machine, "command": command, "world_size": world_size,
                           "results": [r.as_dict() for r in rows]}
    if extra:
        for k, v in extra.items():
            doc.setdefault(k, v)
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")
    os.replace(tmp, path)


def load_json(path: str) -> Dict[str, Any]:
    with open(path) as f:
        return json.load(f)


def plot_title(machine: Dict[str, Any], world_size: int, device: str) -> str:
    gpus = machine.get("gpus") or []
    where = (f"{len(gpus)}x {gpus[0]}" if device == "cuda" and gpus else
             f"{machine.get('cpu', '?')}, {machine.get('cores', '?')} cores")
    cores = machine.get("cores")
    over = (", oversubscribed" if device == "cpu" and isinstance(cores, int)
            and world_size > cores else "")
    return (f"all-reduce bus bandwidth - {machine.get('host', '?')} ({where}), "
            f"{world_size} ranks{over}")


def plot(path: str, rows: Sequence[Row], title: str, note: str = "") -> None:
    """busbw against size (log2 x) and time against size (log-log), one line
    per backend (and per dtype/op when several); in-place dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    combos = sorted({(r.dtype, r.op) for r in rows})
    backends = list(dict.fromkeys(r.backend for r in rows))
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(14, 5.8))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    styles = ["-", "-.", ":", (0, (5, 1))]
    for bi, b in enumerate(backends):
        for ci, (dt, op) in enumerate(combos):
            for inplace in (False, True):
                sel = sorted((r for r in rows if r.backend == b and r.dtype == dt and r.op == op
                              and r.inplace == inplace and r.bytes > 0), key=lambda r: r.bytes)
                if not sel:
                    continue
                label = b + (f" {dt} {op}" if len(combos) > 1 else "") + \
                    (" (in-place)" if inplace else "")
                kw = dict(color=colors[bi % len(colors)], marker="o" if not inplace else None,
                          markersize=3.5, linewidth=1.8 if not inplace else 1.0,
                          linestyle="--" if inplace else styles[ci % len(styles)],
                          alpha=1.0 if not inplace else 0.6, label=label)
                xs = [r.bytes for r in sel]
                ax1.plot(xs, [r.busbw for r in sel], **kw)
                ax2.plot(xs, [r.time_us for r in sel], **kw)
    fmt = FuncFormatter(lambda v, _: format_size(int(v)) if v >= 1 else "")
    for ax in (ax1, ax2):
        ax.set_xscale("log", base=2)
        ax.xaxis.set_major_formatter(fmt)
        ax.set_xlabel("message size (bytes)")
        ax.grid(True, which="major", alpha=0.35)
        for lbl in ax.get_xticklabels():
            lbl.set_rotation(45)
    ax1.set_ylabel("busbw (GB/s)")
    ax1.set_title("bus bandwidth (higher is better)")
    ax1.set_ylim(bottom=0)
    ax2.set_yscale("log")
    ax2.set_ylabel("time (us)")
    ax2.set_title("time per all-reduce (lower is better)")
    ax1.legend(fontsize=8, loc="upper left")
    fig.suptitle(title, fontsize=11)
    if note:
        fig.text(0.5, 0.005, note, ha="center", va="bottom", fontsize=8, color="0.35")
    fig.tight_layout(rect=(0, 0.03, 1, 0.95))
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def rows_from_json(doc: Dict[str, Any]) -> List[Row]:
    return [Row(backend=r["backend"], bytes=int(r["bytes"]), count=int(r["count"]),
                dtype=r["dtype"], op=r["op"], inplace=bool(r["inplace"]),
                time_us=float(r["time_us"]), algbw=float(r["algbw"]), busbw=float(r["busbw"]),
                wrong=r["wrong"], iters=int(r.get("iters", 0))) for r in doc["results"]]

