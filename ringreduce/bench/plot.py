"""The two-panel plot: busbw against size, and time against size."""
from __future__ import annotations

import os
from typing import Any, Dict, Sequence

from .cli import format_size
from .rows import Row


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
    """busbw against size (log2 x) and time against size (log-log), one colour
    per backend (and a line style per dtype/op when several); in-place dashed;
    graph replays with square markers. The launch row has no busbw."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    combos = sorted({(r.dtype, r.op) for r in rows})
    series = list(dict.fromkeys((r.backend, r.graph) for r in rows))
    names = list(dict.fromkeys(b for b, _ in series))
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(14, 5.8))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    styles = ["-", "-.", ":", (0, (5, 1))]
    for b, graph in series:
        bi = names.index(b)
        for ci, (dt, op) in enumerate(combos):
            for inplace in (False, True):
                sel = sorted((r for r in rows if r.backend == b and r.graph == graph
                              and r.dtype == dt and r.op == op and r.inplace == inplace
                              and r.bytes > 0), key=lambda r: r.bytes)
                if not sel:
                    continue
                label = b + (" graph" if graph else "") + \
                    (f" {dt} {op}" if len(combos) > 1 else "") + (" (in-place)" if inplace else "")
                kw = dict(color=colors[bi % len(colors)],
                          marker=None if inplace else ("s" if graph else "o"),
                          markersize=3.5, linewidth=1.8 if not inplace else 1.0,
                          linestyle="--" if inplace else styles[ci % len(styles)],
                          alpha=1.0 if not inplace else 0.6, label=label)
                xs = [r.bytes for r in sel]
                if b != "launch":
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
    ax1.legend(fontsize=7, loc="upper left")
    if "launch" in names:  # only in the time panel: say which line it is there
        ax2.legend(fontsize=7, loc="upper left")
    fig.suptitle(title, fontsize=11)
    if note:
        fig.text(0.5, 0.005, note, ha="center", va="bottom", fontsize=8, color="0.35")
    fig.tight_layout(rect=(0, 0.03, 1, 0.95))
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
