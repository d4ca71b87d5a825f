"""Run torch's distributed test suite on "ringreduce" and on gloo, at 2 and
3 ranks, on CPU, and write the counts:

    .venv/bin/python tests/torch_suite/run.py [--world-sizes 2,3]
        [--backends gloo,ringreduce] [-k EXPR | --tests NAME,NAME] [--jobs N]
        [--json benchmarks/results/torch-suite-cpu.json] [--reuse gloo]

Each (backend, world size) is one pytest run of tests/torch_suite/suite.py
(junit XML under out/torch-suite/). The JSON holds, per run, the counts
(passed, failed, skipped) and the names of the tests that failed, and per
world size the tests that pass on gloo and not on ringreduce. CUDA is
hidden (CUDA_VISIBLE_DEVICES=""), so on a GPU machine the CPU suite runs,
as on one without.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Dict, List

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent


def skip_reasons(junit: Path) -> Dict[str, str]:
    """test name -> why it skipped (the suite's own message)."""
    out: Dict[str, str] = {}
    for case in ET.parse(junit).getroot().iter("testcase"):
        for child in case:
            if child.tag == "skipped":
                out[case.get("name", "?")] = (child.get("message") or "").strip()[:200]
    return out


def name_gated(reason: str) -> bool:
    """A skip the suite decides by the backend's name: its decorators run
    the test only for gloo (or nccl, mpi), whatever a plug-in declares."""
    low = reason.lower()
    return ("test requires backend" in low and "to be one of" in low) or \
        low.startswith("only gloo") or low.startswith("gloo ") or "only supported on" in low


def outcomes(junit: Path) -> Dict[str, str]:
    """test name -> passed / failed / skipped, from pytest's junit XML."""
    got: Dict[str, str] = {}
    for case in ET.parse(junit).getroot().iter("testcase"):
        kinds = {child.tag for child in case}
        state = ("failed" if kinds & {"failure", "error"} else
                 "skipped" if "skipped" in kinds else "passed")
        name = case.get("name", "?")
        # A setup/teardown error adds a second entry for a case: the worse one wins.
        if got.get(name) != "failed":
            got[name] = state
    return got


def run_one(backend: str, world: int, args: argparse.Namespace, outdir: Path) -> Dict:
    junit = outdir / f"{backend}-{world}.xml"
    if backend in args.reuse.split(","):
        # An earlier run of this command, kept: gloo's results do not depend on ringreduce.
        meta = json.loads((outdir / f"{backend}-{world}.json").read_text())
        got = outcomes(junit)
        print(f"{backend:>10} world {world}: {meta['counts']} (kept from {meta['date']})", flush=True)
        return dict(meta, outcomes=got, junit=str(junit))
    env = dict(os.environ, BACKEND=backend, WORLD_SIZE=str(world), CUDA_VISIBLE_DEVICES="",
               PYTORCH_PRINT_REPRO_ON_FAILURE="0",
               PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH"))
                                          if p))
    for k in ("OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "PMI_RANK", "PMI_SIZE", "RANK",
              "LOCAL_RANK", "MASTER_PORT"):
        env.pop(k, None)  # no launcher: the suite gives every rank its rank and size
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(HERE / "suite.py"),
           f"--junitxml={junit}", "-o", "junit_family=xunit1", f"--timeout={args.timeout}"]
    if args.k:
        cmd += ["-k", args.k]
    if args.tests:  # exact names, as node ids
        cmd = [c for c in cmd if c != str(HERE / "suite.py")]
        cmd += [f"{HERE / 'suite.py'}::TestDistBackendWithSpawn::{t}" for t in args.tests.split(",")]
    if args.jobs > 1:
        cmd += ["-n", str(args.jobs)]
    t0 = time.time()
    log = outdir / f"{backend}-{world}.log"
    with open(log, "w") as f:
        rc = subprocess.call(cmd, cwd=HERE, env=env, stdout=f, stderr=subprocess.STDOUT)
    seconds = time.time() - t0
    got = outcomes(junit) if junit.exists() else {}
    counts = {s: sum(1 for v in got.values() if v == s) for s in ("passed", "failed", "skipped")}
    print(f"{backend:>10} world {world}: {counts} in {seconds:.0f} s (pytest rc {rc})", flush=True)
    meta = {"backend": backend, "world_size": world, "counts": counts, "seconds": round(seconds),
            "pytest_rc": rc, "date": time.strftime("%Y-%m-%d %H:%M")}
    (outdir / f"{backend}-{world}.json").write_text(json.dumps(meta) + "\n")
    return dict(meta, outcomes=got, junit=str(junit))


def main(argv: List[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--world-sizes", default="2,3")
    ap.add_argument("--backends", default="gloo,ringreduce")
    ap.add_argument("-k", default=None, help="pytest -k expression (a subset)")
    ap.add_argument("--tests", default=None, help="comma-separated test names (a subset)")
    ap.add_argument("--jobs", type=int, default=1, help="pytest-xdist workers")
    ap.add_argument("--timeout", type=int, default=400, help="seconds per test")
    ap.add_argument("--json", default=None, help="where the counts go")
    ap.add_argument("--reuse", default="", help="backends whose earlier results in --out-dir "
                    "are kept instead of run again (e.g. gloo)")
    ap.add_argument("--out-dir", default=str(ROOT / "out" / "torch-suite"))
    args = ap.parse_args(argv)
    outdir = Path(args.out_dir)
    outdir.mkdir(parents=True, exist_ok=True)
    import torch

    runs = [run_one(b, int(w), args, outdir) for w in args.world_sizes.split(",")
            for b in args.backends.split(",")]
    gaps, gated = {}, {}
    for w in sorted({r["world_size"] for r in runs}):
        by = {r["backend"]: r["outcomes"] for r in runs if r["world_size"] == w}
        if "gloo" in by and "ringreduce" in by:
            why = skip_reasons(Path(next(r["junit"] for r in runs if r["world_size"] == w and
                                         r["backend"] == "ringreduce")))
            missing = [t for t, s in by["gloo"].items()
                       if s == "passed" and by["ringreduce"].get(t) != "passed"]
            # Skipped on ringreduce only because the suite runs them for gloo by name.
            gated[str(w)] = {t: why[t] for t in sorted(missing)
                             if by["ringreduce"].get(t) == "skipped" and name_gated(why.get(t, ""))}
            gaps[str(w)] = sorted(t for t in missing if t not in gated[str(w)])
    report = {
        "what": "torch.testing._internal.distributed.distributed_test on CPU, spawned ranks, "
                "file:// init, ringreduce registered as a plug-in backend (plugin, subgroup, ddp)",
        "command": " ".join([Path(sys.executable).name, "tests/torch_suite/run.py"] +
                            (argv if argv is not None else sys.argv[1:])),
        "machine": {"host": platform.node(), "cpus": os.cpu_count(), "python": platform.python_version(),
                    "torch": torch.__version__},
        "date": time.strftime("%Y-%m-%d"),
        "runs": [{k: v for k, v in r.items() if k not in ("outcomes", "junit")} |
                 {"failed": sorted(t for t, s in r["outcomes"].items() if s == "failed")}
                 for r in runs],
        "pass_on_gloo_not_on_ringreduce": gaps,
        "gloo_only_by_name": gated,
    }
    for w, names in gaps.items():
        print(f"world {w}: {len(names)} pass on gloo and not on ringreduce"
              + (": " + ", ".join(names) if names else "")
              + f"; {len(gated[w])} more run for gloo only, by name")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1) + "\n")
    return 0 if not any(gaps.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
