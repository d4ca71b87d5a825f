"""torch.distributed's collective API on CPU tensors, call by call, over a gloo
group and a "ringreduce" group of the same ranks, in one launch.

    mpirun -np N python tests/workers/torch_c10d.py mpirun      (MASTER_ADDR/PORT set)
    torchrun --nproc-per-node N tests/workers/torch_c10d.py torchrun
    python tests/workers/torch_c10d.py plain RANK N INIT_METHOD  (file:// or tcp://)

The default group is ringreduce's (rt.init_process_group under mpirun, env://
under torchrun, INIT_METHOD otherwise); gloo's is a new_group of all ranks.
Every rank writes one line per call and backend,
RESULT {"call", "rank", "backend", "ok", "value" or "error", "expected"},
to $TORCH_C10D_OUT/rank<r>.txt when that folder is set (output of ranks
sharing a pipe can interleave), else to stdout.
"""
from __future__ import annotations

import datetime
import json
import os
import sys
import traceback

import torch
import torch.distributed as dist

import ringreduce.torch as rt

TIMEOUT = datetime.timedelta(seconds=40)
CALLS = {}


def call(fn):
    CALLS[fn.__name__] = fn
    return fn


def vals(t):
    return t.tolist() if isinstance(t, torch.Tensor) else [vals(x) for x in t]


def tri(n):
    return n * (n + 1) // 2


# Each call returns (value, expected) for this rank; value None where the
# call defines nothing on this rank (reduce off the root, gather off the dst).
def _all_reduce(op, dtype=torch.float32, make=None, expect=None):
    def run(g, name, r, n):
        t = (make or (lambda q: torch.tensor([q + 1, 2 * q + 1, 3], dtype=dtype)))(r)
        dist.all_reduce(t, op=op, group=g)
        return vals(t), expect(n)
    return run


def _sum_expect(n):
    return [tri(n), n * n, 3 * n]


for _name, _op, _exp in [
        ("sum", dist.ReduceOp.SUM, _sum_expect),
        ("product", dist.ReduceOp.PRODUCT,
         lambda n: [float(torch.arange(1, n + 1).prod()),
                    float(torch.arange(n).mul(2).add(1).prod()), 3.0 ** n]),
        ("min", dist.ReduceOp.MIN, lambda n: [1, 1, 3]),
        ("max", dist.ReduceOp.MAX, lambda n: [n, 2 * n - 1, 3]),
        ("avg", dist.ReduceOp.AVG, lambda n: [tri(n) / n, n, 3])]:
    CALLS[f"all_reduce_{_name}"] = _all_reduce(_op, expect=_exp)


def _bits(q):
    return torch.tensor([0b1100 | (1 << q), 0b0110 ^ q, 7 << q], dtype=torch.int64)


def _fold(f, n):
    out = _bits(0)
    for q in range(1, n):
        out = f(out, _bits(q))
    return out.tolist()


CALLS["all_reduce_band_int64"] = _all_reduce(dist.ReduceOp.BAND, make=_bits,
                                             expect=lambda n: _fold(torch.bitwise_and, n))
CALLS["all_reduce_bor_int64"] = _all_reduce(dist.ReduceOp.BOR, make=_bits,
                                            expect=lambda n: _fold(torch.bitwise_or, n))
CALLS["all_reduce_bxor_int64"] = _all_reduce(dist.ReduceOp.BXOR, make=_bits,
                                             expect=lambda n: _fold(torch.bitwise_xor, n))
CALLS["all_reduce_bor_bool"] = _all_reduce(
    dist.ReduceOp.BOR, make=lambda q: torch.tensor([q == 0, False, True]),
    expect=lambda n: [True, False, True])
CALLS["all_reduce_premul_sum_float"] = _all_reduce(
    dist._make_nccl_premul_sum(0.5), expect=lambda n: [x * 0.5 for x in _sum_expect(n)])
CALLS["all_reduce_premul_sum_tensor"] = _all_reduce(
    dist._make_nccl_premul_sum(torch.tensor(2.0)),
    expect=lambda n: [x * 2.0 for x in _sum_expect(n)])
for _dt in ["float16", "bfloat16", "float64", "int8", "uint8", "int16", "int32", "int64",
            "uint16", "uint32", "uint64"]:
    CALLS[f"all_reduce_sum_{_dt}"] = _all_reduce(dist.ReduceOp.SUM, getattr(torch, _dt),
                                                 expect=_sum_expect)
CALLS["all_reduce_max_bool"] = _all_reduce(
    dist.ReduceOp.MAX, make=lambda q: torch.tensor([q == 1, False, True]),
    expect=lambda n: [n > 1, False, True])


@call
def all_reduce_async(g, name, r, n):
    t = torch.full((1000,), float(r + 1))
    w = dist.all_reduce(t, group=g, async_op=True)
    w.wait()
    return [t[0].item(), t[-1].item(), bool(w.is_completed())], [tri(n), tri(n), True]


@call
def all_reduce_coalesced(g, name, r, n):
    ts = [torch.tensor([r + 1.0, 1.0]), torch.tensor([float(r)]), torch.ones(3)]
    dist.all_reduce_coalesced(ts, group=g)
    return vals(ts), [[float(tri(n)), float(n)], [float(tri(n - 1))], [float(n)] * 3]


@call
def all_gather_coalesced(g, name, r, n):
    outs = [[torch.empty(2), torch.empty(1)] for _ in range(n)]  # [rank][input]
    dist.all_gather_coalesced(outs, [torch.tensor([r, -1.0]), torch.tensor([7.0 * r])], group=g)
    return vals(outs), [[[float(q), -1.0], [7.0 * q]] for q in range(n)]


@call
def broadcast(g, name, r, n):
    t = torch.full((4,), float(r))
    dist.broadcast(t, src=n - 1, group=g)
    return vals(t), [float(n - 1)] * 4


@call
def all_gather(g, name, r, n):
    outs = [torch.empty(2) for _ in range(n)]
    dist.all_gather(outs, torch.tensor([r, 10.0 * r]), group=g)
    return vals(outs), [[q, 10.0 * q] for q in range(n)]


@call
def all_gather_into_tensor(g, name, r, n):
    out = torch.empty(2 * n, dtype=torch.int64)
    dist.all_gather_into_tensor(out, torch.tensor([r, 10 * r]), group=g)
    return vals(out), [v for q in range(n) for v in (q, 10 * q)]


@call
def reduce_scatter(g, name, r, n):
    out = torch.empty(2)
    dist.reduce_scatter(out, [torch.tensor([q, 1.0]) * (r + 1) for q in range(n)], group=g)
    return vals(out), [float(r * tri(n)), float(tri(n))]


@call
def reduce_scatter_tensor(g, name, r, n):
    out = torch.empty(2)
    dist.reduce_scatter_tensor(out, torch.arange(2.0 * n) * (r + 1), group=g)
    return vals(out), [2.0 * r * tri(n), (2.0 * r + 1) * tri(n)]


@call
def reduce(g, name, r, n):
    t = torch.tensor([r + 1.0, 2.0])
    dist.reduce(t, dst=n - 1, group=g)
    return (vals(t), [float(tri(n)), 2.0 * n]) if r == n - 1 else (None, None)


@call
def reduce_max(g, name, r, n):
    t = torch.tensor([r + 1, -r], dtype=torch.int32)
    dist.reduce(t, dst=0, op=dist.ReduceOp.MAX, group=g)
    return (vals(t), [n, 0]) if r == 0 else (None, None)


@call
def gather(g, name, r, n):
    outs = [torch.empty(3) for _ in range(n)] if r == 0 else None
    dist.gather(torch.full((3,), float(r)), outs, dst=0, group=g)
    return (vals(outs), [[float(q)] * 3 for q in range(n)]) if r == 0 else (None, None)


@call
def scatter(g, name, r, n):
    src = n - 1
    ins = [torch.tensor([q, 100.0 + q]) for q in range(n)] if r == src else None
    out = torch.empty(2)
    dist.scatter(out, ins, src=src, group=g)
    return vals(out), [float(r), 100.0 + r]


def _ring_peers(r, n):
    return (r + 1) % n, (r - 1) % n


@call
def send_recv(g, name, r, n):
    to, frm = _ring_peers(r, n)
    got = torch.empty(3)
    # Even ranks send first, odd ranks receive first: blocking calls cannot deadlock.
    if r % 2 == 0:
        dist.send(torch.full((3,), float(r)), dst=to, group=g)
        dist.recv(got, src=frm, group=g)
    else:
        dist.recv(got, src=frm, group=g)
        dist.send(torch.full((3,), float(r)), dst=to, group=g)
    return vals(got), [float(frm)] * 3


@call
def send_recv_tag(g, name, r, n):
    to, frm = _ring_peers(r, n)
    got = torch.empty(3)
    ws = [dist.isend(torch.full((3,), float(r)), dst=to, group=g, tag=40 + r),
          dist.irecv(got, src=frm, group=g, tag=40 + frm)]
    for w in ws:
        w.wait()
    return vals(got), [float(frm)] * 3


@call
def recv_any_source(g, name, r, n):
    # Group rank 0 takes one message from every other rank, whichever comes first.
    me = dist.get_rank(g)
    if me == 0:
        got = []
        for _ in range(n - 1):
            t = torch.empty(2)
            src = dist.recv(t, group=g)  # a global rank
            got.append([src, vals(t)])
        got.sort()
        return got, [[dist.get_global_rank(g, q), [float(q)] * 2] for q in range(1, n)]
    dist.send(torch.full((2,), float(me)), dst=dist.get_global_rank(g, 0), group=g)
    return None, None


@call
def isend_irecv(g, name, r, n):
    to, frm = _ring_peers(r, n)
    got = torch.empty(2, dtype=torch.int64)
    ws = [dist.isend(torch.tensor([r, -r]), dst=to, group=g),
          dist.irecv(got, src=frm, group=g)]
    for w in ws:
        w.wait()
    return vals(got), [frm, -frm]


@call
def batch_isend_irecv(g, name, r, n):
    to, frm = _ring_peers(r, n)
    got = torch.empty(4)
    ops = [dist.P2POp(dist.isend, torch.arange(4.0) + r, to, g),
           dist.P2POp(dist.irecv, got, frm, g)]
    for w in dist.batch_isend_irecv(ops):
        w.wait()
    return vals(got), vals(torch.arange(4.0) + frm)


@call
def all_to_all(g, name, r, n):
    ins = [torch.tensor([10.0 * r + q, -1.0]) for q in range(n)]
    outs = [torch.empty(2) for q in range(n)]
    dist.all_to_all(outs, ins, group=g)
    return vals(outs), [[10.0 * q + r, -1.0] for q in range(n)]


@call
def all_to_all_uneven(g, name, r, n):
    # Uneven: rank r sends q + r + 1 elements of value 10 r + q to rank q.
    ins = [torch.full((q + r + 1,), 10.0 * r + q) for q in range(n)]
    outs = [torch.empty(r + q + 1) for q in range(n)]
    dist.all_to_all(outs, ins, group=g)
    return vals(outs), [[10.0 * q + r] * (r + q + 1) for q in range(n)]


@call
def all_to_all_single_even(g, name, r, n):
    out = torch.empty(2 * n)
    dist.all_to_all_single(out, torch.arange(2.0 * n) + 100 * r, group=g)
    return vals(out), [100.0 * q + 2 * r + k for q in range(n) for k in range(2)]


@call
def all_to_all_single_uneven(g, name, r, n):
    # Rows of 2: rank r sends q + 1 rows to rank q; it gets r + 1 rows from each.
    ins = torch.cat([torch.full((q + 1, 2), 10.0 * r + q) for q in range(n)])
    out = torch.empty(n * (r + 1), 2)
    dist.all_to_all_single(out, ins, output_split_sizes=[r + 1] * n,
                           input_split_sizes=[q + 1 for q in range(n)], group=g)
    return vals(out), [[10.0 * q + r] * 2 for q in range(n) for _ in range(r + 1)]


@call
def barrier(g, name, r, n):
    dist.barrier(group=g)
    return True, True


@call
def all_gather_object(g, name, r, n):
    out = [None] * n
    dist.all_gather_object(out, {"rank": r, "s": "x" * r}, group=g)
    return out, [{"rank": q, "s": "x" * q} for q in range(n)]


@call
def broadcast_object_list(g, name, r, n):
    objs = [r, {"from": r}, "abc" * r] if r == 0 else [None, None, None]
    dist.broadcast_object_list(objs, src=0, group=g)
    return objs, [0, {"from": 0}, ""]


@call
def gather_object(g, name, r, n):
    out = [None] * n if r == 0 else None
    dist.gather_object(("r", r), out, dst=0, group=g)
    return ([list(o) for o in out], [["r", q] for q in range(n)]) if r == 0 else (None, None)


@call
def scatter_object_list(g, name, r, n):
    out = [None]
    dist.scatter_object_list(out, [{"to": q} for q in range(n)] if r == 0 else None, src=0,
                             group=g)
    return out, [{"to": r}]


def _subgroup(ranks_of):
    def run(g, name, r, n):
        ranks = ranks_of(n)
        sub = dist.new_group(ranks, backend=name, timeout=TIMEOUT)
        if r not in ranks:
            return None, None
        t = torch.tensor([r + 1.0])
        dist.all_reduce(t, group=sub)
        return vals(t), [float(sum(q + 1 for q in ranks))]
    return run


CALLS["new_group_all_ranks"] = _subgroup(lambda n: list(range(n)))
CALLS["new_group_rank0"] = _subgroup(lambda n: [0])
CALLS["new_group_last_rank"] = _subgroup(lambda n: [n - 1])


def init(mode: str) -> tuple:
    if mode == "mpirun":
        rt.init_process_group(timeout=TIMEOUT)
    elif mode == "torchrun":
        dist.init_process_group("ringreduce", timeout=TIMEOUT)
    else:
        r, n, method = int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
        dist.init_process_group("ringreduce", init_method=method, rank=r, world_size=n,
                                timeout=TIMEOUT)
    assert dist.get_backend() == "ringreduce", dist.get_backend()
    return dist.get_rank(), dist.get_world_size()


def main() -> None:
    r, n = init(sys.argv[1])
    groups = [("gloo", dist.new_group(backend="gloo", timeout=TIMEOUT)),
              ("ringreduce", dist.group.WORLD)]
    only = os.environ.get("TORCH_C10D_CALLS")
    folder = os.environ.get("TORCH_C10D_OUT")
    sink = open(os.path.join(folder, f"rank{r}.txt"), "w") if folder else sys.stdout
    for cname, fn in CALLS.items():
        if only and cname not in only.split(","):
            continue
        for bname, g in groups:
            entry = {"call": cname, "rank": r, "backend": bname}
            try:
                value, expected = fn(g, bname, r, n)
                entry.update(ok=True, value=value, expected=expected)
            except Exception as e:  # noqa: BLE001 - recorded per call
                entry.update(ok=False, error=f"{type(e).__name__}: {e}"[:400],
                             mro=[c.__name__ for c in type(e).__mro__],
                             where=traceback.format_exc(limit=-2)[-600:])
            print("RESULT " + json.dumps(entry, default=repr), file=sink, flush=True)
    if folder:
        sink.close()
    dist.barrier(group=groups[0][1])
    dist.destroy_process_group()
    print(f"rank {r}: DONE", flush=True)


if __name__ == "__main__":
    main()
