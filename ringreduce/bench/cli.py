"""Command-line parsing for ringreduce-bench, in the style of nccl-tests."""
from __future__ import annotations

import argparse
import math
import os
import re
from typing import List, Optional, Sequence

from . import baselines

DTYPES = ("float32", "float16", "bfloat16", "float64", "int8", "uint8", "int32", "int64")
OPS = ("sum", "prod", "min", "max", "avg")
MODELS = ("ring", "ps", "sharded-ps", "all")

_UNITS = {"": 1, "B": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
_SIZE_RE = re.compile(r"^\s*(\d+)\s*([KMGT]?)(I?B)?\s*$", re.IGNORECASE)


def parse_size(text: str) -> int:
    """'8', '1K', '16M', '1G', '4KiB' -> bytes (binary units: 1K = 1024 bytes)."""
    m = _SIZE_RE.match(str(text))
    if not m:
        raise ValueError(f"bad size {text!r}: use a whole number of bytes with an optional "
                         f"binary unit K, M, G or T (e.g. 8, 1K, 16M, 1G)")
    unit = m.group(2).upper()
    if m.group(3) and m.group(3).upper() == "B" and not unit:
        unit = "B"
    return int(m.group(1)) * _UNITS[unit]


def format_size(nbytes: int) -> str:
    """Bytes -> the shortest exact binary form, e.g. 1048576 -> '1M'."""
    for unit in ("T", "G", "M", "K"):
        if nbytes >= _UNITS[unit] and nbytes % _UNITS[unit] == 0:
            return f"{nbytes // _UNITS[unit]}{unit}"
    return str(nbytes)


def _size_arg(text: str) -> int:
    try:
        return parse_size(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _size_list_arg(text: str) -> List[int]:
    out = [_size_arg(t) for t in text.split(",") if t.strip()]
    if not out:
        raise argparse.ArgumentTypeError(f"empty size list {text!r}")
    return list(dict.fromkeys(out))


def _list_arg(allowed, what: str):
    """A comma list of names from `allowed` (a sequence, or a function giving one)."""
    def parse(text: str) -> List[str]:
        items = [t.strip() for t in text.split(",") if t.strip()]
        if not items:
            raise argparse.ArgumentTypeError(f"empty {what} list {text!r}")
        allowed_now = allowed() if callable(allowed) else allowed
        for t in items:
            if what == "backend" and baselines.forced_row(t) is not None:
                continue
            if t not in allowed_now:
                raise argparse.ArgumentTypeError(
                    f"unknown {what} {t!r}; choose from {', '.join(allowed_now)}")
        return list(dict.fromkeys(items))
    return parse


def _int_at_least(lo: int):
    """An argparse type: an integer >= lo, the bad value named otherwise."""
    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if v < lo:
            raise argparse.ArgumentTypeError(f"expected an integer >= {lo}, got {v}")
        return v
    return parse


_positive_int = _int_at_least(1)
_nonneg_int = _int_at_least(0)


def _rank_list(text: str) -> List[int]:
    out = [_int_at_least(2)(t) for t in text.split(",") if t.strip()]
    if not out:
        raise argparse.ArgumentTypeError(f"empty rank list {text!r}")
    return out


def _factor(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"step factor must be a number, got {text!r}") from None
    if v <= 1:
        raise argparse.ArgumentTypeError(f"step factor must be > 1, got {text}")
    return v


_RANGE_RE = re.compile(r"^\s*([^.x]+?)\s*\.\.\s*([^.x]+?)\s*(?:x\s*([0-9.]+))?\s*$",
                       re.IGNORECASE)


def parse_size_list(text: str) -> List[int]:
    """'8..64K,256K..256Mx4,1G' -> the sizes in bytes: a range LO..HI steps by
    the factor after x (default 2) and includes HI when it lies on its grid."""
    out: List[int] = []
    for item in (t for t in text.split(",") if t.strip()):
        m = _RANGE_RE.match(item)
        if m:
            f = _factor(m.group(3)) if m.group(3) else 2.0
            lo, hi = parse_size(m.group(1)), parse_size(m.group(2))
            if lo > hi:
                raise ValueError(f"bad size range {item!r}: {lo} is larger than {hi}")
            out.extend(sizes(lo, hi, f))
        else:
            out.append(parse_size(item))
    if not out:
        raise ValueError(f"empty size list {text!r}")
    return sorted(set(out))


def _sizes_arg(text: str) -> List[int]:
    try:
        return parse_size_list(text)
    except (ValueError, argparse.ArgumentTypeError) as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ringreduce-bench",
        description="All-reduce bandwidth benchmark: ringreduce and baselines side by side, "
                    "in the nccl-tests format. Launch under mpirun or torchrun; alone it runs "
                    "one process and prints the mpirun line to use.")
    p.add_argument("-b", "--minbytes", type=_size_arg, default=parse_size("8"),
                   help="smallest message size in bytes (8, 1K, 1M, 1G; binary units)")
    p.add_argument("-e", "--maxbytes", type=_size_arg, default=parse_size("32M"),
                   help="largest message size in bytes, included when it lies on the grid "
                        "b*f^k")
    p.add_argument("-f", "--stepfactor", type=_factor, default=2.0,
                   help="multiply the size by this factor from one size to the next")
    p.add_argument("--sizes", type=_sizes_arg, default=None, metavar="LIST",
                   help="the sizes instead of -b/-e/-f: a comma list of sizes and ranges "
                        "LO..HI[xF], e.g. 8..64K,256K..256Mx4")
    p.add_argument("-d", "--datatype", type=_list_arg(DTYPES, "dtype"), default=["float32"],
                   help=f"dtype or comma list ({', '.join(DTYPES)})")
    p.add_argument("-o", "--op", type=_list_arg(OPS, "op"), default=["sum"],
                   help=f"reduction op or comma list ({', '.join(OPS)})")
    p.add_argument("-w", "--warmup_iters", type=_nonneg_int, default=5,
                   help="warm-up iterations per size, backend and mode")
    p.add_argument("-n", "--iters", type=_positive_int, default=20,
                   help="timed iterations (graph: replays) per size, backend and mode (the "
                        "most, with --budget)")
    p.add_argument("-c", "--check", type=int, choices=(0, 1), default=1,
                   help="check results outside the timed loop (1) or not (0)")
    p.add_argument("--budget", type=float, default=0.0, metavar="SECONDS",
                   help="aim for about this many seconds of timed iterations per size, backend "
                        "and mode: iterations = clamp(budget / first warm-up time, "
                        "--min-iters, -n). 0 (default): always -n")
    p.add_argument("--min-iters", type=_positive_int, default=3,
                   help="fewest timed iterations under --budget")
    p.add_argument("--backends", type=_list_arg(baselines.names, "backend"), default=None,
                   help="comma list of " + ", ".join(baselines.names()) + "; a ringreduce row "
                        "with an algorithm forced is written ROW:ALGO, e.g. "
                        "ringreduce:recursive_doubling. Default: "
                        + ",".join(baselines.HOST_DEFAULT) + " on cpu; "
                        + ",".join(baselines.DEVICE_DEFAULT) + " on cuda")
    p.add_argument("--plugin", action="append", default=[], metavar="FILE.py|MODULE",
                   help="import a plug-in that registers more backends "
                        "(ringreduce.bench.baselines.register) before --backends is read")
    p.add_argument("--device", choices=("cpu", "cuda"), default=None,
                   help="where the buffers live (default: cuda when torch sees a GPU and "
                        "ringreduce was built with CUDA, else cpu)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--inplace-only", action="store_true", help="time in-place only")
    mode.add_argument("--outofplace-only", action="store_true", help="time out-of-place only")
    graph = p.add_argument_group("CUDA graphs (as nccl-tests -G)")
    graph.add_argument("--graph", action="store_true",
                       help="also time CUDA graph replays: per size, K calls captured once "
                            "(torch.cuda.graph) after warm-up, each replay timed with events, "
                            "time = replay / K; rows that cannot be captured are skipped with "
                            "the reason")
    graph.add_argument("--graph-iters", type=_positive_int, default=20, metavar="K",
                       help="calls captured in one graph (default 20)")
    graph.add_argument("--graph-only", action="store_true",
                       help="time graph replays only, no eager calls (implies --graph)")
    p.add_argument("--chunk-bytes", type=_size_list_arg, default=None,
                   help="ringreduce pipelining chunk in bytes (default: the library's); a comma "
                        "list (64K,1M,4M) times each ringreduce backend once per chunk size, "
                        "interleaved, as backends named e.g. ringreduce@64K")
    p.add_argument("--seed", type=int, default=1234, help="seed for the input data")
    p.add_argument("--json", metavar="PATH", default=None,
                   help="write results as JSON (rank 0); a bare file name lands in --out-dir")
    p.add_argument("--plot", metavar="PATH", default=None,
                   help="write a PNG of busbw and time against size (rank 0); a bare file name "
                        "lands in --out-dir")
    p.add_argument("--out-dir", metavar="DIR", default="out",
                   help="where --json/--plot files named without a directory go (default out/)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    fit = p.add_argument_group("cost model (no launch needed)")
    fit.add_argument("--fit", metavar="RESULTS.json", nargs="+", default=None,
                     help="fit a cost model to one or more JSON results and predict "
                          "large scales instead of benchmarking")
    fit.add_argument("--model", choices=MODELS, default="ring",
                     help="ring (default), ps (parameter server), sharded-ps, or all three "
                          "side by side, each on its own backend's rows")
    fit.add_argument("--backend", default=None,
                     help="backend whose out-of-place eager rows --fit uses (default: the "
                          "model's: ringreduce for ring, ringreduce-ps, ringreduce-ps-sharded)")
    fit.add_argument("--fit-dtype", default=None, help="dtype whose rows --fit uses "
                     "(default: the first in the file)")
    fit.add_argument("--predict-ranks", type=_rank_list,
                     default=None, metavar="N,N,...",
                     help="world sizes to predict (default 8,64,512,4096)")
    fit.add_argument("--inter-host-gbps", type=float, default=25.0,
                     help="bandwidth of the slower inter-host link for predictions, Gbit/s")
    fit.add_argument("--inter-host-latency-us", type=float, default=None,
                     help="per-step latency over the inter-host link, microseconds "
                          "(default: the fitted alpha)")
    fit.add_argument("--reduce-gbps", type=float, default=None,
                     help="local reduction rate in GB/s of reduced data, to split beta from "
                          "gamma (default: the rate the benchmark measured and stored)")
    return p


def load_plugins(argv: Optional[Sequence[str]]) -> None:
    """Import every --plugin before the full parse, so --backends knows its names."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--plugin", action="append", default=[])
    known, _ = pre.parse_known_args(argv)
    for spec in known.plugin:
        try:
            baselines.load_plugin(spec)
        except Exception as e:
            raise SystemExit(f"ringreduce-bench: --plugin {spec}: {type(e).__name__}: {e}")


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """Parse and cross-check the arguments; errors exit with a message naming the value."""
    load_plugins(argv)
    p = build_parser()
    args = p.parse_args(argv)
    if args.fit is None and args.sizes is None and args.minbytes > args.maxbytes:
        p.error(f"-b {args.minbytes} is larger than -e {args.maxbytes}")
    if args.budget < 0:
        p.error(f"--budget must be >= 0 seconds, got {args.budget}")
    for c in args.chunk_bytes or []:
        if c < 1:
            p.error(f"--chunk-bytes must be >= 1 byte, got {c}")
    if args.graph_only:
        args.graph = True
    return args


def sizes(minbytes: int, maxbytes: int, factor: float) -> List[int]:
    """The message sizes in bytes: minbytes * factor^k up to maxbytes, maxbytes
    included when it lies on that grid. Each size is computed from minbytes
    (not from the previous size), so a fractional factor does not drift; a
    factor too small to change a size steps by one byte."""
    out: List[int] = []
    k = 0
    while True:
        exact = minbytes * factor ** k
        s = int(round(exact)) if abs(exact - round(exact)) <= 1e-9 * max(exact, 1) \
            else int(math.floor(exact))
        if out and s <= out[-1]:
            s = out[-1] + 1
        if s > maxbytes:
            break
        out.append(s)
        k += 1
        if minbytes == 0 and k == 1:
            break  # 0 * f^k stays 0: one size
    return out


def output_path(path: Optional[str], out_dir: str) -> Optional[str]:
    """Where --json/--plot write: a bare file name lands in out_dir."""
    if path is None or os.path.dirname(path):
        return path
    return os.path.join(out_dir, path)
