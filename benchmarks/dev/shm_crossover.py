"""Where the shared-memory one-shot stops paying: blocking float32 sum
all-reduces through the latency path, with the algorithm forced through the
policy (what RINGREDUCE_ALGO sets), beside mpi4py's MPI_Allreduce, in one run.
Each cell is the slowest rank's median over 5 repeats of `iters` calls.

  mpirun -np N python3 benchmarks/dev/shm_crossover.py [--json PATH]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

import numpy as np
from mpi4py import MPI

import ringreduce as rr

ALGOS = ["auto", "shm_one_shot", "shm_two_shot", "recursive_doubling"]
SIZES = [8 << k for k in range(16)]  # 8 B .. 256 KiB


def timed(world, fn, iters):
    for _ in range(max(3, iters // 10)):
        fn()
    reps = []
    for _ in range(5):
        world.Barrier()
        t = time.perf_counter()
        for _ in range(iters):
            fn()
        reps.append((time.perf_counter() - t) / iters)
    return world.allreduce(float(np.median(reps)), op=MPI.MAX) * 1e6


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--json")
    args = ap.parse_args()
    world = MPI.COMM_WORLD
    comm = rr.init()
    rows = []
    for size in SIZES:
        x = np.ones(size // 4, np.float32)
        out = np.empty_like(x)
        iters = 2000 if size <= 4096 else 400 if size <= 65536 else 100
        row = {"bytes": size, "mpi": timed(world, lambda: world.Allreduce(x, out), iters)}
        for algo in ALGOS:
            p = comm._impl.options.policy
            p.forced = "" if algo == "auto" else algo
            comm._impl.set_policy(p)
            row[algo] = timed(world, lambda: comm.allreduce(x, out=out), iters)
            if algo == "auto":
                row["auto_algo"] = comm.explain("allreduce", x)[0]
        rows.append(row)
        if world.rank == 0:
            print(f"{size:>8} B  mpi {row['mpi']:8.2f}  " + "  ".join(
                f"{a} {row[a]:8.2f}" for a in ALGOS) + f"  (auto: {row['auto_algo']})", flush=True)
    if world.rank == 0 and args.json:
        with open(args.json, "w") as f:
            json.dump({"ranks": world.size, "unit": "us", "rows": rows,
                       "what": __doc__.strip().splitlines()[0],
                       "command": " ".join([f"mpirun -np {world.size}", sys.executable] + sys.argv),
                       "machine": {"host": platform.node(), "cpu": platform.processor(),
                                   "cores": os.cpu_count(), "python": platform.python_version(),
                                   "mpi": MPI.Get_library_version().splitlines()[0],
                                   "date": time.strftime("%Y-%m-%d")}}, f, indent=1)
    comm.finalize()


if __name__ == "__main__":
    main()
