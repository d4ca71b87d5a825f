"""Multi-rank checks of ringreduce.torch, run by tests/test_torch_integration.py
under mpirun: python tests/torch_worker.py MODE... (MODE: hook, backend, optimizer;
several run one after the other in the same processes).

Each check trains a small model for STEPS steps on equal shards of a batch and
compares the parameters with a single-process full-batch reference computed
here without communication, then checks every rank holds the same bits.
Any failure raises, so the rank exits non-zero and mpirun fails."""
from __future__ import annotations

import copy
import os
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F

import ringreduce as rr
import ringreduce.torch as rt

STEPS = 5
SHARD = 6          # rows per rank per micro-batch
TOL = dict(rtol=1e-5, atol=1e-6)

torch.set_num_threads(1)


class Net(nn.Module):
    def __init__(self, branch: bool = False) -> None:
        super().__init__()
        self.fc1 = nn.Linear(8, 16)
        self.fc2 = nn.Linear(16, 4)
        self.branch = nn.Linear(16, 4) if branch else None

    def forward(self, x, use_branch: bool = False):
        h = torch.tanh(self.fc1(x))
        y = self.fc2(h)
        if use_branch:
            y = y + self.branch(h)
        return y


def make_net(branch: bool = False, seed: int = 7) -> Net:
    torch.manual_seed(seed)
    return Net(branch)


def batch(step: int, rows: int):
    g = torch.Generator().manual_seed(1000 + step)
    return torch.randn(rows, 8, generator=g), torch.randn(rows, 4, generator=g)


def shard(t: torch.Tensor, r: int, micro: int = 0, n: int = 1) -> torch.Tensor:
    # Micro-batch `micro` of rank r: the block (micro * n + r).
    i = micro * n + r
    return t[i * SHARD:(i + 1) * SHARD]


def reference(model0, make_opt, n, *, steps=STEPS, micro=1, branch_rank=None, clip=None,
              before_step=None):
    """Full-batch training without communication."""
    m = copy.deepcopy(model0)
    opt = make_opt(m.parameters())
    for s in range(steps):
        opt.zero_grad()
        x, y = batch(s, SHARD * n * micro)
        if branch_rank is None:
            loss = F.mse_loss(m(x), y)
        else:
            # The loss DDP-style training optimises: the mean of the ranks'
            # losses, where only one rank per step uses the branch.
            loss = sum(F.mse_loss(m(shard(x, r), use_branch=(r == branch_rank(s))), shard(y, r))
                       for r in range(n)) / n
        loss.backward()
        if clip is not None:
            torch.nn.utils.clip_grad_norm_(m.parameters(), clip)
        opt.step()
    return m


def assert_close(name, model, ref, **tol):
    for (pn, p), q in zip(model.named_parameters(), ref.parameters()):
        try:
            torch.testing.assert_close(p.detach(), q.detach(), **(tol or TOL))
        except AssertionError as e:
            raise AssertionError(f"rank {rr.rank()}: {name}: parameter {pn} differs from the "
                                 f"full-batch reference: {e}") from None


def assert_identical(name, tensors):
    flat = torch.cat([t.detach().reshape(-1).to(torch.float64) for t in tensors]).contiguous()
    every = rr.allgather(flat).view(rr.size(), -1)
    for r in range(1, rr.size()):
        if not torch.equal(every[r], every[0]):
            raise AssertionError(f"{name}: rank {r}'s parameters differ from rank 0's "
                                 f"(max |diff| {float((every[r] - every[0]).abs().max())})")


def passed(name):
    print(f"rank {rr.rank()}: PASS {name}", flush=True)


def sgd(params):
    return torch.optim.SGD(params, lr=0.2)


def sgd_momentum(params):
    return torch.optim.SGD(params, lr=0.1, momentum=0.9)


def adam(params):
    return torch.optim.Adam(params, lr=0.02)


def train_ddp(ddp, make_opt, n, r):
    opt = make_opt(ddp.parameters())
    for s in range(STEPS):
        opt.zero_grad()
        x, y = batch(s, SHARD * n)
        F.mse_loss(ddp(shard(x, r)), shard(y, r)).backward()
        opt.step()


# -- modes ----------------------------------------------------------------------------
def mode_hook():
    """DDP built on a gloo group, its gradients reduced by ringreduce hooks."""
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP

    comm = rr.init()
    n, r = comm.size, comm.rank
    # gloo needs a rendezvous address; rank 0 picks a fresh port (an earlier
    # mode's store may still hold MASTER_PORT), ringreduce sends it.
    import socket
    port = torch.zeros(1, dtype=torch.int64)
    if r == 0:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port[0] = sock.getsockname()[1]
    comm.broadcast(port, 0)
    os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = "127.0.0.1", str(int(port))
    dist.init_process_group("gloo", rank=r, world_size=n)
    cases = [("allreduce_hook", rt.allreduce_hook, sgd, TOL),
             ("allreduce_hook+adam", rt.allreduce_hook, adam, TOL),
             ("fp16_compress_hook", rt.fp16_compress_hook, sgd, dict(rtol=0, atol=2e-3)),
             ("bf16_compress_hook", rt.bf16_compress_hook, sgd, dict(rtol=0, atol=2e-2))]
    for name, hook, make_opt, tol in cases:
        model0 = make_net()
        ddp = DDP(copy.deepcopy(model0))
        # Pass the communicator explicitly for one case, None for the others.
        ddp.register_comm_hook(state=comm if name == "allreduce_hook+adam" else None, hook=hook)
        train_ddp(ddp, make_opt, n, r)
        assert_close(name, ddp.module, reference(model0, make_opt, n), **tol)
        assert_identical(name, list(ddp.parameters()))
        passed(name)
    # A hook that does not reduce must make the check fail: this guards the
    # test itself against comparing the reference with itself.
    if n > 1:
        model0 = make_net()
        ddp = DDP(copy.deepcopy(model0))

        def local_only(state, bucket):
            fut = torch.futures.Future()
            fut.set_result(bucket.buffer())
            return fut
        ddp.register_comm_hook(None, local_only)
        train_ddp(ddp, sgd, n, r)
        try:
            assert_close("no reduction", ddp.module, reference(model0, sgd, n))
        except AssertionError:
            passed("a non-reducing hook is detected")
        else:
            raise AssertionError("the reference check accepted a model trained without reduction")
    dist.destroy_process_group()


def mode_backend():
    """Plain DDP over torch.distributed's 'ringreduce' backend, no gloo or NCCL."""
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP

    rt.init_process_group()
    n, r = dist.get_world_size(), dist.get_rank()
    assert dist.get_backend() == "ringreduce", dist.get_backend()
    assert (n, r) == (rr.size(), rr.rank())
    for name, make_opt in [("backend+sgd", sgd), ("backend+momentum", sgd_momentum)]:
        # Different initial weights per rank: DDP's construction broadcast
        # (through our backend) must make them rank 0's.
        model0 = make_net(seed=7)
        local = make_net(seed=7 + r)
        ddp = DDP(local)
        assert_identical(name + " after DDP construction", list(ddp.parameters()))
        train_ddp(ddp, make_opt, n, r)
        assert_close(name, ddp.module, reference(model0, make_opt, n))
        assert_identical(name, list(ddp.parameters()))
        passed(name)
    # The collectives torch.distributed exposes, against their definitions.
    t = torch.arange(5, dtype=torch.float32) + r
    dist.all_reduce(t)
    expect = sum(torch.arange(5, dtype=torch.float32) + q for q in range(n))
    assert torch.equal(t, expect), (t, expect)
    t = torch.tensor([float(r + 1)])
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    assert t.item() == n
    outs = [torch.empty(3) for _ in range(n)]
    dist.all_gather(outs, torch.full((3,), float(r)))
    assert all(torch.equal(o, torch.full((3,), float(q))) for q, o in enumerate(outs))
    big = torch.empty(2 * n, dtype=torch.int64)
    (getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor)(big, torch.tensor([r, 10 * r]))
    assert big.tolist() == [v for q in range(n) for v in (q, 10 * q)], big
    out = torch.empty(2)
    (getattr(dist, "reduce_scatter_single", None) or dist.reduce_scatter_tensor)(out, torch.arange(2 * n, dtype=torch.float32) * (r + 1))
    tri = n * (n + 1) // 2
    assert torch.equal(out, torch.tensor([2.0 * r, 2.0 * r + 1]) * tri), out
    b = torch.full((4,), float(r))
    dist.broadcast(b, src=n - 1)
    assert torch.equal(b, torch.full((4,), float(n - 1)))
    w = dist.all_reduce(torch.ones(3), async_op=True)
    w.wait()
    dist.barrier()
    passed("backend collectives")
    dist.destroy_process_group()


def mode_optimizer():
    """DistributedOptimizer with no torch.distributed group at all."""
    comm = rr.init()
    n, r = comm.size, comm.rank

    def run(name, make_opt, *, tol=TOL, micro=1, bucket_mb=25.0, compression=None):
        model0 = make_net()
        model = copy.deepcopy(model0)
        opt = rt.DistributedOptimizer(make_opt(model.parameters()),
                                      named_parameters=model.named_parameters(),
                                      bucket_mb=bucket_mb, compression=compression,
                                      backward_passes_per_step=micro)
        assert isinstance(opt, torch.optim.Optimizer)
        for s in range(STEPS):
            opt.zero_grad()
            x, y = batch(s, SHARD * n * micro)
            for j in range(micro):
                (F.mse_loss(model(shard(x, r, j, n)), shard(y, r, j, n)) / micro).backward()
            opt.step()
        assert_close(name, model, reference(model0, make_opt, n, micro=micro), **tol)
        assert_identical(name, list(model.parameters()))
        passed(name)

    run("optimizer+sgd", sgd)
    run("optimizer+adam, one bucket per parameter", adam, bucket_mb=1e-6)
    run("optimizer+momentum, backward_passes_per_step=2", sgd_momentum, micro=2)
    run("optimizer+fp16", sgd, compression="fp16", tol=dict(rtol=0, atol=2e-3))
    run("optimizer+bf16", sgd, compression="bf16", tol=dict(rtol=0, atol=2e-2))

    # A branch only one rank uses per step: its gradient is missing elsewhere.
    model0 = make_net(branch=True)
    model = copy.deepcopy(model0)
    opt = rt.DistributedOptimizer(sgd(model.parameters()), bucket_mb=1e-6)
    def who(s): return s % n
    for s in range(STEPS):
        opt.zero_grad()
        x, y = batch(s, SHARD * n)
        F.mse_loss(model(shard(x, r), use_branch=(r == who(s))), shard(y, r)).backward()
        opt.step()
    assert_close("unused parameter", model, reference(model0, sgd, n, branch_rank=who))
    assert_identical("unused parameter", list(model.parameters()))
    passed("a parameter without a gradient on some ranks")

    # synchronize(), clip, then step() under skip_synchronize().
    clip = 0.05
    model0 = make_net()
    model = copy.deepcopy(model0)
    opt = rt.DistributedOptimizer(sgd(model.parameters()), bucket_mb=1e-6)
    nbuckets = len(opt._rr.buckets)
    for s in range(STEPS):
        opt.zero_grad()
        x, y = batch(s, SHARD * n)
        F.mse_loss(model(shard(x, r)), shard(y, r)).backward()
        opt.synchronize()
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        assert norm > clip, f"clip {clip} inactive (norm {norm}); the test would prove nothing"
        seq = comm._impl.sequence
        with opt.skip_synchronize():
            opt.step()
        assert comm._impl.sequence == seq, "step() under skip_synchronize() reduced again"
    assert nbuckets == 4, nbuckets
    assert_close("skip_synchronize", model, reference(model0, sgd, n, clip=clip))
    assert_identical("skip_synchronize", list(model.parameters()))
    passed("synchronize + clip + skip_synchronize")

    # Broadcasts: ranks start from different weights, hyper-parameters and
    # optimizer state (rank 0 has Adam state, the others none).
    model = make_net(seed=100 + r)
    opt = torch.optim.Adam(model.parameters(), lr=0.01 if r == 0 else 0.5)
    if r == 0:
        x, y = batch(0, SHARD)
        F.mse_loss(model(x), y).backward()
        opt.step()
        opt.zero_grad()
    rt.broadcast_parameters(model.state_dict(), root=0)
    rt.broadcast_optimizer_state(opt, root=0)
    assert opt.param_groups[0]["lr"] == 0.01, opt.param_groups[0]["lr"]
    state = [v for p in model.parameters() for v in opt.state[p].values()]
    assert len(state) == 3 * len(list(model.parameters())), f"rank {r}: state {len(state)}"
    assert_identical("broadcast_parameters", list(model.parameters()))
    assert_identical("broadcast_optimizer_state", state)
    dopt = rt.DistributedOptimizer(opt)
    x, y = batch(1, SHARD * n)
    F.mse_loss(model(shard(x, r)), shard(y, r)).backward()
    dopt.step()
    assert_identical("step after the broadcasts", list(model.parameters()))
    passed("broadcast_parameters + broadcast_optimizer_state")


if __name__ == "__main__":
    modes = {"hook": mode_hook, "backend": mode_backend, "optimizer": mode_optimizer}
    for m in sys.argv[1:]:
        modes[m]()
        print(f"rank {rr.rank()}: ALL PASS {m}", flush=True)
