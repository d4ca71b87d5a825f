"""What ringreduce's call checks cost on host buffers, side by side in one run:

    no_fingerprint   RINGREDUCE_FINGERPRINT=0: no in-band fingerprint (measuring only)
    fingerprint      the default: every message carries its call's fingerprint
    strict           check=True (RINGREDUCE_CHECK=1): an extra agreement exchange
                     before data moves, on top of the fingerprint

Settings are read when a communicator is created, so each variant has its own
communicator. Every round times one call of each variant, in a rotating
order, each after a barrier; a variant's time is the slowest rank's median.
Sizes 8 B to 64 MiB; float32 NumPy arrays, op max (values stay finite).
The cost is shown in microseconds, and as a percentage from 64 KiB up.

    mpirun -np 4 python benchmarks/check_cost.py --json benchmarks/results/check-cost-cpu-4rank.json
"""
import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from mpi4py import MPI

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import ringreduce as rr  # noqa: E402
from ringreduce.bench.machine import command_line, describe  # noqa: E402

SIZES = [8, 64, 512, 4 << 10, 32 << 10, 64 << 10, 256 << 10, 1 << 20, 4 << 20, 16 << 20,
         64 << 20]
PCT_FROM = 64 << 10
VARIANTS = ("no_fingerprint", "fingerprint", "strict")


def communicators():
    old = os.environ.get("RINGREDUCE_FINGERPRINT")
    os.environ["RINGREDUCE_FINGERPRINT"] = "0"
    try:
        off = rr.new_communicator("mpi")
    finally:
        if old is None:
            del os.environ["RINGREDUCE_FINGERPRINT"]
        else:
            os.environ["RINGREDUCE_FINGERPRINT"] = old
    return {"no_fingerprint": off, "fingerprint": rr.new_communicator("mpi"),
            "strict": rr.new_communicator("mpi", check=True)}


def measure(comms, nbytes, budget, max_rounds, min_rounds):
    """{variant: slowest rank's median seconds} for one size."""
    world = MPI.COMM_WORLD
    x = np.ones(max(nbytes // 4, 1), np.float32)
    first = 0.0
    for name in VARIANTS:                       # warm-up; the first call sizes the rounds
        world.Barrier()
        t0 = time.perf_counter()
        comms[name].allreduce(x, "max")
        first = max(first, time.perf_counter() - t0)
    first = world.allreduce(first, op=MPI.MAX)
    rounds = max(min_rounds, min(max_rounds, int(budget / (3 * first))))
    times = {k: [] for k in VARIANTS}
    for i in range(rounds):
        for j in range(len(VARIANTS)):
            name = VARIANTS[(i + j) % len(VARIANTS)]   # rotate: no variant always goes first
            world.Barrier()
            t0 = time.perf_counter()
            comms[name].allreduce(x, "max")
            times[name].append(time.perf_counter() - t0)
    return {k: world.allreduce(statistics.median(v), op=MPI.MAX) for k, v in times.items()}, rounds


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", help="write the results here (rank 0)")
    ap.add_argument("--budget", type=float, default=0.6,
                    help="seconds of timed rounds per size (default 0.6)")
    ap.add_argument("--max-rounds", type=int, default=300)
    ap.add_argument("--min-rounds", type=int, default=5)
    args = ap.parse_args()
    world = MPI.COMM_WORLD
    comms = communicators()
    rows = []
    for nbytes in SIZES:
        t, rounds = measure(comms, nbytes, args.budget, args.max_rounds, args.min_rounds)
        base, fp, strict = t["no_fingerprint"], t["fingerprint"], t["strict"]
        rows.append({"bytes": nbytes, "rounds": rounds,
                     **{f"{k}_us": v * 1e6 for k, v in t.items()},
                     "fingerprint_cost_us": (fp - base) * 1e6,
                     "fingerprint_cost_pct": (fp - base) / base * 100,
                     "strict_cost_us": (strict - fp) * 1e6,
                     "strict_cost_pct": (strict - fp) / fp * 100})
    if world.rank == 0:
        report(rows, world.size, args.json)
    for c in comms.values():
        c.finalize()


def report(rows, nranks, path):
    print(f"# call checks on {nranks} ranks, float32 max, host buffers; cost of the fingerprint "
          f"= fingerprint - no_fingerprint, of strict = strict - fingerprint")
    print(f"{'bytes':>10} {'rounds':>6} {'no-fp us':>10} {'fp us':>10} {'strict us':>10}   "
          f"{'fp cost':>18} {'strict cost':>18}")

    def cost(r, k):
        us = f"{r[k + '_us']:+.1f} us"
        return us + (f" {r[k + '_pct']:+.1f}%" if r["bytes"] >= PCT_FROM else "")
    for r in rows:
        print(f"{r['bytes']:>10} {r['rounds']:>6} {r['no_fingerprint_us']:>10.1f} "
              f"{r['fingerprint_us']:>10.1f} {r['strict_us']:>10.1f}   "
              f"{cost(r, 'fingerprint_cost'):>18} {cost(r, 'strict_cost'):>18}")
    small = rows[0]
    big = [r for r in rows if r["bytes"] >= PCT_FROM]
    summary = {
        "fingerprint_at_8B_us": small["fingerprint_cost_us"],
        "strict_at_8B_us": small["strict_cost_us"],
        "fingerprint_from_64K_pct": {"max": max(r["fingerprint_cost_pct"] for r in big),
                                     "median": statistics.median(r["fingerprint_cost_pct"]
                                                                 for r in big)},
        "strict_from_64K_pct": {"max": max(r["strict_cost_pct"] for r in big),
                                "median": statistics.median(r["strict_cost_pct"] for r in big)}}
    print(f"# fingerprint: {summary['fingerprint_at_8B_us']:+.1f} us at 8 B; from 64 KiB up "
          f"median {summary['fingerprint_from_64K_pct']['median']:+.1f}%, max "
          f"{summary['fingerprint_from_64K_pct']['max']:+.1f}%")
    print(f"# strict check: {summary['strict_at_8B_us']:+.1f} us at 8 B; from 64 KiB up median "
          f"{summary['strict_from_64K_pct']['median']:+.1f}%, max "
          f"{summary['strict_from_64K_pct']['max']:+.1f}%")
    if path:
        doc = {"machine": describe(), "command": command_line("mpirun", nranks),
               "world_size": nranks, "variants": {
                   "no_fingerprint": "RINGREDUCE_FINGERPRINT=0 at creation",
                   "fingerprint": "defaults (in-band fingerprint on)",
                   "strict": "check=True (RINGREDUCE_CHECK), fingerprint on"},
               "how": __doc__.strip().split("\n\n")[1], "results": rows, "summary": summary}
        d = os.path.dirname(os.path.abspath(path))
        os.makedirs(d, exist_ok=True)
        with open(path, "w") as f:
            json.dump(doc, f, indent=1)
            f.write("\n")
        print(f"# wrote {path}")


if __name__ == "__main__":
    main()
