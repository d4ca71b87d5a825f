"""ResNet-50 training step time on GPUs: DDP over NCCL against ringreduce's
three PyTorch integrations, all in one launch.

    torchrun --nproc-per-node 2 benchmarks/resnet_step_time.py --json benchmarks/results/resnet50_step_time.json

Modes (the same model, data, optimizer and bucket size for each):
  ddp-nccl     DDP on the NCCL group, its default all-reduce (the baseline)
  ddp-hook     DDP on the NCCL group, gradients reduced by ringreduce.torch.allreduce_hook
  ddp-backend  DDP on a torch.distributed group of the "ringreduce" backend
  optimizer    ringreduce.torch.DistributedOptimizer, no DDP

Workload: torchvision ResNet-50, synthetic 224x224 images, 128 images per GPU
(default), bf16 autocast, channels_last, SGD with momentum. A step is
zero_grad + forward + backward + optimizer step, timed on the host between
two torch.cuda.synchronize() calls; each step's time is the slowest rank's.
After --warmup steps, --steps steps are timed; the JSON holds the median and
the 10th/90th percentiles (ms), and each mode's median over DDP+NCCL's.
After each mode the ranks' parameters are compared (checksum over NCCL).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import sys
import time

import torch
import torch.distributed as dist
import torch.nn.functional as F

MODES = ["ddp-nccl", "ddp-hook", "ddp-backend", "optimizer"]


def percentile(xs, q):
    s = sorted(xs)
    k = (len(s) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def run_mode(mode, args, device, rr_group):
    import torchvision
    import ringreduce.torch as rt
    from torch.nn.parallel import DistributedDataParallel as DDP

    torch.manual_seed(0)
    model = torchvision.models.resnet50(num_classes=1000)
    model = model.to(device, memory_format=torch.channels_last)
    ddp_kw = dict(device_ids=[device.index], bucket_cap_mb=args.bucket_mb)
    if mode == "ddp-nccl":
        net = DDP(model, **ddp_kw)
    elif mode == "ddp-hook":
        net = DDP(model, **ddp_kw)
        net.register_comm_hook(state=None, hook=rt.allreduce_hook)
    elif mode == "ddp-backend":
        net = DDP(model, process_group=rr_group, **ddp_kw)
    else:
        net = model
        rt.broadcast_parameters(net.state_dict(), root=0)
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    if mode == "optimizer":
        opt = rt.DistributedOptimizer(opt, named_parameters=net.named_parameters(),
                                      bucket_mb=args.bucket_mb)

    rank = dist.get_rank()
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
    # Each step counts as long as its slowest rank.
    t = torch.tensor(times, device=device, dtype=torch.float64)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    times = t.tolist()
    # Outside the timed loop: every rank must hold the same parameters.
    with torch.no_grad():
        csum = torch.stack([p.double().sum() for p in model.parameters()]).sum().reshape(1)
    lo, hi = csum.clone(), csum.clone()
    dist.all_reduce(lo, op=dist.ReduceOp.MIN)
    dist.all_reduce(hi, op=dist.ReduceOp.MAX)
    agree = bool(lo.item() == hi.item())
    del net, opt, model
    torch.cuda.empty_cache()
    return {"mode": mode, "step_ms_median": statistics.median(times),
            "step_ms_p10": percentile(times, 0.1), "step_ms_p90": percentile(times, 0.9),
            "steps": len(times), "final_loss": float(loss.item()), "ranks_agree": agree}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--json", help="write results here")
    p.add_argument("--batch", type=int, default=128, help="images per GPU per step")
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--steps", type=int, default=25)
    p.add_argument("--bucket-mb", type=float, default=25.0, help="fusion bucket size, MiB")
    p.add_argument("--fp32", action="store_true", help="no bf16 autocast")
    p.add_argument("--modes", default=",".join(MODES))
    args = p.parse_args()
    modes = args.modes.split(",")
    unknown = [m for m in modes if m not in MODES]
    if unknown:
        raise SystemExit(f"unknown modes {unknown}; choose from {MODES}")

    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = torch.device("cuda", local_rank)
    torch.cuda.set_device(device)
    torch.backends.cudnn.benchmark = True
    # No device_id: with it, torch asks every later group (ours too) for a
    # per-device backend object, which a Python process group does not have.
    dist.init_process_group("nccl")
    import ringreduce as rr
    import ringreduce.torch  # noqa: F401 - registers the "ringreduce" backend

    rr.init()
    rr_group = dist.new_group(backend="ringreduce") if "ddp-backend" in modes else None
    rank, world = dist.get_rank(), dist.get_world_size()

    results = []
    for mode in modes:
        res = run_mode(mode, args, device, rr_group)
        results.append(res)
        if rank == 0:
            print(f"{mode:12s} median {res['step_ms_median']:8.2f} ms  "
                  f"(p10 {res['step_ms_p10']:.2f}, p90 {res['step_ms_p90']:.2f})  "
                  f"ranks agree: {res['ranks_agree']}", flush=True)
    base = next((r["step_ms_median"] for r in results if r["mode"] == "ddp-nccl"), None)
    for r in results:
        r["ratio_vs_ddp_nccl"] = None if base is None else r["step_ms_median"] / base

    if rank == 0:
        print(f"\nResNet-50, {world} x {torch.cuda.get_device_name(device)}, {args.batch} "
              f"images/GPU, {'fp32' if args.fp32 else 'bf16 autocast'}, channels_last")
        print(f"{'mode':12s} {'median ms':>10s} {'p10 ms':>8s} {'p90 ms':>8s} "
              f"{'vs NCCL':>8s} {'images/s':>9s}")
        for r in results:
            ratio = "-" if r["ratio_vs_ddp_nccl"] is None else f"{r['ratio_vs_ddp_nccl']:.3f}"
            print(f"{r['mode']:12s} {r['step_ms_median']:10.2f} {r['step_ms_p10']:8.2f} "
                  f"{r['step_ms_p90']:8.2f} {ratio:>8s} "
                  f"{world * args.batch / r['step_ms_median'] * 1e3:9.0f}")
        if args.json:
            import torchvision

            doc = {
                "machine": {"host": socket.gethostname(), "gpu": torch.cuda.get_device_name(device),
                            "gpus": world, "python": platform.python_version(),
                            "torch": torch.__version__, "torchvision": torchvision.__version__,
                            "cuda": torch.version.cuda,
                            "nccl": ".".join(map(str, torch.cuda.nccl.version()))},
                "command": " ".join(["torchrun", "--nproc-per-node",
                                     os.environ.get("LOCAL_WORLD_SIZE", str(world)), *sys.argv]),
                "world_size": world,
                "workload": {"model": "resnet50", "images_per_gpu": args.batch,
                             "precision": "fp32" if args.fp32 else "bf16 autocast",
                             "memory_format": "channels_last", "bucket_mb": args.bucket_mb,
                             "warmup_steps": args.warmup, "timed_steps": args.steps,
                             "timing": "host clock between cuda synchronizes, slowest rank"},
                "results": results,
            }
            os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
            with open(args.json, "w") as f:
                json.dump(doc, f, indent=2)
            print(f"wrote {args.json}")
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
