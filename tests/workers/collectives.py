"""Runs every collective over counts x dtypes x ops x in/out-of-place on this
launch's ranks and prints one RESULT line with the failures."""
import json
import sys

import numpy as np
from mpi4py import MPI

import ringreduce as rr
from common import DTYPES, OPS, point_to_point_checks, digest, make_input, reference, to_array, to_float64, tolerance

kind = sys.argv[1] if len(sys.argv) > 1 else "numpy"
chunk = int(sys.argv[2]) if len(sys.argv) > 2 else None
comm = rr.init(timeout=120, chunk_bytes=chunk)
r, n = rr.rank(), rr.size()
world = MPI.COMM_WORLD
failures, checked = [], 0


def same_everywhere(x, what):
    hashes = world.allgather(digest(x))
    if len(set(hashes)) != 1:
        failures.append(f"{what}: ranks hold different bits")


def compare(got, ref, tol, what):
    g = to_float64(got)
    bad = ~(np.abs(g - ref) <= tol)
    if g.shape != ref.shape or bad.any():
        idx = np.flatnonzero(bad)[:3] if g.shape == ref.shape else []
        failures.append(f"{what}: {int(bad.sum()) if g.shape == ref.shape else 'shape'} wrong, "
                        f"e.g. at {list(idx)} got {g[idx]} want {ref[idx]}")


counts = [0, 1, n - 1, n, n + 1, 1000003]
for count in counts:
    for dtype in DTYPES:
        for op in OPS:
            inputs = [make_input(k, count, dtype, op) for k in range(n)]
            ref = reference(inputs, op, dtype)
            tol = tolerance(inputs, ref, op, dtype)
            for inplace in (True, False):
                what = f"allreduce n={n} count={count} {dtype} {op} {'in' if inplace else 'out-of'}-place {kind}"
                x = to_array(inputs[r], dtype, kind)
                keep = to_float64(x).copy()
                out = None if inplace else to_array(np.zeros(count), dtype, kind)
                res = rr.allreduce(x, op, out=out)
                assert res is (x if inplace else out)
                compare(res, ref, tol, what)
                if not inplace and not np.array_equal(to_float64(x), keep):
                    failures.append(f"{what}: input changed by an out-of-place call")
                same_everywhere(res, what)
                # Rerun on the same inputs: the same bits.
                x2 = to_array(inputs[r], dtype, kind)
                again = rr.allreduce(x2, op)
                if digest(again) != digest(res):
                    failures.append(f"{what}: a rerun gave different bits")
                checked += 1
            # reduce_scatter: rank r gets segment r.
            x = to_array(inputs[r], dtype, kind)
            seg = rr.reduce_scatter(x, op=op)
            base, extra = divmod(count, n)
            lo = r * base + min(r, extra)
            hi = lo + base + (1 if r < extra else 0)
            compare(seg, ref[lo:hi], tol[lo:hi], f"reduce_scatter n={n} count={count} {dtype} {op}")
            checked += 1
    # allgather with a different size on every rank, and broadcast from every root.
    for dtype in DTYPES:
        blocks = [make_input(k, count + k, dtype, "sum", "ag") for k in range(n)]
        got = rr.allgather(to_array(blocks[r], dtype, kind))
        compare(got, np.concatenate(blocks), np.zeros(sum(b.size for b in blocks)),
                f"allgather n={n} count={count}+rank {dtype}")
        same_everywhere(got, f"allgather {count} {dtype}")
        for root in range(n) if count < 100 else [n - 1]:
            vals = [make_input(k, count, dtype, "sum", "bc") for k in range(n)]
            x = to_array(vals[r], dtype, kind)
            rr.broadcast(x, root=root)
            compare(x, vals[root], np.zeros(count), f"broadcast n={n} count={count} root={root} {dtype}")
        checked += 1
checked += point_to_point_checks(comm, failures.append)
rr.barrier()
mine = {"rank": r, "size": n, "checked": checked, "failures": failures[:20], "nfail": len(failures)}
gathered = world.gather(mine, root=0)
if r == 0:  # one writer, so lines from several ranks cannot interleave
    for res in gathered:
        print("RESULT " + json.dumps(res), flush=True)
rr.finalize()
