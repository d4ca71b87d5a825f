"""Fault injection on the host path. Every rank prints one 'RESULT {json}'
line of its own (the faults make gathering impossible)."""
import json
import os
import signal
import sys
import time

import numpy as np

import ringreduce as rr

mode = sys.argv[1]
timeout = float(sys.argv[2])
started = time.monotonic()
victim = 1


def report(**kw):
    # One write per line: os.write is atomic for short lines on a pipe.
    os.write(1, ("RESULT " + json.dumps(dict(rank=rr.rank(), **kw)) + "\n").encode())


def attempt(fn):
    t0 = time.monotonic()
    try:
        fn()
        return None, None, time.monotonic() - t0
    except Exception as e:  # noqa: BLE001 - the test inspects what was raised
        return type(e).__name__, str(e), time.monotonic() - t0


if mode.endswith("_cuda"):
    import torch

    torch.cuda.set_device(int(os.environ.get("OMPI_COMM_WORLD_LOCAL_RANK", "0")) % torch.cuda.device_count())

check = mode in ("mismatch_checked", "nan_checked", "mismatch_op_checked")
rr.init(timeout=timeout, check=check, nan_check=mode == "nan_checked")
r, n = rr.rank(), rr.size()
x = np.ones(1 << 20, np.float32)
if mode.endswith("_cuda"):
    x = torch.ones(1 << 20, device="cuda")
rr.allreduce(x)  # everyone healthy first
if mode.endswith("_cuda"):
    torch.cuda.synchronize()

if mode in ("kill", "stop"):
    if r == victim:
        os.kill(os.getpid(), signal.SIGKILL if mode == "kill" else signal.SIGSTOP)
    err, msg, secs = attempt(lambda: rr.allreduce(x))
    err2, msg2, _ = attempt(lambda: rr.allreduce(x))
    report(error=err, message=msg, seconds=secs, later_error=err2, later_message=msg2)
elif mode in ("kill_cuda", "stop_cuda"):
    if r == victim:
        os.kill(os.getpid(), signal.SIGKILL if mode == "kill_cuda" else signal.SIGSTOP)

    def collective_then_sync():
        # The call only enqueues; the stream then waits on a peer that never
        # comes. The watchdog aborts NCCL at the deadline, which frees the
        # stream, and the communicator raises from then on.
        rr.allreduce(x)
        torch.cuda.synchronize()
        rr.allreduce(x)

    err, msg, secs = attempt(collective_then_sync)
    err2, msg2, _ = attempt(lambda: rr.allreduce(x))
    report(error=err, message=msg, seconds=secs, later_error=err2, later_message=msg2)
elif mode in ("mismatch_checked", "mismatch_unchecked"):
    count = 1000 + (7 if r == victim else 0)
    err, msg, secs = attempt(lambda: rr.allreduce(np.ones(count, np.float32)))
    # After a checked mismatch nothing moved, so the communicator still works.
    err2, msg2, _ = attempt(lambda: rr.allreduce(np.ones(8, np.float32)))
    report(error=err, message=msg, seconds=secs, later_error=err2, later_message=msg2)
elif mode == "mismatch_op_checked":
    op = "max" if r == victim else "sum"
    err, msg, secs = attempt(lambda: rr.allreduce(np.ones(100, np.float32), op))
    report(error=err, message=msg, seconds=secs)
elif mode == "nan_checked":
    y = np.ones(100, np.float32)
    if r == victim:
        y[17] = np.nan
    err, msg, secs = attempt(lambda: rr.allreduce(y))
    err2, msg2, _ = attempt(lambda: rr.allreduce(np.ones(8, np.float32)))
    report(error=err, message=msg, seconds=secs, later_error=err2)
else:
    raise SystemExit(f"unknown mode {mode}")
sys.stdout.flush()
# mpirun ends the job when the first rank exits without MPI_Finalize, so
# linger until every rank has had its timeout to report.
time.sleep(max(0.0, started + 2 * timeout + 3 - time.monotonic()))
# Skip MPI_Finalize: after a fault it may wait on a dead or stopped peer.
os._exit(0)
