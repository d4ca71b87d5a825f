"""Every algorithm beside the ring, forced per call or by the policy, over the
in-process loopback world (1..16 ranks as threads, the real communicator).

Expected values come from a float64 (integer ops: int64) reduction of every
rank's regenerated input; every rank must hold the same bits, and a rerun
must repeat them. The cross-product of algorithm x ranks x counts x dtypes x
ops is sampled: shapes (ranks x counts x in/out of place) run in float32, and
dtypes x ops run at one awkward shape per algorithm.
"""
from __future__ import annotations

import functools
import threading
import time

import numpy as np
import pytest

from ringreduce import _C
from ringreduce._buffers import as_buffer
from conftest import WORKERS, needs_mpi, results, run_mpi
from support.loopback import finalize, make_world, run_ranks
from workers.common import EPS, digest, make_input, seed_of, to_array, to_float64, tolerance

# -- what serves what ---------------------------------------------------------------
REDUCING = [("shm_one_shot", "allreduce"), ("shm_two_shot", "allreduce"),
            ("recursive_doubling", "allreduce"), ("rabenseifner", "allreduce"),
            ("parameter_server", "allreduce"), ("sharded_ps", "allreduce"),
            ("recursive_halving", "reduce_scatter"), ("direct", "reduce"), ("ring", "reduce")]
MOVING = [("recursive_doubling", "allgather"), ("binomial", "broadcast"), ("direct", "gather"),
          ("direct", "scatter"), ("pairwise", "all_to_all")]
POW2_ONLY = {"recursive_halving"}
RANKS = [1, 2, 3, 4, 5, 8, 16]
SHM_ROUND = 4096  # bytes per rank per shared-memory round in these worlds
BIG = 100003
# Collectives whose Python method takes algo=; the rest are forced through
# the policy (what RINGREDUCE_ALGO sets).
PER_CALL = {"allreduce", "reduce_scatter"}

FLOATS = ["float16", "bfloat16", "float32", "float64"]
INTS = ["int8", "uint8", "int32", "int64"]
EXTRA = ["bool", "int16", "uint16", "uint32", "uint64"]
ARITH = ["sum", "prod", "min", "max", "avg"]
BITWISE = ["band", "bor", "bxor"]


def ranks_for(algo):
    return [n for n in RANKS if algo not in POW2_ONLY or n & (n - 1) == 0]


def counts_for(n):
    return sorted({0, 1, max(n - 1, 0), n, n + 1, 3000, BIG})


def shape_cases(pairs):
    """ranks x counts x in/out of place, with the big count only up to 5 ranks."""
    out = []
    for algo, coll in pairs:
        for n in ranks_for(algo):
            for count in counts_for(n):
                if count == BIG and n > 5:
                    continue
                for inplace in in_place_options(coll):
                    out.append(pytest.param(algo, coll, n, count, inplace,
                                            id=f"{algo}-{coll}-n{n}-c{count}-{'in' if inplace else 'out'}"))
    return out


def in_place_options(coll):
    # reduce_scatter, gather, scatter and all_to_all refuse overlapping output;
    # broadcast is in place only.
    return {"allreduce": (True, False), "reduce": (True, False), "allgather": (True, False),
            "broadcast": (True,)}.get(coll, (False,))


def dtype_op_cases():
    combos = [(d, o) for d in FLOATS for o in ARITH] + [(d, o) for d in INTS for o in ARITH + BITWISE]
    combos += [(d, o) for d in EXTRA for o in ("sum", "max", "band")]
    out = []
    for algo, coll in REDUCING:
        n = 4 if algo in POW2_ONLY else 3
        for i, (dtype, op) in enumerate(combos):
            inplace = coll != "reduce_scatter" and i % 2 == 1
            out.append(pytest.param(algo, coll, n, dtype, op, inplace,
                                    id=f"{algo}-{coll}-n{n}-{dtype}-{op}-{'in' if inplace else 'out'}"))
    return out


# -- worlds, kept across tests (a failed test drops its world) ------------------------
_WORLDS: dict = {}


def on_ranks(n, fn, forced=""):
    comms = _WORLDS.get(n)
    if comms is None:
        # Shared memory attached, in small rounds: a large call takes many.
        comms = _WORLDS[n] = make_world(n, timeout=60, shm_round_bytes=SHM_ROUND)
    for c in comms:
        p = c._impl.options.policy
        p.forced = forced
        c._impl.set_policy(p)
    out = run_ranks(comms, fn, timeout=120)
    if any(isinstance(o, BaseException) for o in out) or any(c._impl.poison_message for c in comms):
        finalize(_WORLDS.pop(n))
    return out


@pytest.fixture(scope="module", autouse=True)
def _close_worlds():
    yield
    for n in list(_WORLDS):
        finalize(_WORLDS.pop(n))


def all_ok(results):
    for r in results:
        if isinstance(r, BaseException):
            raise r
    return results


# -- inputs and references ------------------------------------------------------------
def gen(rank, count, dtype, op, salt=0):
    """float64 values every rank can regenerate, exact in dtype, overflow-free at 3-5 ranks."""
    if dtype not in EXTRA:
        return make_input(rank, count, dtype, op, salt)
    rng = np.random.default_rng(seed_of(rank, count, dtype, op, salt))
    if dtype == "bool":
        v = rng.integers(0, 2, size=count)
    elif dtype.startswith("u"):
        v = rng.integers(0, 3 if op == "prod" else 4, size=count)
    else:
        v = rng.integers(-2 if op == "prod" else -3, 3 if op == "prod" else 4, size=count)
    return v.astype(np.float64)


def expected(inputs, op, dtype):
    """(reference, tolerance) in float64. Integer results wrap as the dtype does."""
    n, count = len(inputs), inputs[0].size
    stack = np.stack(inputs) if count else np.zeros((n, 0))
    if dtype == "bool":
        b = stack.astype(bool)
        ref = {"sum": b.any(0), "max": b.any(0), "bor": b.any(0), "prod": b.all(0),
               "min": b.all(0), "band": b.all(0), "bxor": b.sum(0) % 2 == 1}[op]
        return ref.astype(np.float64), np.zeros(count)
    if op in BITWISE:
        ints = stack.astype(np.int64)
        f = {"band": np.bitwise_and, "bor": np.bitwise_or, "bxor": np.bitwise_xor}[op]
        ref = f.reduce(ints, axis=0) if count else np.zeros(0, np.int64)
        return ref.astype(np.dtype(dtype)).astype(np.float64), np.zeros(count)
    ref = {"sum": lambda: stack.sum(0), "prod": lambda: stack.prod(0), "min": lambda: stack.min(0),
           "max": lambda: stack.max(0), "avg": lambda: stack.sum(0) / n}[op]() if count else np.zeros(0)
    if dtype in EPS:
        return ref, tolerance(inputs, ref, op, dtype) if count else np.zeros(0)
    if op == "avg":
        ref = np.trunc(ref)
    return ref.astype(np.int64).astype(np.dtype(dtype)).astype(np.float64), np.zeros(count)


def check(got, ref, tol, what):
    g = to_float64(got).reshape(-1)
    assert g.shape == ref.shape, f"{what}: {g.shape} elements, expected {ref.shape}"
    bad = np.nonzero(~(np.abs(g - ref) <= tol))[0]
    assert bad.size == 0, (f"{what}: {bad.size} wrong elements, first at {bad[0]}: "
                           f"got {g[bad[0]]}, expected {ref[bad[0]]}")


def alloc(count, dtype):
    """A zeroed array of dtype (torch for bfloat16, as to_array makes it)."""
    return to_array(np.zeros(count), dtype)


@functools.lru_cache(maxsize=None)
def reducer_refusal(dtype, op):
    """Why the host reducer in this tree cannot do dtype/op (empty when it can): the
    numerics work that adds bool, 16-bit and unsigned ints and bitwise ops may be
    merged separately. Probed with the ring on 2 ranks."""
    if dtype in FLOATS + INTS and op in ARITH:
        return ""
    # Every pair of 0/1 values in each rank's segment: a reducer that left
    # its destination untouched would show on some pair, whatever the op.
    inputs = [np.tile([0.0, 0.0, 1.0, 1.0], 4), np.tile([0.0, 1.0, 0.0, 1.0], 4)]
    ref, tol = expected(inputs, op, dtype)
    res = on_ranks(2, lambda c: c.allreduce(to_array(inputs[c.rank], dtype), op, algo="ring"))
    if any(isinstance(r, BaseException) for r in res):
        return f"the ring refuses {dtype}/{op} here: {res[0]}"
    got = to_float64(res[0]).reshape(-1)
    return "" if np.all(np.abs(got - ref) <= tol) else \
        f"the host reducer in this tree does not implement {dtype}/{op} yet (the ring gets it wrong too)"


def root_for(n, count):
    return (n - 1) if count % 2 else n // 2


# -- one collective, run twice, checked ------------------------------------------------
def run_case(algo, coll, n, count, dtype, op, inplace, chunk=None):
    forced = "" if coll in PER_CALL else algo
    kw = {"algo": algo} if coll in PER_CALL else {}
    root = root_for(n, count)

    def twice(c, call):
        """call() twice on fresh inputs: (last result, digests of both)."""
        digs, res = [], None
        for _ in range(2):
            res = call()
            digs.append(None if res is None else digest(res))
        return res, digs

    def explained(c):
        if c.rank == 0:
            got = c.explain(coll, count=count, dtype=dtype, op=op, root=root, **kw)
            assert got[0] == algo, f"explain says {got}, expected {algo}"

    if coll in ("allreduce", "reduce_scatter", "reduce"):
        inputs = [gen(r, count, dtype, op) for r in range(n)]
        ref, tol = expected(inputs, op, dtype)

        def fn(c):
            explained(c)
            if chunk:
                c.chunk_bytes = chunk

            def call():
                x = to_array(inputs[c.rank], dtype)
                if coll == "allreduce":
                    out = None if inplace else alloc(count, dtype)
                    r = c.allreduce(x, op, out=out, chunk_bytes=chunk, **kw)
                    assert r is (x if inplace else out)
                    return r
                if coll == "reduce_scatter":
                    return c.reduce_scatter(x, op=op, **kw)
                out = None if inplace or c.rank != root else alloc(count, dtype)
                r = c.reduce(x, root=root, op=op, out=out)
                if c.rank != root:
                    assert r is None
                    check(x, inputs[c.rank], 0, f"rank {c.rank}'s input after reduce")
                return r
            return twice(c, call)

        results = all_ok(on_ranks(n, fn, forced))
        seg = np.array_split(np.arange(count), n)
        for r, (res, digs) in enumerate(results):
            assert digs[0] == digs[1], f"rank {r}: a rerun gave other bits"
            if coll == "allreduce":
                check(res, ref, tol, f"rank {r}")
            elif coll == "reduce_scatter":
                check(res, ref[seg[r]], tol[seg[r]], f"rank {r}, segment {r}")
            elif r == root:
                check(res, ref, tol, f"root {r}")
        if coll == "allreduce":
            assert len({d[0] for _, d in results}) == 1, "ranks hold different bits"
        return

    if coll == "barrier":
        arrived, lock = [0, 0, 0], threading.Lock()

        def fn(c):
            explained(c)
            for phase in range(3):
                if c.rank == n - 1:
                    time.sleep(0.01)  # the others must wait for the last one
                with lock:
                    arrived[phase] += 1
                c.barrier()
                with lock:
                    assert arrived[phase] == n, f"rank {c.rank} left barrier {phase} early"
        all_ok(on_ranks(n, fn, forced))
        return

    # Moving collectives: per-rank block sizes that differ (and may be empty).
    sizes = [max(0, count - (q % 3)) for q in range(n)]
    blocks = [gen(q, sizes[q], dtype, "sum") for q in range(n)]

    def split(r, q):  # all_to_all: elements rank r sends rank q
        return max(0, count // max(n, 1) + (r * 7 + q * 3) % 3 - 1)

    def a2a_block(r, q):
        return gen(r * n + q, split(r, q), dtype, "sum", salt=1)

    def fn(c):
        explained(c)
        r = c.rank
        if chunk:
            c.chunk_bytes = chunk

        def call():
            if coll == "allgather":
                off = sum(sizes[:r])
                if inplace:
                    out = alloc(sum(sizes), dtype)
                    x = out[off:off + sizes[r]]
                    x[:] = to_array(blocks[r], dtype)
                else:
                    out, x = None, to_array(blocks[r], dtype)
                return c.allgather(x, out=out, sizes=sizes)
            if coll == "broadcast":
                x = to_array(blocks[root] if r == root else np.full(sizes[root], 9.0), dtype)
                return c.broadcast(x, root=root)
            if coll == "gather":
                return c.gather(to_array(blocks[r], dtype), root=root, sizes=sizes)
            if coll == "scatter":
                x = to_array(np.concatenate(blocks) if r == root else np.zeros(1), dtype)
                return c.scatter(x, root=root, sizes=sizes)
            x = to_array(np.concatenate([a2a_block(r, q) for q in range(n)]), dtype)
            recv = [split(q, r) for q in range(n)] if count % 2 == 0 else None
            return c.all_to_all(x, splits=[split(r, q) for q in range(n)], recv_splits=recv)
        return twice(c, call)

    results = all_ok(on_ranks(n, fn, forced))
    zero = np.zeros(0)
    for r, (res, digs) in enumerate(results):
        assert digs[0] == digs[1], f"rank {r}: a rerun gave other bits"
        if coll == "allgather":
            want = np.concatenate(blocks)
        elif coll == "broadcast":
            want = blocks[root]
        elif coll == "gather":
            if r != root:
                assert res is None
                continue
            want = np.concatenate(blocks)
        elif coll == "scatter":
            want = blocks[r]
        else:
            want = np.concatenate([a2a_block(q, r) for q in range(n)] + [zero])
        check(res, want, 0, f"rank {r}")


# -- the matrix ------------------------------------------------------------------------
@pytest.mark.parametrize("algo,coll,n,count,inplace", shape_cases(REDUCING))
def test_reducing_shapes(algo, coll, n, count, inplace):
    op = "avg" if count % 2 else "sum"  # odd counts also check that avg divides once
    run_case(algo, coll, n, count, "float32", op, inplace)


@pytest.mark.parametrize("algo,coll,n,count,inplace", shape_cases(MOVING))
def test_moving_shapes(algo, coll, n, count, inplace):
    run_case(algo, coll, n, count, "float32", "sum", inplace)


@pytest.mark.parametrize("algo,coll,n,dtype,op,inplace", dtype_op_cases())
def test_dtypes_ops(algo, coll, n, dtype, op, inplace):
    why = reducer_refusal(dtype, op)
    if why:
        pytest.skip(why)
    run_case(algo, coll, n, 2 * n + 1, dtype, op, inplace)


@pytest.mark.parametrize("dtype", ["uint8", "float16", "bfloat16", "float64", "int64", "bool"])
@pytest.mark.parametrize("algo,coll", MOVING)
def test_moving_dtypes(algo, coll, dtype):
    run_case(algo, coll, 5, 7, dtype, "sum", True if coll == "broadcast" else False)


@pytest.mark.parametrize("n", [2, 3, 8, 16])
def test_barrier(n):
    run_case("recursive_doubling", "barrier", n, 0, "uint8", "sum", False)


@pytest.mark.parametrize("algo,coll", REDUCING + MOVING)
@pytest.mark.parametrize("n", [3, 4, 5])
def test_small_chunks(algo, coll, n):
    """256-byte chunks: every pipelined path runs many chunks deep."""
    if algo in POW2_ONLY and n != 4:
        pytest.skip("power-of-two worlds only")
    run_case(algo, coll, n, 3001, "float64" if n % 2 else "float32", "sum",
             coll in ("allreduce", "reduce", "broadcast"), chunk=256)


# -- sharded_ps with fewer servers (the call's root is S) ---------------------------------
def _submit_raw(c, x, root, algo, op="sum"):
    b = as_buffer(x)
    work = c._impl.submit(_C.Coll.allreduce, b.ptr, b.ptr, b.count, b.code, _C.ReduceOp.__members__[op],
                          root, -1, [], [], -1, 0, 64, algo, False)
    work.wait(-1.0, -1)
    return x


@pytest.mark.parametrize("n,servers", [(3, 1), (4, 2), (5, 3), (8, 5), (5, 5)])
def test_sharded_ps_servers(n, servers):
    count = 1001
    inputs = [gen(r, count, "float32", "sum") for r in range(n)]
    ref, tol = expected(inputs, "sum", "float32")
    res = all_ok(on_ranks(n, lambda c: _submit_raw(c, inputs[c.rank].astype(np.float32), servers,
                                                   "sharded_ps")))
    for r, x in enumerate(res):
        check(x, ref, tol, f"rank {r} with {servers} servers")
    assert len({digest(x) for x in res}) == 1


def test_sharded_ps_too_many_servers():
    res = all_ok(on_ranks(3, lambda c: refused_then_usable(
        c, lambda: _submit_raw(c, np.ones(4, np.float32), 4, "sharded_ps"))))
    for why, _ in res:
        assert "number of servers" in why and "got 4" in why, why


def test_sharded_ps_servers_must_agree():
    """S is part of the call's fingerprint: ranks that disagree raise, never hang."""
    res = on_ranks(4, lambda c: _submit_raw(c, np.ones(64, np.float32), 2 if c.rank else 4,
                                            "sharded_ps"))
    assert all(isinstance(e, Exception) for e in res), res
    assert any(type(e).__name__ == "CollectiveMismatch" for e in res), res


# -- forcing, refusals and the automatic choice ------------------------------------------------
def refused_then_usable(c, call):
    """call() must raise ValueError; the communicator must work on afterwards."""
    try:
        call()
    except ValueError as e:
        why = str(e)
    else:
        raise AssertionError("the call was not refused")
    return why, c.allreduce(np.ones(3, np.float32), algo="recursive_doubling")


@pytest.mark.parametrize("n", [3, 5, 6])
def test_recursive_halving_refuses_non_power_of_two(n):
    res = all_ok(on_ranks(n, lambda c: refused_then_usable(
        c, lambda: c.reduce_scatter(np.ones(10, np.float32), algo="recursive_halving"))))
    for why, after in res:
        assert "'recursive_halving' cannot run this reduce_scatter" in why, why
        assert f"power-of-two number of ranks, got {n}" in why, why
        assert np.array_equal(after, np.full(3, n, np.float32))
    for e in on_ranks(n, lambda c: c.explain("reduce_scatter", count=10, algo="recursive_halving")):
        assert isinstance(e, ValueError) and "power-of-two" in str(e), e


@pytest.mark.parametrize("algo,coll", [("binomial", "allreduce"), ("pairwise", "reduce_scatter"),
                                       ("parameter_server", "reduce_scatter"),
                                       ("recursive_halving", "allreduce")])
def test_forced_algorithm_refuses_other_collectives(algo, coll):
    res = all_ok(on_ranks(4, lambda c: refused_then_usable(
        c, lambda: getattr(c, coll)(np.ones(8, np.float32), algo=algo))))
    for why, _ in res:
        assert f"'{algo}' cannot run this {coll}" in why, why


def test_explain_refusal_names_why():
    c = make_world(1)[0]
    try:
        for coll, algo, why in [("broadcast", "direct", "direct runs reduce, gather and scatter"),
                                ("allgather", "pairwise", "pairwise runs all_to_all only"),
                                ("all_to_all", "binomial", "binomial runs broadcast only")]:
            with pytest.raises(ValueError, match=why):
                c.explain(coll, count=4, algo=algo)
    finally:
        c.finalize()


def _picks(c):
    small = c.explain("allreduce", count=16)
    large = c.explain("allreduce", count=1 << 22)
    return small, large, {coll: c.explain(coll, count=16)[0] for coll in
                          ("reduce_scatter", "allgather", "broadcast", "barrier", "reduce",
                           "gather", "scatter", "all_to_all")}, c.explain("reduce", count=1 << 22)


OTHER_PICKS = {"reduce_scatter": "recursive_halving", "allgather": "recursive_doubling",
               "broadcast": "binomial", "barrier": "recursive_doubling", "reduce": "direct",
               "gather": "direct", "scatter": "direct", "all_to_all": "pairwise"}


def test_explain_picks_by_size():
    """Without shared memory (ranks on several machines, or RINGREDUCE_SHM=0)."""
    comms = make_world(4)
    try:
        for c in comms:
            assert c.shared_memory == "not attached"
        for small, large, picks, big_reduce in all_ok(run_ranks(comms, _picks)):
            assert small[0] == "recursive_doubling", small
            assert "small_bytes" in small[1], small
            assert large[0] == "ring", large
            assert picks == OTHER_PICKS, picks
            assert big_reduce[0] == "ring", big_reduce
    finally:
        finalize(comms)
    # Three ranks: recursive halving refuses, and the ring takes the reduce-scatter.
    assert all_ok(on_ranks(3, lambda c: c.explain("reduce_scatter", count=16)))[0][0] == "ring"


def test_explain_picks_shared_memory_for_allreduce():
    """With shared memory attached, host all-reduces go through it: the
    one-shot up to 4 KiB / (N-1), the two-shot above; the rest as before."""
    for small, large, picks, big_reduce in all_ok(on_ranks(4, _picks)):
        assert small[0] == "shm_one_shot", small
        assert "one-shot limit (1365 B)" in small[1], small
        assert large[0] == "shm_two_shot", large
        assert picks == OTHER_PICKS, picks
        assert big_reduce[0] == "ring", big_reduce
    res = all_ok(on_ranks(4, lambda c: (c.shared_memory, c.explain("allreduce", count=342)[0],
                                        c.explain("allreduce", count=341)[0])))
    assert res[0] == ("attached", "shm_two_shot", "shm_one_shot"), res[0]


def test_parameter_servers_never_chosen_automatically():
    def fn(c):
        return {c.explain("allreduce", count=k)[0] for k in (1, 1000, 1 << 16, 1 << 20, 1 << 26)}
    for picked in all_ok(on_ranks(4, fn, forced="")):
        assert not picked & {"parameter_server", "sharded_ps"}, picked


def test_forced_by_policy_reports_it():
    res = all_ok(on_ranks(4, lambda c: c.explain("broadcast", count=8), forced="binomial"))
    assert res[0] == ("binomial", "binomial: forced by RINGREDUCE_ALGO")
    # The setting names an algorithm for what it serves; other collectives choose as usual.
    assert all_ok(on_ranks(4, lambda c: c.explain("gather", count=8), forced="binomial"))[0][0] == "direct"


def test_rabenseifner_when_medium_bytes_set():
    comms = make_world(4, medium_bytes=1 << 22)
    try:
        res = all_ok(run_ranks(comms, lambda c: c.explain("allreduce", count=1 << 18)))
        assert res[0][0] == "rabenseifner", res[0]
        res = all_ok(run_ranks(comms, lambda c: c.explain("allreduce", count=1 << 24)))
        assert res[0][0] == "ring", res[0]
    finally:
        finalize(comms)


# -- over real MPI: rendezvous sends complete only once matched ---------------------------------
@needs_mpi
@pytest.mark.parametrize("np_,chunk", [(3, None), (4, 4096)])
def test_algorithms_over_mpi(np_, chunk):
    args = () if chunk is None else (chunk,)
    out = results(run_mpi(np_, WORKERS / "algorithms.py", *args, timeout=240).stdout)
    assert len(out) == np_, "every rank reports"
    for res in out:
        assert res["checked"] >= 100, res
        assert res["nfail"] == 0, res["failures"]
