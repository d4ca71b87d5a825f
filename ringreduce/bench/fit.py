"""The ring cost model, fitted to benchmark results and used to predict large scales.

    time ~= 2(N-1)*alpha + 2(N-1)/N*bytes*beta + (N-1)/N*bytes*gamma

alpha: seconds of latency per ring step; beta: seconds per byte on a link;
gamma: seconds per byte reduced. beta and gamma both multiply (N-1)/N*bytes
(with weights 2 and 1), for every N, so all-reduce timings alone determine
only delta = 2*beta + gamma, however many world sizes are given. Several
world sizes do test the model's N dependence and pin alpha better. beta and
gamma are split only with a separately measured reduction rate: the one the
benchmark stores in its JSON ("reduce_rate"), or --reduce-gbps.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from .cli import format_size
from .report import load_json

PREDICT_N = (8, 64, 512, 4096)
PREDICT_BYTES = (1 << 20, 64 << 20, 1 << 30)


@dataclass
class Point:
    nranks: int
    nbytes: int
    seconds: float


@dataclass
class Fit:
    alpha: float                  # seconds per step
    delta: float                  # seconds per byte of (N-1)/N*bytes: 2*beta + gamma
    beta: Optional[float]         # seconds per byte on a link, when split
    gamma: Optional[float]        # seconds per byte reduced, when known
    split: str                    # how beta and gamma were separated (or not)
    rms_rel: float                # root mean square relative residual
    worst_rel: float
    worst_at: Tuple[int, int]     # (N, bytes) of the worst residual
    npoints: int

    def time(self, nranks: int, nbytes: int) -> float:
        """Predicted seconds on links like the measured ones."""
        n = nranks
        return 2 * (n - 1) * self.alpha + (n - 1) / n * nbytes * self.delta


def fit_points(points: Sequence[Point], gamma: Optional[float] = None,
               gamma_source: str = "") -> Fit:
    """Least squares on relative error (weights 1/time, so 8 B and 256 MiB count
    alike) of time = 2(N-1)*alpha + (N-1)/N*bytes*delta."""
    pts = [p for p in points if p.seconds > 0 and p.nranks > 1]
    if len(pts) < 2:
        raise ValueError(f"need at least 2 timed sizes with more than one rank to fit, got "
                         f"{len(pts)}")
    n = np.array([p.nranks for p in pts], dtype=np.float64)
    b = np.array([p.nbytes for p in pts], dtype=np.float64)
    t = np.array([p.seconds for p in pts], dtype=np.float64)
    X = np.stack([2 * (n - 1), (n - 1) / n * b], axis=1)
    w = 1.0 / t
    coef, *_ = np.linalg.lstsq(X * w[:, None], t * w, rcond=None)
    alpha, delta = float(coef[0]), float(coef[1])
    rel = (X @ coef - t) / t
    worst = int(np.argmax(np.abs(rel)))
    if gamma is None:
        beta, split = None, ("not split: all-reduce timings determine only 2*beta + gamma; give "
                             "a reduction rate (--reduce-gbps) to split them")
    else:
        beta = (delta - gamma) / 2
        split = f"gamma from {gamma_source or 'the given reduction rate'}; beta = (delta - gamma)/2"
        if beta < 0:
            split += (" (negative: the measured reduction alone costs more than the fitted "
                      "per-byte total, so transfers and reductions overlap; beta clamped to 0)")
            beta = 0.0
    return Fit(alpha, delta, beta, gamma, split, float(np.sqrt(np.mean(rel ** 2))),
               float(abs(rel[worst])), (int(n[worst]), int(b[worst])), len(pts))


def predict(fit: Fit, nranks: int, nbytes: int, link_gbps: Optional[float] = None,
            link_alpha: Optional[float] = None) -> float:
    """Predicted seconds. With link_gbps (Gbit/s), one link of the ring is that
    slower inter-host link: a pipelined ring runs at its slowest link's pace,
    so beta becomes max(beta, 8 / (link_gbps * 1e9)) and alpha max(alpha,
    link_alpha). Without a beta/gamma split, gamma is taken as 0 (beta = delta/2,
    the largest beta the fit allows)."""
    n = nranks
    if link_gbps is None:
        return fit.time(n, nbytes)
    beta = fit.beta if fit.beta is not None else fit.delta / 2
    gamma = fit.gamma if fit.gamma is not None and fit.beta is not None else 0.0
    if fit.beta is not None and fit.gamma is not None and fit.delta < fit.gamma:
        gamma = fit.delta  # the clamped case: keep the measured total per-byte cost
    beta = max(beta, 8.0 / (link_gbps * 1e9))
    alpha = max(fit.alpha, link_alpha or 0.0)
    return 2 * (n - 1) * alpha + 2 * (n - 1) / n * nbytes * beta + (n - 1) / n * nbytes * gamma


def busbw_of(nranks: int, nbytes: int, seconds: float) -> float:
    """GB/s."""
    return nbytes / seconds / 1e9 * 2 * (nranks - 1) / nranks


def select(docs: Sequence[Dict[str, Any]], backend: Optional[str], dtype: Optional[str]
           ) -> Tuple[List[Point], str, str, str]:
    """Out-of-place, correct rows of one backend/dtype/op from every document."""
    rows = [(d["world_size"], r) for d in docs for r in d["results"]]
    names = list(dict.fromkeys(r["backend"] for _, r in rows))
    if backend is None:
        backend = "ringreduce" if "ringreduce" in names else next(
            (b for b in names if b.startswith("ringreduce")), None)
        if backend is None:
            raise ValueError(f"no ringreduce backend in the results (backends: {names}); "
                             f"pass --backend")
    elif backend not in names:
        raise ValueError(f"backend {backend!r} is not in the results (backends: {names})")
    mine = [(n, r) for n, r in rows if r["backend"] == backend and not r["inplace"]]
    dtypes = list(dict.fromkeys(r["dtype"] for _, r in mine))
    dtype = dtype or dtypes[0]
    if dtype not in dtypes:
        raise ValueError(f"dtype {dtype!r} has no {backend} rows (dtypes: {dtypes})")
    ops = list(dict.fromkeys(r["op"] for _, r in mine if r["dtype"] == dtype))
    op = "sum" if "sum" in ops else ops[0]
    pts = [Point(int(n), int(r["bytes"]), float(r["time_us"]) * 1e-6) for n, r in mine
           if r["dtype"] == dtype and r["op"] == op and not r.get("wrong")]
    return pts, backend, dtype, op


def _us(s: float) -> str:
    if s < 1e-3:
        return f"{s * 1e6:.1f} us"
    return f"{s * 1e3:.2f} ms" if s < 1 else f"{s:.2f} s"


def report(fit: Fit, link_gbps: float, link_alpha: Optional[float],
           ranks: Sequence[int] = PREDICT_N) -> str:
    lines = [f"alpha = {fit.alpha * 1e6:.2f} us per ring step",
             f"delta = 2*beta + gamma = {fit.delta * 1e9:.4f} ns/B "
             f"(an effective {1 / fit.delta / 1e9 if fit.delta > 0 else float('inf'):.2f} GB/s "
             f"of (N-1)/N*bytes)"]
    if fit.beta is not None:
        lines.append(f"gamma = {fit.gamma * 1e9:.4f} ns/B ({1 / fit.gamma / 1e9:.2f} GB/s "
                     f"reduced), beta = {fit.beta * 1e9:.4f} ns/B"
                     + (f" ({1 / fit.beta / 1e9:.2f} GB/s per link)" if fit.beta > 0 else ""))
    else:
        lines.append("beta, gamma: not separable from these results (see above); the inter-host "
                     "prediction takes gamma = 0")
    lines.append(f"split: {fit.split}")
    lines.append(f"fit: {fit.npoints} sizes, rms relative error {fit.rms_rel * 100:.1f}%, worst "
                 f"{fit.worst_rel * 100:.1f}% at N={fit.worst_at[0]}, "
                 f"{format_size(fit.worst_at[1])}B")
    la = link_alpha if link_alpha is not None else fit.alpha
    lines.append("")
    lines.append(f"# predictions: single host = every link like the measured ones; inter-host "
                 f"= the ring's bottleneck link at {link_gbps:g} Gbit/s, "
                 f"{max(la, fit.alpha) * 1e6:.1f} us per step")
    lines.append("#{:>6} {:>6}   {:>12} {:>12}   {:>12} {:>12}".format(
        "N", "size", "time", "busbw GB/s", "inter time", "inter busbw"))
    for n in ranks:
        for nb in PREDICT_BYTES:
            t1 = predict(fit, n, nb)
            t2 = predict(fit, n, nb, link_gbps, la)
            lines.append(" {:>6} {:>6}   {:>12} {:>12.2f}   {:>12} {:>12.2f}".format(
                n, format_size(nb), _us(t1), busbw_of(n, nb, t1), _us(t2), busbw_of(n, nb, t2)))
    return "\n".join(lines)


def main(args: argparse.Namespace) -> int:
    docs = [load_json(p) for p in args.fit]
    pts, backend, dtype, op = select(docs, args.backend, args.fit_dtype)
    gamma, source = None, ""
    if args.reduce_gbps is not None:
        if not args.reduce_gbps > 0:
            raise SystemExit(f"--reduce-gbps must be > 0, got {args.reduce_gbps}")
        gamma, source = 1.0 / (args.reduce_gbps * 1e9), f"--reduce-gbps {args.reduce_gbps:g}"
    else:
        rates = [d["reduce_rate"]["gbps"] for d in docs if d.get("reduce_rate")]
        if rates:
            g = min(rates)
            gamma = 1.0 / (g * 1e9)
            source = (f"the reduction rate the benchmark measured ({g:.2f} GB/s: "
                      f"{docs[0]['reduce_rate'].get('how', '')})")
    fit = fit_points(pts, gamma, source)
    world = sorted({p.nranks for p in pts})
    print(f"# ring cost model: backend {backend}, {dtype} {op}, out-of-place, "
          f"N = {', '.join(map(str, world))} ({', '.join(args.fit)})")
    print("# time = 2(N-1)*alpha + 2(N-1)/N*bytes*beta + (N-1)/N*bytes*gamma; least squares "
          "on relative error")
    if len(world) == 1:
        print("# one world size: alpha and the per-byte total delta = 2*beta + gamma are fitted")
    else:
        print("# several world sizes: fitted jointly; beta and gamma still enter only as "
              "2*beta + gamma (both scale with (N-1)/N*bytes)")
    ia = args.inter_host_latency_us
    ranks = getattr(args, "predict_ranks", None) or PREDICT_N
    print(report(fit, args.inter_host_gbps, None if ia is None else ia * 1e-6, ranks))
    return 0


def synthetic(alpha: float, beta: float, gamma: float, nranks: Sequence[int],
              sizes: Sequence[int], noise: float = 0.0, seed: int = 0) -> List[Point]:
    """Points from the model itself (for tests), with optional relative noise."""
    rng = np.random.default_rng(seed)
    out = []
    for n in nranks:
        for b in sizes:
            t = 2 * (n - 1) * alpha + 2 * (n - 1) / n * b * beta + (n - 1) / n * b * gamma
            out.append(Point(n, b, t * (1 + noise * rng.standard_normal()) if noise else t))
    return out

