"""API behaviour on several ranks: async work, bad input, reuse after errors.
Prints one RESULT line per check (from rank 0, after gathering every rank)."""
import json
import time
import traceback

import numpy as np
from mpi4py import MPI

import ringreduce as rr

world = MPI.COMM_WORLD
checks = {}


def check(fn):
    try:
        fn()
        checks[fn.__name__] = None
    except Exception:
        checks[fn.__name__] = traceback.format_exc(limit=3)
    return fn


def raises(exc, fn, match=None):
    try:
        fn()
    except exc as e:
        if match and match not in str(e):
            raise AssertionError(f"{type(e).__name__} without {match!r}: {e}")
        return e
    raise AssertionError(f"expected {exc.__name__}")


# Before init: a clear error, not a crash.
@check
def call_before_init():
    raises(rr.RingReduceError, lambda: rr.allreduce(np.ones(3)), "init")
    raises(rr.RingReduceError, rr.rank, "init")


comm = rr.init(timeout=60)
r, n = rr.rank(), rr.size()


def still_usable():
    x = np.full(5, r + 1, np.float64)
    rr.allreduce(x)
    assert (x == n * (n + 1) / 2).all(), x


@check
def async_returns_work_and_result():
    xs = [np.full(1000, r + i, np.float32) for i in range(8)]
    works = [rr.allreduce(x, async_op=True) for x in xs]
    assert all(isinstance(w, rr.Work) for w in works)
    for i, (w, x) in enumerate(zip(works, xs)):
        res = w.wait()
        assert res is x
        assert (x == sum(k + i for k in range(n))).all()
        assert w.is_completed()


@check
def async_does_not_block_the_caller():
    # The last rank arrives late; everyone else's async call must return at once.
    if n == 1:
        return
    x = np.ones(1 << 16, np.float32)
    if r == n - 1:
        time.sleep(1.0)
    t0 = time.perf_counter()
    w = rr.allreduce(x, async_op=True)
    submit = time.perf_counter() - t0
    if r != n - 1:
        assert submit < 0.2, f"async submit blocked for {submit:.3f}s"
        assert not w.is_completed(), "completed before the late rank arrived"
    w.wait()
    assert (x == n).all()


@check
def blocking_call_after_async_keeps_order():
    a = np.full(10, 1.0)
    b = np.full(10, 2.0)
    wa = rr.allreduce(a, async_op=True)
    rr.allreduce(b, op="max")
    wa.wait()
    assert (a == n).all() and (b == 2).all()


@check
def work_wait_with_timeout_raises_when_late():
    if n == 1:
        return
    x = np.ones(4)
    if r == 0:
        w = rr.allreduce(x, async_op=True)
        e = raises(rr.CollectiveTimeout, lambda: w.wait(timeout=0.2))
        assert isinstance(e, TimeoutError)
        world.barrier()  # now let the others in
        w.wait()
    else:
        world.barrier()
        rr.allreduce(x)
    assert (x == n).all()


@check
def bad_arguments_are_clear_and_harmless():
    x = np.ones(6, np.float32)
    raises(ValueError, lambda: rr.allreduce(x, op="mean"), "'mean'")
    raises(ValueError, lambda: rr.allreduce(np.ones((4, 4), np.float32)[:, 0]), "contiguous")
    raises(TypeError, lambda: rr.allreduce(np.ones(3, np.complex64)), "complex64")
    raises(TypeError, lambda: rr.allreduce(np.ones(3, complex)), "complex")
    raises(TypeError, lambda: rr.allreduce(np.array([object()] * 3)), "object")
    raises(TypeError, lambda: rr.allreduce([1.0, 2.0]), "list")
    raises(TypeError, lambda: rr.allreduce("abc"), "str")
    raises(ValueError, lambda: rr.allreduce(x, out=np.empty(5, np.float32)), "5 elements")
    raises(TypeError, lambda: rr.allreduce(x, out=np.empty(6, np.float64)), "float64")
    big = np.ones(12, np.float32)
    raises(ValueError, lambda: rr.allreduce(big[:6], out=big[3:9]), "overlaps")
    ro = np.ones(6, np.float32)
    ro.flags.writeable = False
    raises(ValueError, lambda: rr.allreduce(ro), "read-only")
    raises(ValueError, lambda: rr.broadcast(x, root=n), f"[0, {n})")
    raises(ValueError, lambda: rr.broadcast(x, root=-1))
    raises(ValueError, lambda: rr.reduce_scatter(x, out=np.empty(99, np.float32)))
    raises(ValueError, lambda: rr.allreduce(x, chunk_bytes=0), "chunk_bytes")
    out = np.empty(6, np.float32)
    rr.allreduce(ro, out=out)  # read-only input is fine out of place
    assert (out == n).all()
    still_usable()


@check
def zero_size_is_a_noop():
    for dt in (np.float32, np.int8):
        x = np.empty(0, dt)
        assert rr.allreduce(x) is x
        assert rr.reduce_scatter(x).size == 0
        assert rr.allgather(x).size == 0
        rr.broadcast(x, root=0)
    still_usable()


@check
def torch_and_numpy_share_memory():
    try:
        import torch
    except ImportError:
        return
    t = torch.full((3, 4), float(r), dtype=torch.float64)
    res = rr.allreduce(t, "sum")
    assert res is t and torch.all(t == sum(range(n)))
    g = rr.allgather(torch.full((2, 3), r, dtype=torch.int32))
    assert tuple(g.shape) == (2 * n, 3)
    assert [int(v) for v in g[::2, 0]] == list(range(n))


@check
def chunk_size_per_call_and_per_communicator():
    x = np.arange(10007, dtype=np.float64) * (r + 1)
    want = np.arange(10007, dtype=np.float64) * n * (n + 1) / 2
    for cb in (8, 1000, 1 << 20):
        y = x.copy()
        rr.allreduce(y, chunk_bytes=cb)
        assert np.array_equal(y, want)
    old = comm.chunk_bytes
    comm.chunk_bytes = 512
    y = x.copy()
    rr.allreduce(y)
    comm.chunk_bytes = old
    assert np.array_equal(y, want)


@check
def barrier_waits_for_everyone():
    if n == 1:
        return
    t0 = time.perf_counter()
    if r == 0:
        time.sleep(0.5)
    rr.barrier()
    assert time.perf_counter() - t0 >= 0.45


@check
def second_communicator_is_independent():
    c2 = rr.new_communicator(backend="mpi" if n > 1 else None, timeout=30)
    x = np.ones(7, np.int64)
    c2.allreduce(x)
    assert (x == n).all() and c2.size == n and c2.rank == r
    c2.finalize()
    raises(rr.RingReduceError, lambda: c2.allreduce(x), "finalized")
    still_usable()


@check
def call_after_finalize():
    rr.finalize()
    raises(rr.RingReduceError, lambda: rr.allreduce(np.ones(2)), "finalized")
    rr.init(timeout=60)
    still_usable()


gathered = world.gather(checks, root=0)
if r == 0:
    names = list(checks)
    for name in names:
        errs = {k: g[name] for k, g in enumerate(gathered) if g[name]}
        print("RESULT " + json.dumps({"check": name, "errors": errs}), flush=True)
rr.finalize()
