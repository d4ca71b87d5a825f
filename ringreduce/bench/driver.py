"""One benchmark run: set up the backends, measure size by size (eager calls,
then CUDA graph replays with --graph), report."""
from __future__ import annotations

import argparse
import datetime
import os
import sys
from typing import Any, Callable, Dict, List, Optional, Tuple

from . import baselines, report
from .backend import Backend, BackendUnavailable, Context
from .check import ITEMSIZE
from .cli import format_size, output_path, sizes
from .control import Control, MpiControl, RowSkipped, TorchControl, agree
from .measure import Harness, measure_reduce_rate
from .rows import Row, algbw, busbw, write_json
from .timing import Plan

# Settings that change what a run measures: recorded in the JSON.
_ENV_PREFIXES = ("RINGREDUCE_", "UCX_", "OMPI_MCA_btl", "OMPI_MCA_pml", "NCCL_", "GLOO_",
                 "TORCH_SYMM_MEM_", "NVSHMEM_", "MASTER_ADDR", "CUDA_VISIBLE_DEVICES")
_ENV_SKIP = ("OMPI_MCA_btl_base_", "NCCL_COMM_ID")


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
    from .torch_backends import init_torch_distributed

    ctx = Context(device, launch, Control(), None)
    init_torch_distributed(ctx, want_nccl=device == "cuda")
    return TorchControl(launch.rank, launch.size)


def _loadavg() -> Optional[List[float]]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def environment() -> Dict[str, str]:
    return {k: v for k, v in sorted(os.environ.items())
            if k.startswith(_ENV_PREFIXES) and not k.startswith(_ENV_SKIP)}


class Skips:
    """Rows that could not run, grouped by backend, mode, dtype, op and reason."""

    def __init__(self, say) -> None:
        self.say = say
        self.groups: Dict[Tuple[str, bool, str, str, str], List[int]] = {}

    def add(self, backend: str, graph: bool, nbytes: int, dtype: str, op: str,
            reason: str) -> None:
        key = (backend, graph, dtype, op, reason)
        if key not in self.groups:
            self.say(f"# skipping {backend} ({'graph' if graph else 'eager'}) for {dtype} {op} "
                     f"from {format_size(nbytes)}: {reason}")
            self.groups[key] = []
        if nbytes not in self.groups[key]:
            self.groups[key].append(nbytes)

    def as_list(self) -> List[Dict[str, Any]]:
        return [{"backend": b, "graph": g, "dtype": d, "op": o, "bytes": sizes_, "reason": r}
                for (b, g, d, o, r), sizes_ in self.groups.items()]


def _select(harness: Harness, b: Backend, inp: Any, op: str) -> Tuple[Optional[str],
                                                                     Optional[str]]:
    """The algorithm this row runs, agreed on every rank (RowSkipped when it cannot run)."""
    err, value = None, (None, None)
    try:
        value = b.select(inp, op)
    except BackendUnavailable as e:
        err = str(e)
    except Exception as e:  # noqa: BLE001
        err = f"{type(e).__name__}: {e}"
    got = agree(harness.control, err, value)
    if len({tuple(v) for v in got}) > 1:
        return got[0][0], f"{got[0][1]} (ranks chose differently: {[v[0] for v in got]})"
    return got[0]


def _measure_pass(graph: bool, harness: Harness, active: List[Backend], size_list: List[int],
                  args: argparse.Namespace, modes: List[bool], skips: Skips,
                  progress: report.Progress, done: Callable[[List[Row]], None]) -> List[Row]:
    """Every size, dtype, op, backend and mode, eager calls or graph replays;
    done(rows so far) after each size."""
    rows: List[Row] = []
    nranks = harness.nranks
    why_not = {b.name: b.graph_skip_reason() for b in active} if graph else {}
    for nbytes in size_list:
        for dtype in args.datatype:
            count = nbytes // ITEMSIZE[dtype]
            if count == 0:
                continue
            shared = harness.allocate(count, dtype)
            for b in active:
                reason = why_not.get(b.name)
                own = None
                if reason is None:
                    try:
                        own = harness.buffers(b, count, dtype, shared)
                    except RowSkipped as e:
                        reason = str(e)
                for op in args.op:
                    why = reason or b.skip_reason(dtype, op)
                    algo = algo_why = None
                    if why is None:
                        try:
                            algo, algo_why = _select(harness, b, own[0], op)
                        except RowSkipped as e:
                            why = str(e)
                    for inplace in modes:
                        progress.step(f"{format_size(nbytes)} {dtype} {op} {b.name}"
                                      f"{' graph' if graph else ''} "
                                      f"{'in' if inplace else 'out-of'}-place")
                        if why is not None:
                            skips.add(b.name, graph, nbytes, dtype, op, why)
                            continue
                        inp, out = own
                        try:
                            m = (harness.measure_graph if graph else harness.measure)(
                                b, inp, out, dtype, op, inplace)
                        except RowSkipped as e:
                            skips.add(b.name, graph, nbytes, dtype, op, str(e))
                            continue
                        nb = count * ITEMSIZE[dtype]
                        a = algbw(nb, m.seconds)
                        bus = busbw(a, nranks) if b.collective else 0.0
                        rows.append(Row(b.name, nb, count, dtype, op, inplace, m.seconds * 1e6,
                                        a, bus, m.wrong, m.iters, graph, algo, algo_why))
                own = None
            del shared
        done(rows)
    return rows


def _plan_backends(args: argparse.Namespace, device: str) -> List[Tuple[str, Optional[int], str]]:
    """(name, chunk bytes, display name): one ringreduce backend per chunk size when several."""
    chunks = args.chunk_bytes or [None]
    names = args.backends or list(baselines.HOST_DEFAULT if device == "cpu"
                                  else baselines.DEVICE_DEFAULT)
    planned = []
    for name in baselines.resolve_names(names, device):
        if baselines.is_ringreduce(name) and len(chunks) > 1:
            planned += [(name, c, f"{name}@{format_size(c)}") for c in chunks]
        else:
            planned.append((name, chunks[0], name))
    return planned


def run(args: argparse.Namespace) -> int:
    """Run the benchmark under the current launch. Returns the exit status:
    0, 1 when any result was wrong, 2 when nothing could run."""
    import torch

    from ..launch import detect

    launch = detect()
    env = environment()  # as launched, before this run sets MASTER_ADDR and the like
    device = args.device or default_device()
    if launch.launcher == "single":
        from .machine import launch_hint

        print("\n".join(launch_hint()), flush=True)
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

    def say(text: str) -> None:
        if rank == 0:
            print(text, flush=True)

    ctx = Context(device, launch, control, (args.chunk_bytes or [None])[0])
    ctx.torch_dist_ready = launch.launcher == "torchrun" and nranks > 1
    active, skipped = baselines.setup_all(_plan_backends(args, device), ctx, say)
    if not active:
        say("# no backend could run; nothing to measure")
        control.close()
        return 2

    from .machine import command_line, describe

    machine = describe() if rank == 0 else {}
    command = command_line(launch.launcher, nranks) if rank == 0 else ""
    modes = ([True] if args.inplace_only else [False] if args.outofplace_only else [False, True])
    size_list = args.sizes or sizes(args.minbytes, args.maxbytes, args.stepfactor)
    plan = Plan(args.warmup_iters, args.iters, args.budget, args.min_iters, bool(args.check),
                args.seed, args.graph_iters)
    reduce_rate = measure_reduce_rate(device, control)

    say(f"# ringreduce-bench: {nranks} ranks ({launch.launcher}), device {device}, "
        f"host {machine.get('host')}, {machine.get('cpu')}, {machine.get('cores')} cores")
    grid = (f"--sizes" if args.sizes else
            f"-b {format_size(args.minbytes)} -e {format_size(args.maxbytes)} "
            f"-f {args.stepfactor:g}")
    say(f"# sizes {format_size(size_list[0])}..{format_size(size_list[-1])} "
        f"({len(size_list)} sizes, {grid}), dtypes {','.join(args.datatype)}, ops "
        f"{','.join(args.op)}, warm-up {args.warmup_iters}, iters {args.iters}"
        + (f" (budget {args.budget:g} s, at least {args.min_iters})" if args.budget else "")
        + f", check {args.check}, time = max over ranks of the per-rank median")
    notes = []
    if not args.sizes and size_list[-1] != args.maxbytes:
        notes.append(f"-e {format_size(args.maxbytes)} is not on the grid "
                     f"{format_size(args.minbytes)} x {args.stepfactor:g}^k: the largest size "
                     f"run is {format_size(size_list[-1])}")
    if args.graph:
        say(f"# graph: {plan.graph_calls} calls captured per CUDA graph, time = replay / "
            f"{plan.graph_calls}, median of the replays")
    for n in notes:
        say(f"# note: {n}")
    for b in active:
        say(f"# {b.name}: {b.description}")

    load_start = _loadavg()
    harness = Harness(device, control, plan)
    passes = ([] if args.graph_only else [False]) + ([True] if args.graph else [])
    skips = Skips(say)
    progress = report.Progress(len(passes) * len(size_list) * len(args.datatype) * len(args.op)
                               * len(active) * len(modes),
                               enabled=rank == 0 and not args.no_progress)
    json_path = output_path(args.json, args.out_dir)
    plot_path = output_path(args.plot, args.out_dir)
    descriptions = {b.name: b.description for b in active}

    def extra(partial: bool) -> Dict[str, Any]:
        return {"partial": partial,
                "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                "device": device, "launcher": launch.launcher,
                "backends": descriptions, "skipped": skipped, "skipped_rows": skips.as_list(),
                "sizes": size_list, "notes": notes, "environment": env,
                "options": {"minbytes": args.minbytes, "maxbytes": args.maxbytes,
                            "stepfactor": args.stepfactor, "sizes": args.sizes,
                            "warmup": args.warmup_iters, "iters": args.iters,
                            "budget_s": args.budget, "min_iters": args.min_iters,
                            "check": args.check, "chunk_bytes": args.chunk_bytes,
                            "seed": args.seed, "graph": args.graph,
                            "graph_only": args.graph_only, "graph_iters": args.graph_iters,
                            "modes": ["in-place" if m else "out-of-place" for m in modes]},
                "reduce_rate": reduce_rate,
                # Other work on the host skews results; record how busy it was.
                "load_average": {"start": load_start, "end": _loadavg()}}

    rows: List[Row] = []

    def checkpoint(more: List[Row]) -> None:
        # A run cut short (a timeout in a script) still leaves what it measured.
        if rank == 0 and json_path:
            write_json(json_path, machine, command, nranks, rows + more, extra(True))

    for graph in passes:
        if graph and device != "cuda":
            why = ("CUDA graphs capture device work: this run's buffers are on the host "
                   "(--device cpu)" if torch.cuda.is_available() else
                   "CUDA graphs need a GPU, and torch sees none")
            for b in active:
                for dtype in args.datatype:
                    for op in args.op:
                        for nb in size_list:
                            skips.add(b.name, True, nb, dtype, op, why)
            continue
        rows += _measure_pass(graph, harness, active, size_list, args, modes, skips, progress,
                              checkpoint)
    progress.close()

    if rank == 0:
        for name, graph in report.labels(rows):
            print()
            print(report.backend_table(rows, name, descriptions.get(name, ""), graph))
        ran = list(dict.fromkeys(r.backend for r in rows))
        comp = report.comparison_table(rows, ran)
        if comp:
            print()
            print(comp)
        skipped_rows = skips.as_list()
        if skipped or skipped_rows:
            print()
            for name, why in skipped.items():
                print(f"# skipped backend {name}: {why}")
            print("\n".join(report.skipped_lines(skipped_rows)))
        if json_path:
            write_json(json_path, machine, command, nranks, rows, extra(False))
            print(f"# wrote {json_path}")
        if plot_path and rows:
            from .plot import plot, plot_title

            plot(plot_path, rows, plot_title(machine, nranks, device),
                 note=f"{command}" if len(command) < 180 else "")
            print(f"# wrote {plot_path}")
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
    if not rows:
        return 2
    return 1 if bad else 0
