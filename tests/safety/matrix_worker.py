"""The adversarial safety matrix, one group of cases per launch.

    matrix_worker.py GROUP TIMEOUT [MODE]

Every case drives the ranks into misuse, disagreement or failure and then
reports, on every rank, one line 'RESULT {json}' with what happened: the
error type and message of each step (None when it returned), the seconds it
took, whether a returned result was right, and the state of the
communicator afterwards ("usable", or "poisoned:<error type>"). Local checks
that failed are listed under "problems". The ranks cannot gather their
reports (a fault may have ended the communicator), so each writes its own.

Most cases run on a communicator of their own (rr.new_communicator), so one
that a case poisons does not leak into the next. A mismatch case named
<case>@<algo> runs on a communicator made under RINGREDUCE_ALGO=<algo>.
Results also go to RR_MATRIX_DIR/rank<r>.jsonl when that is set.
"""
import gc
import json
import os
import signal
import sys
import threading
import time
import traceback

import numpy as np

import ringreduce as rr
from ringreduce import _C
from ringreduce._buffers import Buffer

GROUP = sys.argv[1]
T = float(sys.argv[2])
MODE = sys.argv[3] if len(sys.argv) > 3 else ""
STARTED = time.monotonic()

rr.init(timeout=T)
R, N = rr.rank(), rr.size()
LAST = N - 1
DEVIANT = 1  # the rank that disagrees, refuses or misbehaves
SUM = N * (N + 1) / 2  # of inputs filled with rank + 1
SMALL, LARGE = 8, 600_000  # elements; LARGE is > 1 MiB in every dtype used here


OUT_DIR = os.environ.get("RR_MATRIX_DIR")
_out_fd = (os.open(os.path.join(OUT_DIR, f"rank{R}.jsonl"), os.O_WRONLY | os.O_CREAT | os.O_APPEND)
           if OUT_DIR else None)


def report(case, **kw):
    """One 'RESULT {json}' line on stdout and, when RR_MATRIX_DIR is set, in
    this rank's own file there: mpirun may split long lines of several ranks
    into each other, and a file keeps what was written before a crash."""
    record = json.dumps(dict(case=case, rank=R, size=N, **kw), default=str)
    line = ("RESULT " + record + "\n").encode()
    if _out_fd is not None:
        os.write(_out_fd, line)
    os.write(1, line)


def attempt(fn, key=""):
    """Run fn; ({key_error, key_message, key_seconds}, its value or None)."""
    p = key + "_" if key else ""
    t0 = time.monotonic()
    try:
        value, err, msg = fn(), None, None
    except BaseException as e:  # noqa: BLE001 - KeyboardInterrupt is a result here
        value, err, msg = None, type(e).__name__, str(e)[:300]
    seconds = round(time.monotonic() - t0, 3)
    return {p + "error": err, p + "message": msg, p + "seconds": seconds}, value


LOST_PEER = False


def fresh(timeout=None):
    """A communicator of the case's own. Its creation may wait long: a rank
    can still be finalizing the last case's failed communicator (which waits
    for MPI to settle cancelled requests)."""
    global LOST_PEER
    try:
        comm = rr.new_communicator(timeout=T + 8)
    except rr.CollectiveTimeout:
        LOST_PEER = True
        raise
    comm.timeout = T if timeout is None else timeout
    return comm


def after(comm):
    """The communicator after a case: a small all-reduce that must be right or raise."""
    x = np.full(4, R + 1, np.float64)
    res, _ = attempt(lambda: comm.allreduce(x), "after")
    res["after_message"] = res["after_message"] and res["after_message"][:160]
    if res["after_error"]:
        state = "poisoned:" + res["after_error"]
    else:
        state = "usable" if (x == SUM).all() else f"wrong:{x.tolist()}"
    res["after"] = state
    return res


PARKED = []  # failed communicators, finalized together at the end of the launch


def close(comm, out):
    """Record the state after the case, then finalize (which must not
    raise). A failed communicator's finalize waits for MPI to settle the
    cancelled requests of its peers, seconds each; those are parked and
    finalized in parallel when the launch ends."""
    out.update(after(comm))
    if out["after"] == "usable":
        res, _ = attempt(comm.finalize, "finalize")
        out.update(res)
    else:
        PARKED.append((out, comm))
    return out


def finalize_parked():
    """Finalize the parked communicators in parallel; None, or what went wrong."""
    errors = []

    def fin(comm):
        res, _ = attempt(comm.finalize)
        if res["error"]:
            errors.append(f"{res['error']}: {res['message']}")
    threads = [threading.Thread(target=fin, args=(c,), daemon=True) for _, c in PARKED]
    for t in threads:
        t.start()
    deadline = time.monotonic() + T + 5
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    if any(t.is_alive() for t in threads):
        errors.append("finalize of a failed communicator did not return within timeout + 5 s")
    return errors or None


def filled(count, dtype=np.float32, value=None):
    return np.full(count, R + 1 if value is None else value, dtype)


def right(x, value=SUM):
    return bool(np.all(np.asarray(x) == value))


CASES = {}


def case(*groups):
    def add(fn):
        for g in groups:
            CASES.setdefault(g, []).append(fn)
        return fn
    return add


# -- lifetime ----------------------------------------------------------------------------------
M4 = 1 << 20  # 4 MiB of float32


@case("lifetime")
def lifetime_dropped_work_fresh_arrays_intact():
    """An async all-reduce whose Work and array are dropped at once, the late
    rank holding it in flight; fresh arrays allocated meanwhile stay untouched."""
    comm = fresh()
    out, problems = {}, []

    def submit():
        comm.allreduce(filled(M4), async_op=True)  # neither Work nor array kept

    if R == LAST:
        time.sleep(0.5)
    submit()
    gc.collect()
    fresh_arrays = [np.full(M4, -7.0, np.float32) for _ in range(6)]
    gc.collect()
    # Work runs in submission order: this call ends after the dropped one.
    res, _ = attempt(lambda: comm.allreduce(filled(SMALL)))
    out.update(res)
    bad = [i for i, a in enumerate(fresh_arrays) if not (a == -7.0).all()]
    if bad:
        problems.append(f"fresh arrays {bad} were overwritten")
    out["problems"] = problems
    return close(comm, out)


@case("lifetime")
def lifetime_kept_work_result_right():
    """The array is dropped, the Work kept: wait() returns the array, right."""
    comm = fresh()
    out, problems = {}, []

    def submit():
        return comm.allreduce(filled(M4), async_op=True)

    if R == LAST:
        time.sleep(0.5)
    w = submit()
    gc.collect()
    fresh_arrays = [np.full(M4, -7.0, np.float32) for _ in range(6)]
    gc.collect()
    res, x = attempt(w.wait)
    out.update(res)
    if res["error"] is None and not right(x):
        problems.append(f"result wrong: {np.unique(x)[:5]}")
    if any(not (a == -7.0).all() for a in fresh_arrays):
        problems.append("a fresh array was overwritten")
    out["problems"] = problems
    return close(comm, out)


@case("lifetime")
def lifetime_64mib_async_del_gc():
    """64 MiB in flight, its Work and array deleted and collected at once."""
    comm = fresh(timeout=max(T, 10.0))
    out, problems = {}, []
    x = np.ones(16 << 20, np.float32)  # 64 MiB
    w = comm.allreduce(x, async_op=True)
    del w, x
    gc.collect()
    guard = np.full(16 << 20, 5.0, np.float32)
    gc.collect()
    res, _ = attempt(comm.barrier)
    out.update(res)
    if not (guard == 5.0).all():
        problems.append("a fresh 64 MiB array was overwritten")
    out["problems"] = problems
    return close(comm, out)


@case("lifetime")
def lifetime_many_dropped_works():
    """Hundreds of dropped async calls of many sizes, then a blocking one."""
    comm = fresh()
    out, problems = {}, []
    for i in range(200):
        comm.allreduce(filled(1 + (i * 37) % 5000, np.float64), async_op=True)
        if i % 50 == 0:
            gc.collect()
    x = filled(1000, np.float64)
    res, _ = attempt(lambda: comm.allreduce(x))
    out.update(res)
    if res["error"] is None and not right(x):
        problems.append("the blocking call after dropped ones is wrong")
    out["problems"] = problems
    return close(comm, out)


def _finalize_inflight(keep_work):
    """finalize() while an async call waits for the late rank: it waits for
    the call, or ends it with a typed error; later calls say finalized."""
    comm = fresh()
    out, problems = {}, []
    x = filled(1 << 18)
    if R == LAST:
        time.sleep(0.5)
    w = comm.allreduce(x, async_op=True)
    if not keep_work:
        del w, x
        gc.collect()
    res, _ = attempt(comm.finalize, "fin")
    out.update(res)
    if keep_work:
        res, got = attempt(w.wait, "wait")
        out.update(res)
        out["wait_right"] = res["wait_error"] is None and right(got)
        if res["wait_error"] is None and not right(got):
            problems.append("finalize let the work finish with a wrong result")
    res, _ = attempt(lambda: comm.allreduce(filled(SMALL)), "post")
    out.update(res)
    res, _ = attempt(comm.finalize, "finalize")
    out.update(res)
    out["problems"] = problems
    return out


@case("lifetime")
def lifetime_finalize_with_async_inflight():
    return _finalize_inflight(True)


@case("lifetime")
def lifetime_finalize_with_dropped_inflight():
    return _finalize_inflight(False)


# -- desync / refusal --------------------------------------------------------------------------
def _broadcast_refused_then_allreduce(count, refusers):
    """A broadcast the `refusers` refuse (their array is read-only), then an
    all-reduce: its result must never hold the broadcast's data (777)."""
    comm = fresh()
    out = {}
    b = np.full(count, 777.0 if R == 0 else 0.0)
    if R in refusers:
        b.flags.writeable = False
    out["role"] = "refuses" if R in refusers else "root" if R == 0 else "receiver"
    res, _ = attempt(lambda: comm.broadcast(b, root=0), "bcast")
    out.update(res)
    x = filled(count, np.float64)
    res, _ = attempt(lambda: comm.allreduce(x))
    out.update(res)
    out["right"] = res["error"] is None and right(x)
    out["has_broadcast_data"] = bool((x == 777.0).any())
    return close(comm, out)


@case("refusal")
def refusal_readonly_broadcast_small_then_allreduce():
    return _broadcast_refused_then_allreduce(64, set(range(1, N)))


@case("refusal")
def refusal_readonly_broadcast_large_then_allreduce():
    return _broadcast_refused_then_allreduce(1 << 18, set(range(1, N)))


@case("refusal")
def refusal_readonly_broadcast_root_refuses_then_allreduce():
    return _broadcast_refused_then_allreduce(64, {0})


@case("refusal")
def refusal_readonly_broadcast_one_receiver_then_allreduce():
    return _broadcast_refused_then_allreduce(1 << 18, {LAST})


def _refuse_call_k(bad_call, k=2, calls=5, async_op=False):
    """Calls 0..calls-1 are all-reduces; at call k DEVIANT makes bad_call instead."""
    comm = fresh()
    steps = []
    for i in range(calls):
        x = filled(32, np.float64)
        if i == k and R == DEVIANT:
            fn = lambda: bad_call(comm, x)  # noqa: E731
        elif async_op:
            fn = lambda: comm.allreduce(x, async_op=True).wait()  # noqa: E731
        else:
            fn = lambda: comm.allreduce(x)  # noqa: E731
        res, _ = attempt(fn)
        res["right"] = res["error"] is None and right(x)
        steps.append(res)
    out = {"steps": steps, "k": k, "role": "refuses" if R == DEVIANT else "runs"}
    return close(comm, out)


@case("refusal")
def refusal_call_k_unknown_op_one_rank():
    return _refuse_call_k(lambda c, x: c.allreduce(x, "mean"))


@case("refusal")
def refusal_call_k_noncontiguous_one_rank():
    return _refuse_call_k(lambda c, x: c.allreduce(np.ones((32, 2))[:, 0]))


@case("refusal")
def refusal_call_k_unsupported_dtype_one_rank():
    return _refuse_call_k(lambda c, x: c.allreduce(np.ones(32, np.complex64)))


@case("refusal")
def refusal_call_k_readonly_one_rank():
    def bad(c, x):
        x.flags.writeable = False
        return c.allreduce(x)
    return _refuse_call_k(bad)


@case("refusal")
def refusal_call_k_bad_chunk_bytes_one_rank():
    return _refuse_call_k(lambda c, x: c.allreduce(x, chunk_bytes=0))


@case("refusal")
def refusal_call_k_unknown_algo_one_rank():
    return _refuse_call_k(lambda c, x: c.allreduce(x, algo="no_such_algorithm"))


@case("refusal")
def refusal_call_k_algo_cannot_serve_one_rank():
    return _refuse_call_k(lambda c, x: c.allreduce(x, algo="binomial"))


@case("refusal")
def refusal_call_k_async_unknown_op_one_rank():
    return _refuse_call_k(lambda c, x: c.allreduce(x, "mean", async_op=True), async_op=True)


@case("refusal")
def refusal_call_k_bad_root_one_rank():
    """Everyone broadcasts at call k; DEVIANT names a root that does not exist."""
    comm = fresh()
    steps = []
    for i in range(4):
        x = filled(32, np.float64)
        if i == 1:
            root = N if R == DEVIANT else 0
            res, _ = attempt(lambda: comm.broadcast(x, root=root))
            res["right"] = res["error"] is None and right(x, 1.0)
        else:
            res, _ = attempt(lambda: comm.allreduce(x))
            res["right"] = res["error"] is None and right(x)
        steps.append(res)
    return close(comm, {"steps": steps, "k": 1, "role": "refuses" if R == DEVIANT else "runs"})


# -- mismatch without RINGREDUCE_CHECK ---------------------------------------------------------
# Each field case: DEVIANT makes a call that differs from everyone else's in
# one field. fn(comm, count) makes this rank's call and returns whether its
# result is right by its own arguments. `colls` are the collectives the
# others call, for asking which algorithm serves them.
def _bf16(comm, count):
    """A bfloat16 all-reduce of `count` ones. NumPy has no bfloat16
    (ml_dtypes is not a dependency), so the call enters at _submit, where the
    general path hands over after its checks."""
    a = np.full(count, 0x3F80, np.uint16)  # 1.0 in bfloat16
    b = Buffer(a, "numpy", a.ctypes.data, count, "bfloat16", -1, 0, False, a.shape)
    comm._submit(_C.Coll.allreduce, b, b, count, op=_C.ReduceOp.sum, result=a)
    return a


def _mm_dtype_f32_i32(comm, count):
    x = filled(count, np.int32 if R == DEVIANT else np.float32)
    comm.allreduce(x)
    return right(x)


def _mm_dtype_f16_bf16(comm, count):
    if R == DEVIANT:
        return right(_bf16(comm, count), int(np.float32(N).view(np.uint32)) >> 16)
    x = np.ones(count, np.float16)
    comm.allreduce(x)
    return right(x, N)


def _mm_op_sum_max(comm, count):
    x = filled(count)
    comm.allreduce(x, "max" if R == DEVIANT else "sum")
    return right(x, N if R == DEVIANT else SUM)


def _mm_op_avg_sum(comm, count):
    x = filled(count)
    comm.allreduce(x, "sum" if R == DEVIANT else "avg")
    return right(x, SUM if R == DEVIANT else SUM / N)


def _mm_coll_allreduce_barrier(comm, count):
    if R == DEVIANT:
        comm.barrier()
        return True
    x = filled(count)
    comm.allreduce(x)
    return right(x)


def _mm_coll_allreduce_broadcast(comm, count):
    x = filled(count)
    if R == DEVIANT:
        comm.broadcast(x, root=0)
        return right(x, 1.0)
    comm.allreduce(x)
    return right(x)


def _mm_count(comm, count):
    x = filled(count + (1 if R == DEVIANT else 0))
    comm.allreduce(x)
    return right(x)


def _mm_root(comm, count):
    root = 1 if R == DEVIANT else 0
    x = filled(count)
    comm.broadcast(x, root=root)
    return right(x, root + 1.0)


def _mm_reduce_scatter_op(comm, count):
    x = filled(count * N)
    got = comm.reduce_scatter(x, op="max" if R == DEVIANT else "sum")
    return right(got, N if R == DEVIANT else SUM)


def _mm_reduce_dtype(comm, count):
    x = filled(count, np.int32 if R == DEVIANT else np.float32)
    comm.reduce(x, root=0)
    return R != 0 or right(x)


def _mm_all_to_all_dtype(comm, count):
    x = filled(count * N, np.int32 if R == DEVIANT else np.float32)
    got = comm.all_to_all(x)
    return right(got.reshape(N, count), np.arange(1, N + 1, dtype=np.float32)[:, None])


MISMATCH_FIELDS = {  # name: (fn, collectives the others call)
    "dtype_f32_i32": (_mm_dtype_f32_i32, ("allreduce",)),
    "dtype_f16_bf16": (_mm_dtype_f16_bf16, ("allreduce",)),
    "op_sum_max": (_mm_op_sum_max, ("allreduce",)),
    "op_avg_sum": (_mm_op_avg_sum, ("allreduce",)),
    "coll_allreduce_barrier": (_mm_coll_allreduce_barrier, ("allreduce", "barrier")),
    "coll_allreduce_broadcast": (_mm_coll_allreduce_broadcast, ("allreduce", "broadcast")),
    "count": (_mm_count, ("allreduce",)),
    "root": (_mm_root, ("broadcast",)),
    "reduce_scatter_op": (_mm_reduce_scatter_op, ("reduce_scatter",)),
    "reduce_dtype": (_mm_reduce_dtype, ("reduce",)),
    "all_to_all_dtype": (_mm_all_to_all_dtype, ("all_to_all",)),
}
# Fields where the ranks' messages differ in size: a receive then meets a
# message longer than itself. Their large cases run in a batch of their own.
SIZE_CHANGING = ("coll_allreduce_barrier", "coll_allreduce_broadcast", "count", "root")


def _explain(comm, coll, count, algo=""):
    n = count * (N if coll in ("reduce_scatter", "all_to_all") else 1)
    return comm.explain(coll, count=n, algo=algo or None)[0]


class MismatchCase:
    """One field at one size, under RINGREDUCE_ALGO=`algo` (auto when empty).
    Its name is mismatch_<field>_<size>, with @<algo> when forced: one launch
    forces every algorithm in turn, each communicator made under its own
    setting. Large cases run side by side (parallel): a failed large call
    takes its ranks about two seconds to settle, one after another that
    would cost as many times over."""

    def __init__(self, field, size_name, algo=""):
        self.fn, self.colls = MISMATCH_FIELDS[field]
        self.count = SMALL if size_name == "small" else LARGE
        self.algo = algo
        self.__name__ = f"mismatch_{field}_{size_name}" + (f"@{algo}" if algo else "")
        self.parallel = size_name == "large"
        self.batch = (algo, field in SIZE_CHANGING)  # consecutive cases alike run together

    def prepare(self):
        """A communicator for the case, or a result when the case does not apply."""
        if self.algo:
            refusals = {}
            for c in self.colls:
                try:
                    _explain(rr.init(), c, self.count, self.algo)
                except ValueError as e:
                    refusals[c] = str(e)[:200]
            if len(refusals) == len(self.colls):
                # RINGREDUCE_ALGO names an algorithm for what it serves; here
                # the selector would choose as in the unforced launch.
                return None, {"skipped": f"RINGREDUCE_ALGO={self.algo} does not serve this "
                                         f"case on {N} ranks: {refusals}"}
        os.environ["RINGREDUCE_ALGO"] = self.algo
        try:
            comm = fresh()
        finally:
            os.environ["RINGREDUCE_ALGO"] = ""
        self.served = {c: _explain(comm, c, self.count) for c in self.colls}
        return comm, None

    def body(self, comm):
        res, ok = attempt(lambda: self.fn(comm, self.count))
        res["right"] = bool(ok)
        res["role"] = "deviant" if R == DEVIANT else "others"
        res["served"] = self.served
        return res

    def __call__(self):
        comm, skipped = self.prepare()
        if skipped:
            return skipped
        return close(comm, self.body(comm))


def _mismatch_cases():
    return [MismatchCase(field, size_name)
            for size_name in ("small", "large") for field in MISMATCH_FIELDS]


def run_parallel(batch):
    """prepare() each case in order (creating communicators is collective),
    then run the bodies, and the checks of the communicators after them,
    side by side. Each case reports as soon as it is done."""
    report("_batch", cases=[fn.__name__ for fn in batch])
    t0 = time.monotonic()
    prepared = []
    for fn in batch:
        try:
            comm, done = fn.prepare()
        except BaseException:  # noqa: BLE001
            comm, done = None, {"crash": traceback.format_exc()[-1500:]}
        if done is not None:
            report(fn.__name__, **done)
        else:
            prepared.append((fn, comm))

    def go(fn, comm):
        try:
            res = close(comm, fn.body(comm))
        except BaseException:  # noqa: BLE001
            res = {"crash": traceback.format_exc()[-1500:]}
        res["case_seconds"] = round(time.monotonic() - t0, 3)
        res["ran_alongside"] = len(prepared)
        report(fn.__name__, **res)
    threads = [threading.Thread(target=go, args=p) for p in prepared]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


CASES["mismatch"] = _mismatch_cases()


@case("mismatch")
def mismatch_fresh_communicator_after_all():
    """After every failed communicator of the launch, a new one still works."""
    comm = fresh()
    return close(comm, {})


# -- creation ----------------------------------------------------------------------------------
def _create_with(timeout):
    out = {}
    res, comm = attempt(lambda: rr.new_communicator(timeout=timeout))
    out.update(res)
    if comm is not None:
        out["timeout"] = str(comm.timeout)
        x = filled(SMALL)
        r2, _ = attempt(lambda: comm.allreduce(x), "use")
        out.update(r2)
        out["use_right"] = right(x)
        comm.finalize()
    out.update(after(rr.init()))  # the default communicator is untouched
    return out


@case("creation")
def creation_timeout_inf():
    return _create_with(float("inf"))


@case("creation")
def creation_timeout_none():
    return _create_with(None)


@case("creation")
def creation_timeout_nan():
    return _create_with(float("nan"))


@case("creation")
def creation_timeout_negative():
    return _create_with(-1)


@case("creation")
def creation_timeout_string():
    return _create_with("abc")


@case("creation")
def creation_timeout_zero():
    return _create_with(0)


@case("creation")
def creation_timeout_bool():
    return _create_with(True)


@case("creation")
def creation_timeout_setter_rejects_nan():
    comm = fresh()
    res, _ = attempt(lambda: setattr(comm, "timeout", float("nan")))
    res["timeout_after"] = comm.timeout
    return close(comm, res)


@case("creation")
def creation_env_timeout_malformed():
    os.environ["RINGREDUCE_TIMEOUT"] = "soon"
    try:
        res, _ = attempt(lambda: rr.new_communicator())
    finally:
        del os.environ["RINGREDUCE_TIMEOUT"]
    res.update(after(rr.init()))
    return res


@case("creation")
def creation_absent_rank():
    """The last rank never calls new_communicator. Last in its launch: the
    abandoned creation leaves MPI's own duplication pending on the others."""
    out = {"role": "absent" if R == LAST else "creates"}
    if R == LAST:
        time.sleep(3.5)
    else:
        res, comm = attempt(lambda: rr.new_communicator(timeout=3))
        out.update(res)
        if comm is not None:
            comm.finalize()
    out.update(after(rr.init()))
    return out


# -- sizes -------------------------------------------------------------------------------------
def _sizes_case(body, deviants=(DEVIANT,)):
    comm = fresh()
    res, value = attempt(lambda: body(comm))
    res["right"] = bool(value) if res["error"] is None else None
    res["role"] = "deviant" if R in deviants else "others"
    return close(comm, res)


def _allgather_with(sizes_of_deviant):
    def body(comm):
        x = filled(4)
        sizes = [4] * N
        if R == DEVIANT:
            sizes = sizes_of_deviant(sizes)
        got = comm.allgather(x, sizes=sizes)
        return bool(np.array_equal(got, np.repeat(np.arange(1, N + 1, dtype=np.float32), 4)))
    return body


def _set(i, v):
    def f(s):
        s = list(s)
        s[i] = v
        return s
    return f


@case("sizes")
def sizes_allgather_negative_one_rank():
    return _sizes_case(_allgather_with(_set(0, -4)))


@case("sizes")
def sizes_allgather_overflowing_one_rank():
    return _sizes_case(_allgather_with(_set(0, 2**63 - 1)))


@case("sizes")
def sizes_allgather_beyond_int64_one_rank():
    return _sizes_case(_allgather_with(_set(0, 2**64 + 4)))


@case("sizes")
def sizes_allgather_sum_wraps_int64_one_rank():
    return _sizes_case(_allgather_with(lambda s: [4 if i == DEVIANT else 2**62 for i in range(N)]))


@case("sizes")
def sizes_allgather_lists_disagree_one_rank():
    """DEVIANT's list is consistent with its own count but not with the
    others' counts (it expects one element more from rank 0)."""
    return _sizes_case(_allgather_with(_set(0, 5)))


@case("sizes")
def sizes_allgather_lists_disagree_fewer():
    return _sizes_case(_allgather_with(_set(0, 3)))


@case("sizes")
def sizes_allgather_lists_disagree_fewer_large():
    """As above with 64 Ki elements per rank: the message no longer fits the
    receive MPI was given (rendezvous, not eager)."""
    def body(comm):
        n = 1 << 16
        x = filled(n)
        sizes = [n] * N
        if R == DEVIANT:
            sizes[0] = n - 1000
        got = comm.allgather(x, sizes=sizes)
        return R == DEVIANT or bool(np.array_equal(
            got, np.repeat(np.arange(1, N + 1, dtype=np.float32), n)))
    return _sizes_case(body)


@case("sizes")
def sizes_allgather_exchanged_counts_differ():
    """No sizes given: counts differ per rank, which allgather allows."""
    def body(comm):
        x = filled(3 + R)
        got = comm.allgather(x)
        want = np.concatenate([np.full(3 + q, q + 1, np.float32) for q in range(N)])
        return bool(np.array_equal(got, want))
    return _sizes_case(body)


def _reduce_scatter_out(bad_ranks, wrong):
    """DEVIANT's (or bad_ranks') out= has the wrong size or dtype."""
    def body(comm):
        x = filled(10 * N + 1)
        mine = 10 + (1 if R == 0 else 0)
        out = wrong(mine) if R in bad_ranks else np.empty(mine, np.float32)
        got = comm.reduce_scatter(x, out=out)
        return right(got)
    return body


@case("sizes")
def sizes_reduce_scatter_out_too_small_one_rank():
    return _sizes_case(_reduce_scatter_out({DEVIANT}, lambda m: np.empty(m - 1, np.float32)))


@case("sizes")
def sizes_reduce_scatter_out_too_large_some_ranks():
    return _sizes_case(_reduce_scatter_out(set(range(N - 1)),
                                           lambda m: np.empty(m + 5, np.float32)),
                       deviants=set(range(N - 1)))


@case("sizes")
def sizes_reduce_scatter_out_wrong_dtype_one_rank():
    return _sizes_case(_reduce_scatter_out({DEVIANT}, lambda m: np.empty(m, np.float64)))


@case("sizes")
def sizes_reduce_scatter_input_counts_differ():
    def body(comm):
        x = filled(10 * N + (3 if R == DEVIANT else 0))
        return right(comm.reduce_scatter(x))
    return _sizes_case(body)


# -- timeouts ----------------------------------------------------------------------------------
class SleeperCase:
    """The last rank sleeps past the timeout before its call; the others
    must raise CollectiveTimeout. The cases run side by side on
    communicators of their own (each would otherwise cost its sleep)."""
    parallel = True

    def __init__(self, name, call, async_op=False):
        self.__name__, self.call, self.async_op = name, call, async_op

    def prepare(self):
        return fresh(), None

    def body(self, comm):
        out = {"role": "sleeps" if R == LAST else "waits"}
        x = filled(1 << 16)
        if R == LAST:
            time.sleep(T + 1.5)
        if self.async_op:
            res, _ = attempt(lambda: self.call(comm, x, True).wait())
        else:
            res, _ = attempt(lambda: self.call(comm, x, False))
        out.update(res)
        return out


CASES["timeout"] = [
    SleeperCase("timeout_sleeping_rank_allreduce", lambda c, x, a: c.allreduce(x, async_op=a)),
    SleeperCase("timeout_sleeping_rank_barrier", lambda c, x, a: c.barrier()),
    SleeperCase("timeout_sleeping_rank_broadcast",
                lambda c, x, a: c.broadcast(x, root=LAST, async_op=a)),
    SleeperCase("timeout_sleeping_rank_async_wait",
                lambda c, x, a: c.allreduce(x, async_op=a), async_op=True),
]


# -- read-only memory --------------------------------------------------------------------------
def _readonly(call):
    comm = fresh()
    res, _ = attempt(lambda: call(comm))
    return close(comm, res)


def _ro(count=16, dtype=np.float32):
    a = np.ones(count, dtype)
    a.flags.writeable = False
    return a


@case("readonly")
def readonly_bytes_allreduce():
    return _readonly(lambda c: c.allreduce(bytes(16)))


@case("readonly")
def readonly_memoryview_of_bytes_allreduce():
    return _readonly(lambda c: c.allreduce(memoryview(bytes(16))))


@case("readonly")
def readonly_numpy_allreduce():
    return _readonly(lambda c: c.allreduce(_ro()))


@case("readonly")
def readonly_numpy_allreduce_module_level():
    """The module-level call on the default communicator (the latency path)."""
    res, _ = attempt(lambda: rr.allreduce(_ro()))
    res.update(after(rr.init()))
    return res


@case("readonly")
def readonly_numpy_async_allreduce():
    return _readonly(lambda c: c.allreduce(_ro(), async_op=True).wait())


@case("readonly")
def readonly_numpy_broadcast():
    return _readonly(lambda c: c.broadcast(_ro(), root=0))


@case("readonly")
def readonly_bytes_broadcast():
    return _readonly(lambda c: c.broadcast(b"\0" * 16, root=0))


@case("readonly")
def readonly_out_reduce_scatter():
    return _readonly(lambda c: c.reduce_scatter(np.ones(4 * N, np.float32), out=_ro(4)))


@case("readonly")
def readonly_out_allgather():
    return _readonly(lambda c: c.allgather(np.ones(4, np.float32), out=_ro(4 * N)))


@case("readonly")
def readonly_input_with_writable_out_is_fine():
    def call(c):
        x = _ro(16)
        out = np.empty(16, np.float32)
        c.allreduce(x, out=out)
        if not right(out, N) or not right(x, 1.0):
            raise AssertionError(f"out {out[:3]} x {x[:3]}")
    return _readonly(call)


@case("readonly")
def readonly_bytes_allgather_input_is_fine():
    def call(c):
        got = c.allgather(bytes([R + 1]) * 4)
        if list(got) != [q + 1 for q in range(N) for _ in range(4)]:
            raise AssertionError(f"allgather of bytes gave {list(got)}")
    return _readonly(call)


# -- signals -----------------------------------------------------------------------------------
signal.signal(signal.SIGINT, signal.default_int_handler)  # mpirun may start ranks ignoring it


def _interrupted(call, late=LAST, victim=0, delay=1.0):
    comm = fresh(timeout=10.0)
    out = {"role": "victim" if R == victim else "late" if R == late else "waits"}
    x = filled(1 << 12)
    if R == late:
        time.sleep(delay + 2.6)  # after an interrupt within ~1 s, before one at 2 s
    sent = []
    if R == victim:
        def fire():
            sent.append(time.monotonic())
            os.kill(os.getpid(), signal.SIGINT)
        threading.Timer(delay, fire).start()
    try:
        res, _ = attempt(lambda: call(comm, x))
    except KeyboardInterrupt:  # landed outside the call: that is a finding too
        res = {"error": "KeyboardInterrupt-outside", "message": "", "seconds": None}
    if sent:
        res["after_signal"] = round(time.monotonic() - sent[0] - 0.0, 3)
        if res["error"] is None:
            res["after_signal"] = None  # the call returned; no interruption seen
    out.update(res)
    return close(comm, out)


@case("signal")
def signal_sigint_blocking_allreduce():
    return _interrupted(lambda c, x: c.allreduce(x))


@case("signal")
def signal_sigint_barrier():
    return _interrupted(lambda c, x: c.barrier())


@case("signal")
def signal_sigint_work_wait():
    return _interrupted(lambda c, x: c.allreduce(x, async_op=True).wait())


@case("signal")
def signal_sigint_blocking_allreduce_small():
    """8 elements: every message is eager, nothing is left to cancel."""
    return _interrupted(lambda c, x: c.allreduce(x[:8]))


# -- fork --------------------------------------------------------------------------------------
def _forked(child_body):
    """Every rank forks; the child runs child_body and reports through a pipe;
    the parent then runs a collective with its peers."""
    rr.allreduce(filled(SMALL))  # the default communicator is in use before the fork
    rfd, wfd = os.pipe()
    t0 = time.monotonic()
    pid = os.fork()
    if pid == 0:
        os.close(rfd)
        try:
            res = child_body()
        except BaseException as e:  # noqa: BLE001
            res = {"child_crash": f"{type(e).__name__}: {e}"}
        os.write(wfd, json.dumps(res, default=str).encode())
        os.close(wfd)
        os._exit(0)
    os.close(wfd)
    chunks = []
    while True:
        b = os.read(rfd, 65536)
        if not b:
            break
        chunks.append(b)
    os.close(rfd)
    _, status = os.waitpid(pid, 0)
    out = {"child": json.loads(b"".join(chunks) or b"{}"), "child_status": status,
           "child_seconds": round(time.monotonic() - t0, 3)}
    x = filled(SMALL)
    res, _ = attempt(lambda: rr.allreduce(x), "parent")
    out.update(res)
    out["parent_right"] = right(x)
    out.update(after(rr.init()))
    return out


@case("fork")
def fork_child_allreduce_clear_error():
    def child():
        r, _ = attempt(lambda: rr.allreduce(filled(SMALL)))
        return r
    return _forked(child)


@case("fork")
def fork_child_barrier_clear_error():
    def child():
        r, _ = attempt(rr.barrier)
        return r
    return _forked(child)


@case("fork")
def fork_child_async_allreduce_clear_error():
    def child():
        r, _ = attempt(lambda: rr.allreduce(filled(SMALL), async_op=True).wait())
        return r
    return _forked(child)


@case("fork")
def fork_child_exit_handlers_harmless():
    """The child exits normally: its exit handlers (finalize every
    communicator, then MPI) must leave the parent's connections alone."""
    def child():
        import atexit
        r, _ = attempt(atexit._run_exitfuncs)
        return r
    return _forked(child)


# -- finalize race -----------------------------------------------------------------------------
class RaceCase:
    """finalize() from other threads while the main body of the case waits
    in a call. The cases run side by side, each on a communicator of its own
    (a rank whose peer finalized waits out its timeout in the check after)."""
    parallel = True

    def __init__(self, name, call, finalizers=(0,), delay=0.3, late_by=1.0, count=1 << 16,
                 threads=1):
        self.__name__, self.call, self.finalizers = name, call, finalizers
        self.delay, self.late_by, self.count, self.threads = delay, late_by, count, threads

    def prepare(self):
        return fresh(), None

    def body(self, comm):
        out = {"role": "finalizes" if R in self.finalizers else "late" if R == LAST else "waits"}
        x = filled(self.count)
        fins = []

        def go():
            time.sleep(self.delay)
            r, _ = attempt(comm.finalize)
            fins.append(r)
        threads = [threading.Thread(target=go) for _ in range(self.threads)] \
            if R in self.finalizers else []
        for t in threads:
            t.start()
        if R == LAST:
            time.sleep(self.late_by)
        res, value = attempt(lambda: self.call(comm, x))
        out.update(res)
        out["right"] = res["error"] is None and (isinstance(value, str) or right(x))
        for t in threads:
            t.join()
        out["thread_finalize_errors"] = [f["error"] for f in fins]
        out["thread_finalize_seconds"] = [f["seconds"] for f in fins]
        return out


def _barrier(c, x):
    c.barrier()
    return "no data"


CASES["finalize_race"] = [
    RaceCase("finalize_race_blocking_allreduce", lambda c, x: c.allreduce(x)),
    RaceCase("finalize_race_allreduce_moving_data", lambda c, x: c.allreduce(x),
             delay=0.05, late_by=0.0, count=8 << 20),  # 32 MiB moving when the finalize comes
    RaceCase("finalize_race_work_wait", lambda c, x: c.allreduce(x, async_op=True).wait()),
    RaceCase("finalize_race_barrier", _barrier),
    RaceCase("finalize_race_every_rank_finalizes", lambda c, x: c.allreduce(x),
             finalizers=tuple(range(32))),
    RaceCase("finalize_race_concurrent_finalize_calls", lambda c, x: c.allreduce(x),
             finalizers=tuple(range(32)), delay=0.2, threads=3),
]


# -- autograd ----------------------------------------------------------------------------------
def _torch():
    import torch
    return torch


@case("autograd")
def autograd_inplace_bumps_version_blocking():
    torch = _torch()
    t = torch.full((8,), float(R + 1))
    v0 = t._version
    rr.allreduce(t)
    return {"bumped": t._version > v0, "right": right(t.numpy()), **after(rr.init())}


@case("autograd")
def autograd_inplace_bumps_version_async():
    torch = _torch()
    t = torch.full((8,), float(R + 1))
    v0 = t._version
    rr.allreduce(t, async_op=True).wait()
    return {"bumped": t._version > v0, "right": right(t.numpy()), **after(rr.init())}


@case("autograd")
def autograd_broadcast_bumps_version():
    torch = _torch()
    t = torch.full((8,), float(R + 1))
    v0 = t._version
    rr.broadcast(t, root=0)
    return {"bumped": t._version > v0, "right": right(t.numpy(), 1.0), **after(rr.init())}


@case("autograd")
def autograd_saved_tensor_backward_raises():
    torch = _torch()
    a = torch.ones(8, requires_grad=True)
    b = a * 2
    loss = (b * b).sum()  # saves b for backward
    v0 = b._version
    res, _ = attempt(lambda: rr.allreduce(b), "reduce")
    res["bumped"] = b._version > v0
    r2, _ = attempt(loss.backward, "backward")
    res.update(r2)
    res.update(after(rr.init()))
    return res


@case("autograd")
def autograd_leaf_requiring_grad_refused_in_place():
    torch = _torch()
    a = torch.full((8,), float(R + 1), requires_grad=True)
    res, _ = attempt(lambda: rr.allreduce(a))
    res["untouched"] = right(a.detach().numpy(), R + 1.0)
    res.update(after(rr.init()))
    return res


@case("autograd")
def autograd_leaf_requiring_grad_with_out_is_fine():
    torch = _torch()
    a = torch.full((8,), float(R + 1), requires_grad=True)
    out = torch.empty(8)
    res, _ = attempt(lambda: rr.allreduce(a, out=out))
    res["right"] = right(out.numpy())
    res.update(after(rr.init()))
    return res


@case("autograd")
def autograd_leaf_refused_on_one_rank_only():
    torch = _torch()
    comm = fresh()
    a = torch.full((8,), float(R + 1), requires_grad=R == DEVIANT)
    res, _ = attempt(lambda: comm.allreduce(a))
    res["role"] = "deviant" if R == DEVIANT else "others"
    return close(comm, res)


def _torch_f16_bf16(count):
    """The dtype mismatch through the public API, with real bfloat16 tensors."""
    torch = _torch()
    comm = fresh()
    t = torch.ones(count, dtype=torch.bfloat16 if R == DEVIANT else torch.float16)
    res, _ = attempt(lambda: comm.allreduce(t))
    res["right"] = res["error"] is None and bool((t == N).all())
    res["role"] = "deviant" if R == DEVIANT else "others"
    return close(comm, res)


@case("autograd")
def autograd_mismatch_float16_bfloat16_torch_small():
    return _torch_f16_bf16(SMALL)


@case("autograd")
def autograd_mismatch_float16_bfloat16_torch_large():
    return _torch_f16_bf16(LARGE)


# -- exit codes (one scenario per launch; MODE names it) ---------------------------------------
def exit_scenario():
    x = filled(100 + (7 if R == DEVIANT else 0))
    comm = rr.init()
    if MODE.startswith("mismatch"):
        try:
            comm.allreduce(x)
        except rr.CollectiveMismatch as e:
            report("exit", error=type(e).__name__, message=str(e)[:200])
        else:
            report("exit", error=None, problems=["no CollectiveMismatch"])
    elif MODE.startswith("timeout"):
        if R == LAST:
            time.sleep(T + 1.5)
        try:
            comm.allreduce(filled(100))
        except rr.RingReduceError as e:
            report("exit", error=type(e).__name__, message=str(e)[:200])
        else:
            report("exit", error=None)
    if MODE.endswith("_finalize"):
        rr.finalize()
    if MODE.endswith("_status3"):
        sys.exit(3)


# -- the run -----------------------------------------------------------------------------------
def lookup(known, name):
    """The case called `name`; <case>@<algo> is a mismatch case under RINGREDUCE_ALGO=<algo>."""
    if name is None or name in known:
        return known.get(name)
    base, _, algo = name.partition("@")
    field_size = base[len("mismatch_"):] if base.startswith("mismatch_") else ""
    field_name, _, size_name = field_size.rpartition("_")
    if algo and field_name in MISMATCH_FIELDS and size_name in ("small", "large"):
        return MismatchCase(field_name, size_name, algo)
    if algo and base in known:
        def forced():
            os.environ["RINGREDUCE_ALGO"] = algo
            try:
                return known[base]()
            finally:
                os.environ["RINGREDUCE_ALGO"] = ""
        return forced
    return None


def main():
    global LOST_PEER
    if GROUP == "exit":
        exit_scenario()
        return
    if GROUP == "autograd":
        try:
            _torch()
        except ImportError:
            for fn in CASES[GROUP]:
                report(fn.__name__, skipped="torch is not importable")
            return
    known = {fn.__name__: fn for fn in CASES[GROUP]}
    names = MODE.split(",") if MODE else list(known)
    batch = []
    for name in names + [None]:
        fn = lookup(known, name)
        if fn is not None and getattr(fn, "parallel", False) and \
                (not batch or getattr(batch[0], "batch", None) == getattr(fn, "batch", None)):
            batch.append(fn)
            continue
        if batch:
            run_parallel(batch)
            batch = []
            if fn is not None and getattr(fn, "parallel", False):
                batch.append(fn)
                continue
        if name is None:
            break
        if fn is None:
            report(name, crash=f"no case {name} in group {GROUP}")
            continue
        t0 = time.monotonic()
        try:
            res = fn() or {}
        except BaseException:  # noqa: BLE001 - a crash of the case is its result
            res = {"crash": traceback.format_exc()[-1500:]}
        res["case_seconds"] = round(time.monotonic() - t0, 3)
        report(name, **res)
    t0 = time.monotonic()
    problems = finalize_parked()
    report("_end", seconds=round(time.monotonic() - STARTED, 3), parked=len(PARKED),
           parked_finalize_seconds=round(time.monotonic() - t0, 3), problems=problems)
    if not LOST_PEER and GROUP != "creation":
        # Every rank got here: else MPI_Finalize would wait 30 s for a lost one.
        try:
            rr.new_communicator(timeout=10).finalize()
        except rr.CollectiveTimeout:
            LOST_PEER = True
    if LOST_PEER:
        os._exit(70)
    if GROUP != "creation":
        rr.finalize()


main()
