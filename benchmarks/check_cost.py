"""Cost of the agreement check (RINGREDUCE_CHECK) and of the NaN/Inf check
(RINGREDUCE_NAN_CHECK) on host buffers, measured side by side in one run.

    mpirun -np 4 python benchmarks/check_cost.py --json benchmarks/results/check-cost-cpu.json
"""
import argparse
import json
import platform
import statistics
import time

import numpy as np
from mpi4py import MPI

import ringreduce as rr


def timed(comm, x, iters):
    world = MPI.COMM_WORLD
    for _ in range(3):
        comm.allreduce(x, "max")  # max keeps the values finite across iterations
    ts = []
    for _ in range(iters):
        world.Barrier()
        t0 = time.perf_counter()
        comm.allreduce(x, "max")  # max keeps the values finite across iterations
        ts.append(time.perf_counter() - t0)
    return world.allreduce(statistics.median(ts), op=MPI.MAX)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--json")
    ap.add_argument("--iters", type=int, default=50)
    args = ap.parse_args()
    variants = {
        "plain": rr.new_communicator("mpi"),
        "check": rr.new_communicator("mpi", check=True),
        "nan_check": rr.new_communicator("mpi", nan_check=True),
    }
    rows = []
    for nbytes in (8, 1024, 64 << 10, 1 << 20, 16 << 20, 64 << 20):
        x = np.ones(nbytes // 4, np.float32)
        iters = args.iters if nbytes <= (1 << 20) else max(5, args.iters // 5)
        t = {k: timed(c, x, iters) for k, c in variants.items()}
        rows.append({"bytes": nbytes, **{f"{k}_us": v * 1e6 for k, v in t.items()},
                     "check_ratio": t["check"] / t["plain"], "nan_check_ratio": t["nan_check"] / t["plain"]})
    if MPI.COMM_WORLD.rank == 0:
        print(f"{'bytes':>10} {'plain us':>10} {'check us':>10} {'nan us':>10} {'check x':>8} {'nan x':>8}")
        for r in rows:
            print(f"{r['bytes']:>10} {r['plain_us']:>10.1f} {r['check_us']:>10.1f} {r['nan_check_us']:>10.1f} "
                  f"{r['check_ratio']:>8.2f} {r['nan_check_ratio']:>8.2f}")
        if args.json:
            with open(args.json, "w") as f:
                json.dump({"machine": {"host": platform.node(), "cpu": platform.processor() or platform.machine(),
                                       "mpi": MPI.Get_library_version().splitlines()[0]},
                           "command": "mpirun -np %d python benchmarks/check_cost.py" % MPI.COMM_WORLD.size,
                           "world_size": MPI.COMM_WORLD.size, "results": rows}, f, indent=1)
    for c in variants.values():
        c.finalize()


if __name__ == "__main__":
    main()
