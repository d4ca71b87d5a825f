"""Train a torchvision ResNet on synthetic images on GPUs, with the gradients
reduced by NCCL (baseline) or by one of ringreduce's PyTorch integrations:

  ddp-nccl   DDP on an NCCL group, its default all-reduce (the baseline)
  hook       DDP on an NCCL group, gradients reduced by ringreduce.torch.allreduce_hook
  backend    DDP on torch.distributed's "ringreduce" backend (no NCCL group)
  optimizer  ringreduce.torch.DistributedOptimizer (no DDP)

    torchrun --nproc-per-node 2 examples/resnet_synthetic.py --mode hook
    torchrun --nproc-per-node 2 examples/resnet_synthetic.py --mode backend --model resnet18

Prints the loss every few steps and the median step time. torchvision is
imported only when the script runs.
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

import torch
import torch.distributed as dist
import torch.nn.functional as F


def build(mode: str, model: torch.nn.Module, device: torch.device, lr: float):
    """Returns (the module to call, the optimizer)."""
    import ringreduce.torch as rt
    from torch.nn.parallel import DistributedDataParallel as DDP

    if mode in ("ddp-nccl", "hook"):
        dist.init_process_group("nccl", device_id=device)
        net = DDP(model, device_ids=[device.index])
        if mode == "hook":
            net.register_comm_hook(state=None, hook=rt.allreduce_hook)
        return net, torch.optim.SGD(net.parameters(), lr=lr, momentum=0.9)
    if mode == "backend":
        dist.init_process_group("ringreduce")
        net = DDP(model, device_ids=[device.index])
        return net, torch.optim.SGD(net.parameters(), lr=lr, momentum=0.9)
    # optimizer: no gradient travels through torch.distributed. A gloo group
    # only gives ringreduce torchrun's store, should it bootstrap NCCL there.
    dist.init_process_group("gloo")
    rt.broadcast_parameters(model.state_dict(), root=0)
    opt = rt.DistributedOptimizer(torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9),
                                  named_parameters=model.named_parameters())
    return model, opt


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--mode", choices=["ddp-nccl", "hook", "backend", "optimizer"],
                   default="hook")
    p.add_argument("--model", choices=["resnet50", "resnet18"], default="resnet50")
    p.add_argument("--batch", type=int, default=64, help="images per GPU per step")
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--fp32", action="store_true", help="no bf16 autocast")
    args = p.parse_args()

    import torchvision

    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = torch.device("cuda", local_rank)
    torch.cuda.set_device(device)
    torch.backends.cudnn.benchmark = True
    torch.manual_seed(0)
    model = getattr(torchvision.models, args.model)(num_classes=1000)
    model = model.to(device, memory_format=torch.channels_last)
    net, opt = build(args.mode, model, device, args.lr)
    rank, world = dist.get_rank(), dist.get_world_size()

    g = torch.Generator(device=device).manual_seed(1 + rank)
    images = torch.randn(args.batch, 3, 224, 224, device=device, generator=g)
    images = images.contiguous(memory_format=torch.channels_last)
    labels = torch.randint(0, 1000, (args.batch,), device=device, generator=g)
    times = []
    for step in range(args.warmup + args.steps):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=not args.fp32):
            loss = F.cross_entropy(net(images), labels)
        loss.backward()
        opt.step()
        torch.cuda.synchronize()
        if step >= args.warmup:
            times.append((time.perf_counter() - t0) * 1e3)
        if rank == 0 and (step % 10 == 0 or step == args.warmup + args.steps - 1):
            print(f"step {step:3d}  loss {loss.item():.4f}", flush=True)
    if rank == 0:
        med = statistics.median(times)
        print(f"{args.mode}: {args.model}, {world} GPUs x {args.batch} images, "
              f"{'fp32' if args.fp32 else 'bf16 autocast'}: median {med:.1f} ms/step, "
              f"{world * args.batch / med * 1e3:.0f} images/s", flush=True)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
