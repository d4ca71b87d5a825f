"""Every algorithm beside the ring, forced, over the real MPI transport: large
messages there complete only once matched (rendezvous), unlike the
loopback's eager copies, so an algorithm that waits for a send before posting
the receive it depends on hangs here. Rank 0 prints one RESULT line per rank.

argv: [chunk_bytes]"""
import json
import sys

import numpy as np
from mpi4py import MPI

import ringreduce as rr
from ringreduce import _C
from ringreduce._buffers import as_buffer
from common import digest, make_input, reference, tolerance

chunk = int(sys.argv[1]) if len(sys.argv) > 1 else None
comm = rr.init(timeout=120, chunk_bytes=chunk)
r, n = comm.rank, comm.size
world = MPI.COMM_WORLD
failures, checked = [], 0


def force(algo):
    p = comm._impl.options.policy
    p.forced = algo
    comm._impl.set_policy(p)


def expect(ok, what):
    global checked
    checked += 1
    if not ok:
        failures.append(what)


def close(got, ref, tol):
    got = np.asarray(got, np.float64).reshape(-1)
    return got.shape == ref.shape and bool(np.all(np.abs(got - ref) <= tol))


def same_everywhere(x, what):
    expect(len(set(world.allgather(digest(x)))) == 1, f"{what}: ranks hold different bits")


# 70001 float32 are far above the shared-memory eager limit (4 KiB), so the
# big messages go by rendezvous; with 4 KiB chunks they also pipeline deep.
counts = [1, n + 1, 70001]
for count in counts:
    for op in ("sum", "avg") if count == n + 1 else ("sum",):
        inputs = [make_input(k, count, "float32", op) for k in range(n)]
        ref = reference(inputs, op, "float32")
        tol = tolerance(inputs, ref, op, "float32")
        mine = inputs[r].astype(np.float32)
        seg = np.array_split(np.arange(count), n)
        tag = f"n={n} count={count} {op} chunk={chunk}"
        for algo in ("recursive_doubling", "rabenseifner", "parameter_server", "sharded_ps", "ring"):
            for inplace in (True, False):
                x = mine.copy()
                res = comm.allreduce(x, op, out=None if inplace else np.empty_like(x), algo=algo)
                expect(close(res, ref, tol), f"{algo} allreduce {tag} inplace={inplace}")
                same_everywhere(res, f"{algo} allreduce {tag}")
        if n & (n - 1) == 0:
            res = comm.reduce_scatter(mine.copy(), op=op, algo="recursive_halving")
            expect(close(res, ref[seg[r]], tol[seg[r]]), f"recursive_halving reduce_scatter {tag}")
        for algo in ("direct", "ring"):
            force(algo)
            for root in {0, n - 1}:
                x = mine.copy()
                res = comm.reduce(x, root=root, op=op)
                expect(close(res, ref, tol) if r == root else res is None,
                       f"{algo} reduce root={root} {tag}")
        force("")
        if n > 2:  # sharded_ps with fewer servers than ranks: root carries S
            x = mine.copy()
            b = as_buffer(x)
            comm._impl.submit(_C.Coll.allreduce, b.ptr, b.ptr, b.count, b.code,
                              _C.ReduceOp.__members__[op], n - 1, -1, [], [], -1, 0, 0,
                              "sharded_ps", False).wait(-1.0, -1)
            expect(close(x, ref, tol), f"sharded_ps with {n - 1} servers {tag}")

    # Movement: per-rank sizes differ.
    sizes = [max(0, count - q) for q in range(n)]
    blocks = [make_input(q, sizes[q], "float64", "sum") for q in range(n)]
    tag = f"n={n} count={count} chunk={chunk}"
    force("recursive_doubling")
    res = comm.allgather(blocks[r].copy(), sizes=sizes)
    expect(np.array_equal(res, np.concatenate(blocks)), f"recursive_doubling allgather {tag}")
    comm.barrier()
    force("binomial")
    for root in {0, n // 2}:
        x = blocks[root].copy() if r == root else np.zeros(sizes[root])
        expect(np.array_equal(comm.broadcast(x, root=root), blocks[root]),
               f"binomial broadcast root={root} {tag}")
    force("direct")
    for root in {0, n - 1}:
        res = comm.gather(blocks[r].copy(), root=root, sizes=sizes)
        expect(np.array_equal(res, np.concatenate(blocks)) if r == root else res is None,
               f"direct gather root={root} {tag}")
        x = np.concatenate(blocks) if r == root else np.zeros(1)
        expect(np.array_equal(comm.scatter(x, root=root, sizes=sizes), blocks[r]),
               f"direct scatter root={root} {tag}")
    force("pairwise")
    split = lambda a, b: max(0, count // n + (a + 2 * b) % 3 - 1)  # noqa: E731
    a2a = lambda a, b: make_input(a * n + b, split(a, b), "float64", "sum", salt=3)  # noqa: E731
    x = np.concatenate([a2a(r, q) for q in range(n)] + [np.zeros(0)])
    res = comm.all_to_all(x, splits=[split(r, q) for q in range(n)])
    expect(np.array_equal(res, np.concatenate([a2a(q, r) for q in range(n)] + [np.zeros(0)])),
           f"pairwise all_to_all {tag}")
    force("")

mine = {"rank": r, "size": n, "checked": checked, "nfail": len(failures), "failures": failures[:20]}
gathered = world.gather(mine, root=0)
if r == 0:  # one writer, so lines from several ranks cannot interleave
    for res in gathered:
        print("RESULT " + json.dumps(res), flush=True)
comm.finalize()
