"""One benchmark run: set up the backends, measure size by size, report."""
from __future__ import annotations

import argparse
import datetime
import os
import sys
from typing import Any, Dict, List, Optional

from . import baselines, report
from .cli import DEVICE_BACKENDS, HOST_BACKENDS, format_size, sizes
from .harness import (ITEMSIZE, Control, Harness, MpiControl, Plan, Progress, Row, TorchControl,
                      algbw, busbw, measure_reduce_rate)


def default_device() -> str:
    try:
        import torch

        from .. import _C

        return "cuda" if torch.cuda.is_available() and _C.has_cuda else "cpu"
    except Exception:
        return "cpu"


def _make_control(launch: Any, device: str) -> Control:
    if launch.size == 1:
        return Control()
    if launch.launcher == "mpirun":
        return MpiControl()
    # torchrun: agree over a gloo group of torch.distributed.
    ctx = baselines.Context(device, launch, Control(), None)
    baselines.init_torch_distributed(ctx, want_nccl=device == "cuda")
    return TorchControl(launch.rank, launch.size)


def _loadavg() -> Optional[List[float]]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def _say(rank: int, text: str) -> None:
    if rank == 0:
        print(text, flush=True)


def run(args: argparse.Namespace) -> int:
    """Run the benchmark under the current launch. Returns the exit status:
    0, 1 when any result was wrong, 2 when no backend could run."""
    import torch

    from ..launch import detect

    launch = detect()
    device = args.device or default_device()
    if device == "cuda":
        if not torch.cuda.is_available():
            print("ringreduce-bench: --device cuda but torch sees no GPU", file=sys.stderr)
            return 2
        torch.cuda.set_device(launch.local_rank % torch.cuda.device_count())
    else:
        # Oversubscribed ranks each get their share of the cores for fills and checks.
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // max(launch.local_size, 1)))

    control = _make_control(launch, device)
    rank, nranks = control.rank, control.size
    chunks = args.chunk_bytes or [None]
    ctx = baselines.Context(device, launch, control, chunks[0])
    ctx.torch_dist_ready = launch.launcher == "torchrun" and nranks > 1

    names = args.backends or list(HOST_BACKENDS if device == "cpu" else DEVICE_BACKENDS)
    names = baselines.resolve_names(names, device)
    planned = []  # (name, chunk bytes): one ringreduce backend per chunk size when several
    for name in names:
        for c in (chunks if baselines.is_ringreduce(name) else [chunks[0]]):
            planned.append((name, c))
    active: List[baselines.Backend] = []
    skipped: Dict[str, str] = {}
    for name, chunk in planned:
        b = baselines.make(name, ctx, chunk)
        if len(chunks) > 1 and baselines.is_ringreduce(name):
            b.name = name = f"{name}@{format_size(chunk)}"
        reason = None
        try:
            b.setup()
        except baselines.BackendUnavailable as e:
            reason = str(e)
        except Exception as e:  # report, but keep the other backends
            reason = f"{type(e).__name__}: {e}"
        reasons = control.allgather(reason)
        bad = [(r, m) for r, m in enumerate(reasons) if m]
        if bad:
            if reason is None:
                b.close()
            r0, msg = bad[0]
            skipped[name] = msg if len(bad) == nranks else f"rank {r0}: {msg}"
            _say(rank, f"# skipping backend {name}: {skipped[name]}")
        else:
            active.append(b)

    if not active:
        _say(rank, "# no backend could run; nothing to measure")
        control.close()
        return 2

    from .machine import command_line, describe

    machine = describe() if rank == 0 else {}
    command = command_line(launch.launcher, nranks) if rank == 0 else ""
    modes = ([True] if args.inplace_only else [False] if args.outofplace_only else [False, True])
    size_list = sizes(args.minbytes, args.maxbytes, args.stepfactor)
    plan = Plan(args.warmup_iters, args.iters, args.budget, args.min_iters, bool(args.check),
                args.seed)
    reduce_rate = measure_reduce_rate(device, control)

    _say(rank, f"# ringreduce-bench: {nranks} ranks ({launch.launcher}), device {device}, "
               f"host {machine.get('host')}, {machine.get('cpu')}, {machine.get('cores')} cores")
    _say(rank, f"# sizes {format_size(size_list[0])}..{format_size(size_list[-1])} x"
               f"{args.stepfactor:g}, dtypes {','.join(args.datatype)}, ops {','.join(args.op)}, "
               f"warm-up {args.warmup_iters}, iters {args.iters}"
               + (f" (budget {args.budget:g} s, at least {args.min_iters})" if args.budget else "")
               + f", check {args.check}, time = max over ranks of the per-rank median")
    for b in active:
        _say(rank, f"# {b.name}: {b.description}")
    if plan.corrupt:
        _say(rank, f"# FAULT INJECTION: one element of {plan.corrupt}'s output is corrupted "
                   f"on rank {nranks - 1} before checking")

    load_start = _loadavg()
    harness = Harness(device, control, plan)
    rows: List[Row] = []
    progress = Progress(len(size_list) * len(args.datatype) * len(args.op) * len(active)
                        * len(modes), enabled=rank == 0 and not args.no_progress)
    skip_noted = set()
    for nbytes in size_list:
        for dtype in args.datatype:
            count = nbytes // ITEMSIZE[dtype]
            if count == 0:
                continue
            inp, out = harness.allocate(count, dtype)
            for op in args.op:
                for b in active:
                    why = b.skip_reason(dtype, op)
                    if why:
                        if (b.name, dtype, op) not in skip_noted:
                            skip_noted.add((b.name, dtype, op))
                            _say(rank, f"# skipping {b.name} for {dtype} {op}: {why}")
                        for _ in modes:
                            progress.step("")
                        continue
                    for inplace in modes:
                        progress.step(f"{format_size(nbytes)} {dtype} {op} {b.name} "
                                      f"{'in' if inplace else 'out-of'}-place")
                        t, wrong, iters = harness.measure(b, inp, out, dtype, op, inplace)
                        nb = count * ITEMSIZE[dtype]
                        a = algbw(nb, t)
                        rows.append(Row(b.name, nb, count, dtype, op, inplace, t * 1e6, a,
                                        busbw(a, nranks), wrong, iters))
            del inp, out
    progress.close()

    if rank == 0:
        for b in active:
            print()
            print(report.backend_table(rows, b.name, b.description))
        comp = report.comparison_table(rows, [b.name for b in active])
        if comp:
            print()
            print(comp)
        extra = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                 "device": device, "launcher": launch.launcher,
                 "backends": {b.name: b.description for b in active}, "skipped": skipped,
                 "options": {"minbytes": args.minbytes, "maxbytes": args.maxbytes,
                             "stepfactor": args.stepfactor, "warmup": args.warmup_iters,
                             "iters": args.iters, "budget_s": args.budget,
                             "min_iters": args.min_iters, "check": args.check,
                             "chunk_bytes": args.chunk_bytes, "seed": args.seed},
                 "reduce_rate": reduce_rate,
                 # Other work on the host skews results; record how busy it was.
                 "load_average": {"start": load_start, "end": _loadavg()}}
        if args.json:
            report.write_json(args.json, machine, command, nranks, rows, extra)
            print(f"# wrote {args.json}")
        if args.plot:
            report.plot(args.plot, rows, report.plot_title(machine, nranks, device),
                        note=f"{command}" if len(command) < 180 else "")
            print(f"# wrote {args.plot}")
        sys.stdout.flush()

    bad = sum(r.wrong or 0 for r in rows)
    for b in active:
        b.close()
    if ctx.torch_dist_ready:
        try:
            import torch.distributed as dist

            if dist.is_initialized():
                control.barrier()
                dist.destroy_process_group()
        except Exception:
            pass
    control.close()
    return 1 if bad else 0
