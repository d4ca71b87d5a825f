"""More than 2^31 int8 elements: 64-bit counts, and MPI messages above
INT_MAX bytes split (chunk_bytes from argv makes single messages that big)."""
import json
import sys

import numpy as np
from mpi4py import MPI

import ringreduce as rr

chunk = int(sys.argv[1])
count = (1 << 31) + 5
rr.init(timeout=600, chunk_bytes=chunk)
r, n = rr.rank(), rr.size()
P = 251  # a prime period, so segment and chunk edges fall mid-pattern


def pattern(k):
    return (((np.arange(P) * (k + 1)) % 7) - 3).astype(np.int8)


x = np.empty(count, np.int8)
m = count // P
x[: m * P].reshape(m, P)[:] = pattern(r)
x[m * P:] = pattern(r)[: count - m * P]
rr.allreduce(x)
want = sum(pattern(k).astype(np.int64) for k in range(n)).astype(np.int8)
ok = bool((x[: m * P].reshape(m, P) == want).all() and (x[m * P:] == want[: count - m * P]).all())
oks = MPI.COMM_WORLD.gather(ok, root=0)
if r == 0:
    print("RESULT " + json.dumps({"count": count, "ok": oks}), flush=True)
rr.finalize()
