"""Collectives on host buffers over the UCX transport, under torchrun or a
plain launch (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT set by hand). Every
rank prints one 'RESULT {json}' line: the checks that ran and what failed.

    python tests/workers/ucx_collectives.py [collectives|kill]
"""
import json
import os
import signal
import sys
import time

import numpy as np

import ringreduce as rr

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import point_to_point_checks  # noqa: E402

mode = sys.argv[1] if len(sys.argv) > 1 else "collectives"


def report(**kw):
    os.write(1, ("RESULT " + json.dumps(kw) + "\n").encode())


if mode == "kill":
    comm = rr.init(backend="ucx", timeout=3)
    r = comm.rank
    x = np.ones(1 << 16, np.float32)
    comm.allreduce(x)  # everyone healthy first
    if r == 1:
        os.kill(os.getpid(), signal.SIGKILL)
    t0 = time.monotonic()
    err = msg = None
    try:
        comm.allreduce(x)
    except Exception as e:  # noqa: BLE001 - the test inspects what was raised
        err, msg = type(e).__name__, str(e)
    later = None
    try:
        comm.allreduce(x)
    except Exception as e:  # noqa: BLE001
        later = type(e).__name__
    report(rank=r, error=err, message=msg, seconds=time.monotonic() - t0, later_error=later)
    sys.stdout.flush()
    os._exit(0)  # the peer is gone: no orderly teardown with it

comm = rr.init(backend="ucx", timeout=60)
r, n = comm.rank, comm.size
failures, checked = [], []


def check(name, got, want):
    checked.append(name)
    if not np.array_equal(np.asarray(got), np.asarray(want)):
        failures.append(f"{name}: got {np.asarray(got).ravel()[:6]} want {np.asarray(want).ravel()[:6]}")


for count in (1, 7, 1000, 300_001):
    for dtype in (np.float32, np.int64):
        x = np.arange(count, dtype=dtype) + r
        rr_sum = sum(np.arange(count, dtype=dtype) + k for k in range(n))
        check(f"allreduce sum {dtype.__name__} {count}", comm.allreduce(x), rr_sum)
    x = np.full(count, r + 1, np.float64)
    check(f"allreduce max {count}", comm.allreduce(x, "max"), np.full(count, n, np.float64))

seg = 1001
x = np.arange(seg * n, dtype=np.float32) * (r + 1)
out = np.empty(seg, np.float32)
comm.reduce_scatter(x, out=out)
full = np.arange(seg * n, dtype=np.float32) * sum(k + 1 for k in range(n))
check("reduce_scatter", out, full[r * seg:(r + 1) * seg])

mine = np.full(r + 2, r, np.int32)  # uneven sizes
got = comm.allgather(mine, sizes=[k + 2 for k in range(n)])
check("allgather uneven", got, np.concatenate([np.full(k + 2, k, np.int32) for k in range(n)]))

b = np.arange(70_000, dtype=np.float32) if r == n - 1 else np.zeros(70_000, np.float32)
comm.broadcast(b, root=n - 1)
check("broadcast", b, np.arange(70_000, dtype=np.float32))

if n > 1:
    send = np.full(5000, r, np.float32)
    recv = np.empty(5000, np.float32)
    w = comm.recv(recv, (r - 1) % n, async_op=True)
    comm.send(send, (r + 1) % n)
    w.wait()
    check("send/recv ring", recv, np.full(5000, (r - 1) % n, np.float32))

if point_to_point_checks(comm, failures.append):
    checked.append("tagged send/recv, recv from any source")

comm.barrier()
report(rank=r, size=n, backend=comm.backend, checked=checked, failures=failures)
rr.finalize()
