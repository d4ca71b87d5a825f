"""The performance targets, checked on result files: one table of the ratios
the targets need, per world size and ringreduce row.

    python -m ringreduce.bench.targets out/cpu-4rank-16core.json out/cpu-8rank-16core.json ...

Host targets (out-of-place eager rows, every size of the range that ran):
time <= 1.0x MPI_Allreduce's from 8 B to 64 KiB, busbw >= 1.0x MPI's from
1 MiB to 256 MiB, and busbw >= 2x gloo's over the same range. Device rows
are compared with native NCCL the same way, and with one kernel launch
(time <= 1.3x) from 8 B to 64 KiB.
"""
from __future__ import annotations

import sys
from typing import List, Optional, Sequence, Tuple

from .report import BUSBW_RANGE, LATENCY_RANGE, ratios
from .rows import Row, geomean, load_json, rows_from_json

# (baseline, what, range, target, "time" or "busbw")
HOST = (("mpi", "time vs mpi", LATENCY_RANGE, 1.0, "time"),
        ("mpi", "busbw vs mpi", BUSBW_RANGE, 1.0, "busbw"),
        ("gloo", "busbw vs gloo", BUSBW_RANGE, 2.0, "busbw"))
DEVICE = (("nccl", "time vs nccl", LATENCY_RANGE, 1.0, "time"),
          ("nccl", "busbw vs nccl", BUSBW_RANGE, 1.0, "busbw"),
          ("launch", "time vs launch", LATENCY_RANGE, 1.3, "time"))


def check(rows: Sequence[Row], ours: str, base: str, span: Tuple[int, int], target: float,
          kind: str) -> Optional[Tuple[float, float, int, bool]]:
    """(worst ratio, geomean, sizes, met) over the sizes of span that both ran,
    or None when none did. time: ours/base, worst = max, met when <= target;
    busbw: ours/base, worst = min, met when >= target."""
    got = [(b, x, y) for b, _, _, x, y in ratios(rows, ours, base)
           if span[0] <= b <= span[1]]
    if not got:
        return None
    vals = [y if kind == "time" else x for _, x, y in got]
    worst = max(vals) if kind == "time" else min(vals)
    met = worst <= target if kind == "time" else worst >= target
    return worst, geomean(vals), len(vals), met


def table(paths: Sequence[str]) -> str:
    docs = [(p, load_json(p)) for p in paths]
    docs.sort(key=lambda d: d[1]["world_size"])
    lines: List[str] = []
    for path, doc in docs:
        rows = [r for r in rows_from_json(doc) if not r.graph and r.dtype == "float32"
                and r.op == "sum"]
        device = doc.get("device", "cpu")
        checks = DEVICE if device == "cuda" else HOST
        ours = [b for b in dict.fromkeys(r.backend for r in rows) if b.startswith("ringreduce")]
        head = f"# N={doc['world_size']}, {device}, {doc['machine'].get('cores')} cores: {path}"
        lines.append(head)
        lines.append("#{:>22} ".format("row") + "".join(
            f" {what + ' (' + ('<=' if kind == 'time' else '>=') + f'{t:g}x)':>28}"
            for _, what, _, t, kind in checks))
        for o in ours:
            cells = []
            for base, _, span, target, kind in checks:
                c = check(rows, o, base, span, target, kind)
                if c is None:
                    cells.append(f" {'-':>28}")
                else:
                    worst, gm, n, met = c
                    cell = f"{worst:.2f} (geo {gm:.2f}, {n}) " + ("ok" if met else "MISS")
                    cells.append(f" {cell:>28}")
            lines.append(" {:>22} ".format(o) + "".join(cells))
        lines.append("")
    lines.append("# each cell: the worst size's ratio (max for time, min for busbw), the geometric "
                 "mean and the number of sizes, then whether the worst size meets the target")
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    paths = list(sys.argv[1:] if argv is None else argv)
    if not paths:
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    print(table(paths))
    return 0


if __name__ == "__main__":
    sys.exit(main())
