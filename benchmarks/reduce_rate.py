"""CudaReducer::reduce against the copy rate of one GPU, for every reducible dtype x op.

    bash scripts/build_device.sh && \
    python3 benchmarks/reduce_rate.py --json benchmarks/results/reduce-rate-1xh200.json

What is timed, each with CUDA events around every call on one stream, after --warmup calls,
as the median of --iters calls, on buffers of --mib MiB each (a few times the 60 MB L2 of an
H200, so every pass streams from HBM):
  ours       dst = a op b through _C.reduce_device     bytes = 3 x buffer (2 read, 1 written)
  copy       dst.copy_(src)                            bytes = 2 x buffer (1 read, 1 written)
  torch add  a.add_(b), for reference                  bytes = 3 x buffer
fraction_of_copy = ours / copy; the target is >= 0.95 for every row.

Checked outside the timed loops, on the same data: integers, bool, min and max bit for bit
against torch (unsigned min/max through a sign flip, so torch needs no unsigned kernels);
float sums and products against a float64 reference within one rounding of the dtype; and the
first --parity-elems elements bit for bit against the host reducer (_C.reduce_host). Exits 1
when a check fails (and, with --require-fraction F, when a row falls below F).
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from ringreduce import _C  # noqa: E402

CODES = _C.dtype_codes()
OPS = _C.op_codes()
REDUCIBLE = [d for d in CODES if not d.startswith("float8")]
TORCH = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32,
         "float64": torch.float64, "int8": torch.int8, "uint8": torch.uint8,
         "int16": torch.int16, "int32": torch.int32, "int64": torch.int64, "bool": torch.bool,
         "uint16": getattr(torch, "uint16", None), "uint32": getattr(torch, "uint32", None),
         "uint64": getattr(torch, "uint64", None)}
SIGNED_TWIN = {1: torch.int8, 2: torch.int16, 4: torch.int32, 8: torch.int64}
MANTISSA_BITS = {"float16": 10, "bfloat16": 7, "float32": 23, "float64": 52}
ITEMSIZE = {"float16": 2, "bfloat16": 2, "float32": 4, "float64": 8, "int8": 1, "uint8": 1,
            "int16": 2, "uint16": 2, "int32": 4, "uint32": 4, "int64": 8, "uint64": 8, "bool": 1}


def median_ms(fn, iters: int, warmup: int) -> float:
    for _ in range(warmup):
        fn()
    starts = [torch.cuda.Event(enable_timing=True) for _ in range(iters)]
    ends = [torch.cuda.Event(enable_timing=True) for _ in range(iters)]
    for s, e in zip(starts, ends):
        s.record()
        fn()
        e.record()
    torch.cuda.synchronize()
    return statistics.median(s.elapsed_time(e) for s, e in zip(starts, ends))


def gbps(nbytes: int, ms: float) -> float:
    return nbytes / (ms * 1e-3) / 1e9


def fill(raw: torch.Tensor, dtype: str, op: str, gen: torch.Generator) -> None:
    """Random, never-zero data: floats near 1 for prod (no overflow), normals otherwise."""
    if dtype in MANTISSA_BITS:
        v = raw.view(TORCH[dtype])
        if op == "prod":
            v.uniform_(0.5, 2.0, generator=gen)
        else:
            v.normal_(generator=gen)
    elif dtype == "bool":
        raw.random_(0, 2, generator=gen)
    else:
        raw.random_(0, 256, generator=gen)


def signed_view(raw: torch.Tensor, dtype: str) -> torch.Tensor:
    return raw.view(SIGNED_TWIN[ITEMSIZE[dtype]])


def torch_reference(dtype: str, op: str, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The expected result as raw bytes (bitwise cases) or float64 values (float sum/prod)."""
    if dtype in MANTISSA_BITS:
        x, y = a.view(TORCH[dtype]), b.view(TORCH[dtype])
        if op in ("min", "max"):
            return (torch.minimum if op == "min" else torch.maximum)(x, y).view(torch.uint8)
        x, y = x.double(), y.double()
        return x * y if op == "prod" else x + y
    if dtype == "bool":
        x, y = a.view(torch.bool), b.view(torch.bool)
        fn = {"sum": torch.logical_or, "max": torch.logical_or, "bor": torch.logical_or,
              "prod": torch.logical_and, "min": torch.logical_and, "band": torch.logical_and,
              "bxor": torch.logical_xor}[op]
        return fn(x, y).view(torch.uint8)
    x, y = signed_view(a, dtype), signed_view(b, dtype)
    if op in ("min", "max"):
        fn = torch.minimum if op == "min" else torch.maximum
        if dtype.startswith("uint"):  # unsigned order is signed order with the top bit flipped
            flip = torch.tensor(-(1 << (8 * ITEMSIZE[dtype] - 1)), dtype=x.dtype, device=x.device)
            return (fn(x ^ flip, y ^ flip) ^ flip).view(torch.uint8)
        return fn(x, y).view(torch.uint8)
    fn = {"sum": torch.add, "avg": torch.add, "prod": torch.mul, "band": torch.bitwise_and,
          "bor": torch.bitwise_or, "bxor": torch.bitwise_xor}[op]
    return fn(x, y).view(torch.uint8)


def check(dtype: str, op: str, a, b, dst, parity_elems: int) -> str:
    """'' when the device result is right, else what is wrong."""
    ref = torch_reference(dtype, op, a, b)
    if ref.dtype == torch.uint8:
        bad = int((ref != dst).sum())
        if bad:
            return f"{bad} bytes differ from torch"
    else:
        got = dst.view(TORCH[dtype]).double()
        eps = 2.0 ** -MANTISSA_BITS[dtype]
        tiny = torch.finfo(TORCH[dtype]).smallest_normal * eps
        bad = int(((got - ref).abs() > eps * ref.abs() + tiny).sum())
        if bad or not bool(torch.isfinite(got).all()):
            return f"{bad} elements beyond one rounding of the float64 reference"
    n = parity_elems * ITEMSIZE[dtype]
    ha, hb = a[:n].cpu().numpy(), b[:n].cpu().numpy()
    hd = np.empty_like(ha)
    _C.reduce_host(hd.ctypes.data, ha.ctypes.data, hb.ctypes.data, parity_elems, CODES[dtype],
                   OPS[op])
    bad = int((hd != dst[:n].cpu().numpy()).sum())
    return f"{bad} of the first {n} bytes differ from the host reducer" if bad else ""


def versions() -> dict:
    v = {"python": platform.python_version(), "torch": torch.__version__,
         "cuda_runtime_torch": torch.version.cuda, "numpy": np.__version__,
         "nccl_built_with": list(getattr(_C, "nccl_version", ())) or None}
    try:
        v["driver"] = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=30).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        v["driver"] = None
    try:
        v["ringreduce_commit"] = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True,
            timeout=30).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        v["ringreduce_commit"] = None
    return v


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--json", help="write the record here")
    p.add_argument("--mib", type=int, default=256, help="MiB per buffer (default 256)")
    p.add_argument("--iters", type=int, default=50, help="timed calls per measurement")
    p.add_argument("--warmup", type=int, default=5, help="untimed calls before each")
    p.add_argument("--dtypes", default=",".join(REDUCIBLE), help="comma-separated subset")
    p.add_argument("--ops", default=",".join(OPS), help="comma-separated subset")
    p.add_argument("--parity-elems", type=int, default=1 << 20,
                   help="elements compared with the host reducer per row")
    p.add_argument("--require-fraction", type=float, default=None,
                   help="exit 1 when a row's fraction_of_copy is below this")
    args = p.parse_args()
    if not (_C.has_cuda and torch.cuda.is_available()):
        print("needs a CUDA build of ringreduce and a GPU", file=sys.stderr)
        return 2

    dev = torch.cuda.current_device()
    props = torch.cuda.get_device_properties(dev)
    nbytes = args.mib << 20
    gen = torch.Generator(device="cuda").manual_seed(1)
    a = torch.empty(nbytes, dtype=torch.uint8, device="cuda")
    b = torch.empty_like(a)
    dst = torch.empty_like(a)
    x = torch.empty_like(a)  # torch add_'s accumulator, so a keeps its values
    stream = torch.cuda.current_stream().cuda_stream
    rows, failures = [], []
    print(f"{'dtype':>9} {'op':>5} {'ours GB/s':>10} {'copy GB/s':>10} {'fraction':>9} "
          f"{'add_ GB/s':>10}  check")
    for dtype in args.dtypes.split(","):
        count = nbytes // ITEMSIZE[dtype]
        copy_ms = median_ms(lambda: dst.copy_(a), args.iters, args.warmup)
        copy_gbps = gbps(2 * nbytes, copy_ms)
        add_gbps = None
        for op in args.ops.split(","):
            if _C.op_refusal(CODES[dtype], OPS[op]):
                continue
            fill(a, dtype, op, gen)
            fill(b, dtype, op, gen)
            if add_gbps is None and TORCH[dtype] is not None:
                x.copy_(a)
                xv, bv = x.view(TORCH[dtype]), b.view(TORCH[dtype])
                try:
                    add_gbps = gbps(3 * nbytes, median_ms(lambda: xv.add_(bv), args.iters,
                                                          args.warmup))
                except (RuntimeError, NotImplementedError):
                    add_gbps = float("nan")  # torch has no add for this dtype on CUDA

            def ours():
                _C.reduce_device(dev, stream, dst.data_ptr(), a.data_ptr(), b.data_ptr(), count,
                                 CODES[dtype], OPS[op])

            dst.fill_(0x5A)
            ours()
            torch.cuda.synchronize()
            why = check(dtype, op, a, b, dst, min(args.parity_elems, count))
            ms = median_ms(ours, args.iters, args.warmup)
            row = {"dtype": dtype, "op": op, "gbps": round(gbps(3 * nbytes, ms), 1),
                   "copy_gbps": round(copy_gbps, 1),
                   "fraction_of_copy": round(gbps(3 * nbytes, ms) / copy_gbps, 4),
                   "torch_add_gbps": None if add_gbps is None or add_gbps != add_gbps
                   else round(add_gbps, 1),
                   "ms": round(ms, 4), "check": why or "ok"}
            rows.append(row)
            if why:
                failures.append(f"{dtype} {op}: {why}")
            add_txt = f"{row['torch_add_gbps']:10.1f}" if row["torch_add_gbps"] else f"{'-':>10}"
            print(f"{dtype:>9} {op:>5} {row['gbps']:10.1f} {row['copy_gbps']:10.1f} "
                  f"{row['fraction_of_copy']:9.3f} {add_txt}  {row['check']}", flush=True)

    worst = min(rows, key=lambda r: r["fraction_of_copy"]) if rows else None
    record = {
        "machine": {"host": platform.node(), "platform": platform.platform(),
                    "cpus": os.cpu_count()},
        "gpu": {"name": props.name, "sms": props.multi_processor_count,
                "memory_bytes": props.total_memory,
                "l2_bytes": getattr(props, "L2_cache_size", None),
                "capability": f"{props.major}.{props.minor}"},
        "versions": versions(),
        "command": " ".join([Path(sys.executable).name] + sys.argv),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "settings": {"buffer_mib": args.mib, "iters": args.iters, "warmup": args.warmup,
                     "timing": "CUDA events per call, median", "bytes_ours": "3 x buffer",
                     "bytes_copy": "2 x buffer", "bytes_torch_add": "3 x buffer"},
        "rows": rows,
        "worst": worst,
        "failures": failures,
    }
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(record, indent=1) + "\n")
    if worst:
        print(f"worst: {worst['dtype']} {worst['op']} at {worst['fraction_of_copy']:.3f} of copy;"
              f" {len(failures)} check failures")
    for f in failures:
        print("FAIL", f)
    below = args.require_fraction is not None and worst is not None and \
        worst["fraction_of_copy"] < args.require_fraction
    return 1 if failures or below else 0


if __name__ == "__main__":
    sys.exit(main())
