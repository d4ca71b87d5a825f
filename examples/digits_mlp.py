"""Train an MLP on scikit-learn's digits (8x8 images, 10 classes) on CPU,
sharded across ranks, with each of ringreduce's three PyTorch integrations:

  hook       DDP on a gloo group, gradients reduced by ringreduce.torch.allreduce_hook
  backend    DDP on torch.distributed's "ringreduce" backend (no gloo, no NCCL)
  optimizer  ringreduce.torch.DistributedOptimizer (no torch.distributed at all)

    mpirun -np 4 --oversubscribe python examples/digits_mlp.py --mode all

The dataset ships inside scikit-learn (no download). Every mode starts from
the same weights and sees the same shards, so their losses agree to rounding.
"""
from __future__ import annotations

import argparse
import os
import socket
import time

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F

import ringreduce as rr
import ringreduce.torch as rt


def load(rank: int, size: int, seed: int):
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    X = torch.tensor(X, dtype=torch.float32) / 16.0
    y = torch.tensor(y, dtype=torch.int64)
    perm = torch.randperm(len(X), generator=torch.Generator().manual_seed(seed))
    X, y = X[perm], y[perm]
    n_test = 357
    Xte, yte, Xtr, ytr = X[:n_test], y[:n_test], X[n_test:], y[n_test:]
    # Equal shards, so the mean of the ranks' mean losses is the global mean.
    per = len(Xtr) // size
    return Xtr[rank * per:(rank + 1) * per], ytr[rank * per:(rank + 1) * per], Xte, yte


def make_model(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 64), nn.ReLU(),
                         nn.Linear(64, 10))


def set_master(comm) -> None:
    """gloo's rendezvous needs MASTER_ADDR/PORT; mpirun sets neither. Rank 0
    picks a free port and ringreduce broadcasts it."""
    if os.environ.get("MASTER_ADDR"):
        return
    port = torch.zeros(1, dtype=torch.int64)
    if comm.rank == 0:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port[0] = s.getsockname()[1]
    comm.broadcast(port, 0)
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(int(port.item()))


def run(mode: str, args, comm) -> None:
    r, n = comm.rank, comm.size
    Xtr, ytr, Xte, yte = load(r, n, args.seed)
    per_rank_batch = max(1, args.batch // n)
    model = make_model(args.seed)
    if mode == "hook":
        set_master(comm)
        dist.init_process_group("gloo", rank=r, world_size=n)
        net = nn.parallel.DistributedDataParallel(model)
        net.register_comm_hook(state=None, hook=rt.allreduce_hook)
        opt = torch.optim.SGD(net.parameters(), lr=args.lr, momentum=0.9)
    elif mode == "backend":
        rt.init_process_group()
        net = nn.parallel.DistributedDataParallel(model)
        opt = torch.optim.SGD(net.parameters(), lr=args.lr, momentum=0.9)
    else:
        net = model
        rt.broadcast_parameters(net.state_dict(), root=0)
        opt = rt.DistributedOptimizer(torch.optim.SGD(net.parameters(), lr=args.lr, momentum=0.9),
                                      named_parameters=net.named_parameters())
    steps = len(Xtr) // per_rank_batch
    if r == 0:
        print(f"== mode {mode}: {n} ranks, {per_rank_batch} samples per rank per step, "
              f"{steps} steps per epoch", flush=True)
    for epoch in range(args.epochs):
        g = torch.Generator().manual_seed(args.seed + 1 + epoch)
        order = torch.randperm(len(Xtr), generator=g)
        total = torch.zeros(1, dtype=torch.float64)
        t0 = time.perf_counter()
        for s in range(steps):
            idx = order[s * per_rank_batch:(s + 1) * per_rank_batch]
            opt.zero_grad()
            loss = F.cross_entropy(net(Xtr[idx]), ytr[idx])
            loss.backward()
            opt.step()
            total += loss.item()
        step_ms = (time.perf_counter() - t0) / steps * 1e3
        comm.allreduce(total, "avg")
        with torch.no_grad():
            acc = (net(Xte).argmax(1) == yte).float().mean().item()
        if r == 0:
            print(f"epoch {epoch + 1:2d}  train loss {total.item() / steps:.4f}  "
                  f"test acc {acc:.3f}  {step_ms:.2f} ms/step", flush=True)
    if dist.is_initialized():
        dist.destroy_process_group()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--mode", choices=["hook", "backend", "optimizer", "all"], default="all")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch", type=int, default=128, help="global batch (samples over all ranks)")
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    torch.set_num_threads(1)  # ranks share the cores
    comm = rr.init()
    for mode in (["hook", "backend", "optimizer"] if args.mode == "all" else [args.mode]):
        run(mode, args, comm)


if __name__ == "__main__":
    main()
