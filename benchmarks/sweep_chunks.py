"""Chunk size and pipeline depth sweep for ringreduce's device engines
(2+ ranks under mpirun). Prints busbw per (size, chunk, depth).

    mpirun -np 2 python benchmarks/sweep_chunks.py [nccl|mpi]
"""
import statistics
import sys

import torch
from mpi4py import MPI

import ringreduce as rr

w = MPI.COMM_WORLD
r, n = w.rank, w.size
torch.cuda.set_device(r % torch.cuda.device_count())
which = sys.argv[1] if len(sys.argv) > 1 else "nccl"
comm = rr.new_communicator(None if which == "nccl" else "mpi")
sizes = [16 << 20, 256 << 20, 1 << 30] if which == "nccl" else [16 << 20, 256 << 20]
chunks = [1 << 20, 4 << 20, 16 << 20, 64 << 20, 256 << 20] if which == "nccl" else [256 << 10, 1 << 20, 4 << 20, 16 << 20]


def timeit(fn, iters):
    for _ in range(2):
        fn()
    torch.cuda.synchronize()
    ts = []
    for _ in range(iters):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        ts.append(a.elapsed_time(b) * 1e3)
    return w.allreduce(statistics.median(ts), op=MPI.MAX)


for nb in sizes:
    x = torch.ones(nb // 4, device="cuda")
    y = torch.empty_like(x)
    for depth in (2, 4):
        comm._impl.depth = depth
        row = []
        for cb in chunks:
            t = timeit(lambda: comm.allreduce(x, "max", out=y, chunk_bytes=cb), 5 if which == "nccl" else 3)
            row.append(f"{cb >> 20 if cb >= 1 << 20 else cb / 1048576:.2g}M:{nb / t / 1e3 * 2 * (n - 1) / n:6.1f}")
        if r == 0:
            print(f"{which} {nb >> 20:>5}MiB depth {depth}: " + "  ".join(row), flush=True)
comm.finalize()
