"""Fill the tables of docs/ps-vs-ring.md from cpu_scaling.sh's JSON files:
measured times of the ring, the parameter server and the sharded parameter
server at every world size in the files, the cost models fitted to them, and
the models' projection to thousands of ranks.

    python benchmarks/ps_vs_ring.py benchmarks/results/cpu-*rank-16core.json
    python benchmarks/ps_vs_ring.py --print out/cpu-*rank-16core.json    (print, write nothing)

Each table sits between <!-- ps_vs_ring:NAME --> and <!-- /ps_vs_ring:NAME -->
in the page; everything outside the markers is left as it is.
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ringreduce.bench.cli import format_size  # noqa: E402
from ringreduce.bench.fit import (MODELS, Fit, busbw_of, fit_points, human_bytes,  # noqa: E402
                                  human_time, measured_gamma, predict, select)
from ringreduce.bench.rows import load_json  # noqa: E402

PAGE = Path(__file__).resolve().parent.parent / "docs" / "ps-vs-ring.md"
SHOWN_SIZES = (8, 64 << 10, 1 << 20, 16 << 20, 256 << 20)
PROJECT_N = (16, 64, 256, 1024, 4096)
PROJECT_BYTES = (1 << 20, 64 << 20, 1 << 30)
LINK_GBPS = 25.0
LABELS = {"ring": "ring", "ps": "parameter server", "sharded-ps": "sharded PS"}


def _backend(model: str, names: Sequence[str]) -> Optional[str]:
    return next((b for b in MODELS[model].backends if b in names), None)


def measured(docs: Sequence[Dict]) -> str:
    """One line per (N, size): each algorithm's time, and the servers' time over the ring's."""
    names = {r["backend"] for d in docs for r in d["results"]}
    cols = {m: _backend(m, names) for m in MODELS}
    if not any(cols.values()):
        return "_No ring or parameter-server rows in the given files yet._"
    t: Dict[Tuple[str, int, int], float] = {}
    for d in docs:
        for r in d["results"]:
            if not r["inplace"] and not r.get("graph") and r["dtype"] == "float32" \
                    and r["op"] == "sum" and not r.get("wrong"):
                t[(r["backend"], d["world_size"], r["bytes"])] = r["time_us"] * 1e-6
    out = ["| N | size (B) | ring | parameter server | sharded PS | PS / ring | sharded / ring |",
           "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for n in sorted({d["world_size"] for d in docs}):
        for nb in SHOWN_SIZES:
            vals = {m: t.get((b, n, nb)) if b else None for m, b in cols.items()}
            if not any(vals.values()):
                continue
            ring = vals["ring"]
            cells = [human_time(v) if v else "-" for v in vals.values()]
            rel = [f"{vals[m] / ring:.2f}x" if ring and vals[m] else "-"
                   for m in ("ps", "sharded-ps")]
            out.append(f"| {n} | {format_size(nb)} | " + " | ".join(cells + rel) + " |")
    missing = [LABELS[m] for m, b in cols.items() if b is None]
    if missing:
        out.append("")
        out.append(f"_Not in these files: {', '.join(missing)} (the rows "
                   f"{', '.join(MODELS[m].backends[0] for m, b in cols.items() if b is None)})._")
    return "\n".join(out)


def fits(docs: Sequence[Dict]) -> Dict[str, Fit]:
    gamma, source = measured_gamma(docs, None)
    out = {}
    for m in MODELS:
        try:
            pts, _, _, _ = select(docs, None, "float32", m)
            out[m] = fit_points(pts, gamma, source, m)
        except ValueError:
            continue
    return out


def fitted(docs: Sequence[Dict], f: Dict[str, Fit]) -> str:
    if not f:
        return "_Nothing to fit yet._"
    names = {r["backend"] for d in docs for r in d["results"]}
    out = ["| model | rows | N | alpha per step | effective rate of V | rms error | worst |",
           "| --- | --- | --- | ---: | ---: | ---: | ---: |"]
    world = ", ".join(str(n) for n in sorted({d["world_size"] for d in docs}))
    for m, fit in f.items():
        rate = 1 / fit.delta / 1e9 if fit.delta > 0 else float("inf")
        out.append(f"| {LABELS[m]} | `{_backend(m, names)}` | {world} | "
                   f"{fit.alpha * 1e6:.2f} us | {rate:.2f} GB/s | {fit.rms_rel * 100:.0f}% | "
                   f"{fit.worst_rel * 100:.0f}% at N={fit.worst_at[0]}, "
                   f"{format_size(fit.worst_at[1])} B |")
    return "\n".join(out)


def projection(f: Dict[str, Fit]) -> str:
    if not f:
        return "_Nothing to project yet._"
    order = [m for m in MODELS if m in f]
    head = "| N | size (B) | " + " | ".join(f"{LABELS[m]} time" for m in order) + \
        " | " + " | ".join(f"{LABELS[m]} busbw" for m in order) + \
        " | busiest link: ring | busiest link: PS server |"
    out = [head, "| ---: | ---: | " + " | ".join("---:" for _ in range(2 * len(order) + 2)) + " |"]
    for n in PROJECT_N:
        for nb in PROJECT_BYTES:
            ts = {m: predict(f[m], n, nb, LINK_GBPS) for m in order}
            out.append(f"| {n} | {format_size(nb)} | "
                       + " | ".join(human_time(ts[m]) for m in order) + " | "
                       + " | ".join(f"{busbw_of(n, nb, ts[m]):.2f} GB/s" for m in order) + " | "
                       + f"{human_bytes(MODELS['ring'].link(n, nb))} | "
                       + f"{human_bytes(MODELS['ps'].link(n, nb))} |")
    return "\n".join(out)


def sources(paths: Sequence[str], docs: Sequence[Dict]) -> str:
    out = []
    for p, d in zip(paths, docs):
        m = d.get("machine", {})
        out.append(f"- `{p}`: {d['world_size']} ranks, {m.get('cpu', '?')}, "
                   f"{m.get('cores', '?')} cores, {d.get('date', '?')}")
    return "\n".join(out)


def fill(page: str, tables: Dict[str, str]) -> str:
    for name, body in tables.items():
        pat = re.compile(rf"(<!-- ps_vs_ring:{name} -->\n).*?(\n<!-- /ps_vs_ring:{name} -->)",
                         re.DOTALL)
        if not pat.search(page):
            raise SystemExit(f"{PAGE}: no <!-- ps_vs_ring:{name} --> ... markers")
        page = pat.sub(lambda m: m.group(1) + body + m.group(2), page)
    return page


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("files", nargs="+", help="ringreduce-bench JSON results (cpu_scaling.sh)")
    ap.add_argument("--print", action="store_true", help="print the tables, write nothing")
    ap.add_argument("--page", default=str(PAGE), help="the page to fill (default %(default)s)")
    args = ap.parse_args(argv)
    pairs = sorted(((p, load_json(p)) for p in args.files), key=lambda x: x[1]["world_size"])
    paths, docs = [p for p, _ in pairs], [d for _, d in pairs]
    f = fits(docs)
    tables = {"sources": sources(paths, docs), "measured": measured(docs),
              "fit": fitted(docs, f), "projection": projection(f)}
    if args.print:
        for name, body in tables.items():
            print(f"## {name}\n{body}\n")
        return 0
    page = Path(args.page)
    page.write_text(fill(page.read_text(), tables))
    print(f"filled {page} from {len(docs)} files")
    return 0


if __name__ == "__main__":
    sys.exit(main())
