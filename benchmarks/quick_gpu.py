"""A quick side-by-side timing on GPUs (2+ ranks under mpirun): ringreduce's
NCCL and MPI device engines against native ncclAllReduce and torch's NCCL,
float32 sum, CUDA events, median of iterations. For development; the full
benchmark is ringreduce-bench.

    mpirun -np 2 python benchmarks/quick_gpu.py
"""
import os
import statistics
import sys

import torch
import torch.distributed as dist
from mpi4py import MPI

import ringreduce as rr
from ringreduce import _device

w = MPI.COMM_WORLD
r, n = w.rank, w.size
torch.cuda.set_device(r % torch.cuda.device_count())
os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
os.environ.setdefault("MASTER_PORT", "29533")
dist.init_process_group("nccl", rank=r, world_size=n, device_id=torch.device("cuda", torch.cuda.current_device()))
nccl = rr.comm.new_communicator("nccl" if False else None)
mpi = rr.comm.new_communicator("mpi")
sizes = [int(s) for s in sys.argv[1:]] or [8, 1024, 65536, 1 << 20, 16 << 20, 256 << 20, 1 << 30]


def timeit(fn, iters):
    for _ in range(3):
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
    x = torch.ones(max(1, nb // 4), device="cuda")
    y = torch.empty_like(x)
    iters = 20 if nb <= (16 << 20) else 5
    res = {
        "rr-nccl": timeit(lambda: nccl.allreduce(x, "max", out=y), iters),
        "native-nccl": timeit(lambda: _device.native_nccl_allreduce(nccl, x, out=y, op="max"), iters),
        "torch-nccl": timeit(lambda: dist.all_reduce(x, op=dist.ReduceOp.MAX), iters),
        "rr-mpi": timeit(lambda: mpi.allreduce(x, "max", out=y), max(3, iters // 4)),
    }
    bus = {k: nb / v / 1e3 * 2 * (n - 1) / n for k, v in res.items()}
    if r == 0:
        print(f"{nb:>11} " + " ".join(f"{k}={v:9.1f}us/{bus[k]:6.1f}GB/s" for k, v in res.items()), flush=True)
nccl.finalize()
mpi.finalize()
dist.destroy_process_group()
