"""Cost models of all-reduce, fitted to benchmark results and used to predict
large scales.

Every model has the form  time ~= L(N)*alpha + V(N, bytes)*(2*beta + gamma):

    ring          L = 2(N-1)   V = (N-1)/N * bytes   2(N-1) steps of bytes/N each
    ps            L = 2(N-1)   V = (N-1) * bytes     one server receives N-1 whole
                                                     buffers, reduces them, sends
                                                     N-1 results back
    sharded-ps    L = 2(N-1)   V = (N-1)/N * bytes   every rank serves 1/N of the
                                                     buffer to all the others

alpha: seconds of latency per message step; beta: seconds per byte on a link;
gamma: seconds per byte reduced. beta and gamma multiply the same V (with
weights 2 and 1), for every N, so all-reduce timings alone determine only
delta = 2*beta + gamma, however many world sizes are given. Several world
sizes do test the model's N dependence and pin alpha better. beta and gamma
are split only with a separately measured reduction rate: the one the
benchmark stores in its JSON ("reduce_rate"), or --reduce-gbps.

The busiest link is what limits scale: the parameter server's link carries
2(N-1)*bytes, growing with N, while each ring link (and each rank's link in
the sharded server) carries 2(N-1)/N*bytes, about 2x the data whatever N is.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from .cli import format_size
from .rows import load_json

PREDICT_N = (8, 64, 512, 4096)
PREDICT_BYTES = (1 << 20, 64 << 20, 1 << 30)


@dataclass(frozen=True)
class Model:
    name: str
    backends: Tuple[str, ...]              # whose rows it fits, in order of preference
    steps: Callable[[int], float]          # L(N): alpha's coefficient
    volume: Callable[[int, float], float]  # V(N, bytes): delta's coefficient
    link: Callable[[int, float], float]    # bytes on the busiest link per all-reduce
    what: str


MODELS: Dict[str, Model] = {m.name: m for m in (
    Model("ring", ("ringreduce-ring", "ringreduce"), lambda n: 2 * (n - 1),
          lambda n, b: (n - 1) / n * b, lambda n, b: 2 * (n - 1) / n * b,
          "2(N-1) steps, each moving bytes/N over every link"),
    Model("ps", ("ringreduce-ps",), lambda n: 2 * (n - 1),
          lambda n, b: (n - 1) * b, lambda n, b: 2 * (n - 1) * b,
          "one server receives, reduces and returns N-1 whole buffers"),
    Model("sharded-ps", ("ringreduce-ps-sharded",), lambda n: 2 * (n - 1),
          lambda n, b: (n - 1) / n * b, lambda n, b: 2 * (n - 1) / n * b,
          "every rank serves 1/N of the buffer: N-1 messages of bytes/N each way"),
)}


@dataclass
class Point:
    nranks: int
    nbytes: int
    seconds: float


@dataclass
class Fit:
    alpha: float                  # seconds per step
    delta: float                  # seconds per byte of V: 2*beta + gamma
    beta: Optional[float]         # seconds per byte on a link, when split
    gamma: Optional[float]        # seconds per byte reduced, when known
    split: str                    # how beta and gamma were separated (or not)
    rms_rel: float                # root mean square relative residual
    worst_rel: float
    worst_at: Tuple[int, int]     # (N, bytes) of the worst residual
    npoints: int
    model: str = "ring"

    def time(self, nranks: int, nbytes: int) -> float:
        """Predicted seconds on links like the measured ones."""
        m = MODELS[self.model]
        return m.steps(nranks) * self.alpha + m.volume(nranks, nbytes) * self.delta


def fit_points(points: Sequence[Point], gamma: Optional[float] = None,
               gamma_source: str = "", model: str = "ring") -> Fit:
    """Least squares on relative error (weights 1/time, so 8 B and 256 MiB count
    alike) of time = L(N)*alpha + V(N, bytes)*delta."""
    m = MODELS[model]
    pts = [p for p in points if p.seconds > 0 and p.nranks > 1]
    if len(pts) < 2:
        raise ValueError(f"need at least 2 timed sizes with more than one rank to fit, got "
                         f"{len(pts)}")
    n = np.array([p.nranks for p in pts], dtype=np.float64)
    b = np.array([p.nbytes for p in pts], dtype=np.float64)
    t = np.array([p.seconds for p in pts], dtype=np.float64)
    X = np.stack([np.array([m.steps(int(k)) for k in n], dtype=np.float64),
                  np.array([m.volume(int(k), v) for k, v in zip(n, b)], dtype=np.float64)],
                 axis=1)
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
               float(abs(rel[worst])), (int(n[worst]), int(b[worst])), len(pts), model)


def predict(fit: Fit, nranks: int, nbytes: int, link_gbps: Optional[float] = None,
            link_alpha: Optional[float] = None) -> float:
    """Predicted seconds. With link_gbps (Gbit/s), the busiest link is that
    slower inter-host link: a pipelined all-reduce runs at its slowest link's
    pace, so beta becomes max(beta, 8 / (link_gbps * 1e9)) and alpha max(alpha,
    link_alpha). Without a beta/gamma split, gamma is taken as 0 (beta = delta/2,
    the largest beta the fit allows)."""
    m = MODELS[fit.model]
    n = nranks
    if link_gbps is None:
        return fit.time(n, nbytes)
    beta = fit.beta if fit.beta is not None else fit.delta / 2
    gamma = fit.gamma if fit.gamma is not None and fit.beta is not None else 0.0
    if fit.beta is not None and fit.gamma is not None and fit.delta < fit.gamma:
        gamma = fit.delta  # the clamped case: keep the measured total per-byte cost
    beta = max(beta, 8.0 / (link_gbps * 1e9))
    alpha = max(fit.alpha, link_alpha or 0.0)
    return m.steps(n) * alpha + m.volume(n, nbytes) * (2 * beta + gamma)


def busbw_of(nranks: int, nbytes: int, seconds: float) -> float:
    """GB/s."""
    return nbytes / seconds / 1e9 * 2 * (nranks - 1) / nranks


def select(docs: Sequence[Dict[str, Any]], backend: Optional[str], dtype: Optional[str],
           model: str = "ring") -> Tuple[List[Point], str, str, str]:
    """Out-of-place, eager, correct rows of one backend/dtype/op from every document."""
    rows = [(d["world_size"], r) for d in docs for r in d["results"]]
    names = list(dict.fromkeys(r["backend"] for _, r in rows))
    if backend is None:
        backend = next((b for b in MODELS[model].backends if b in names), None)
        if backend is None and model == "ring":
            backend = next((b for b in names if b.startswith("ringreduce")), None)
        if backend is None:
            raise ValueError(f"no {' or '.join(MODELS[model].backends)} rows in the results "
                             f"(backends: {names}); pass --backend")
    elif backend not in names:
        raise ValueError(f"backend {backend!r} is not in the results (backends: {names})")
    mine = [(n, r) for n, r in rows if r["backend"] == backend and not r["inplace"]
            and not r.get("graph", False)]
    dtypes = list(dict.fromkeys(r["dtype"] for _, r in mine))
    if not dtypes:
        raise ValueError(f"backend {backend!r} has no out-of-place eager rows")
    dtype = dtype or dtypes[0]
    if dtype not in dtypes:
        raise ValueError(f"dtype {dtype!r} has no {backend} rows (dtypes: {dtypes})")
    ops = list(dict.fromkeys(r["op"] for _, r in mine if r["dtype"] == dtype))
    op = "sum" if "sum" in ops else ops[0]
    pts = [Point(int(n), int(r["bytes"]), float(r["time_us"]) * 1e-6) for n, r in mine
           if r["dtype"] == dtype and r["op"] == op and not r.get("wrong")]
    return pts, backend, dtype, op


def human_time(s: float) -> str:
    if s < 1e-3:
        return f"{s * 1e6:.1f} us"
    return f"{s * 1e3:.2f} ms" if s < 1 else f"{s:.2f} s"


def human_bytes(b: float) -> str:
    for unit, k in (("TiB", 40), ("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if b >= 1 << k:
            return f"{b / (1 << k):.1f} {unit}"
    return f"{b:.0f} B"


def describe(fit: Fit) -> List[str]:
    lines = [f"alpha = {fit.alpha * 1e6:.2f} us per step",
             f"delta = 2*beta + gamma = {fit.delta * 1e9:.4f} ns/B "
             f"(an effective {1 / fit.delta / 1e9 if fit.delta > 0 else float('inf'):.2f} GB/s "
             f"of V)"]
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
    return lines


def report(fit: Fit, link_gbps: float, link_alpha: Optional[float],
           ranks: Sequence[int] = PREDICT_N) -> str:
    m = MODELS[fit.model]
    lines = describe(fit)
    la = link_alpha if link_alpha is not None else fit.alpha
    lines.append("")
    lines.append(f"# predictions ({m.name}): single host = every link like the measured ones; "
                 f"inter-host = the busiest link at {link_gbps:g} Gbit/s, "
                 f"{max(la, fit.alpha) * 1e6:.1f} us per step")
    lines.append("#{:>6} {:>6}   {:>12} {:>12}   {:>12} {:>12}   {:>12}".format(
        "N", "size", "time", "busbw GB/s", "inter time", "inter busbw", "busiest link"))
    for n in ranks:
        for nb in PREDICT_BYTES:
            t1 = predict(fit, n, nb)
            t2 = predict(fit, n, nb, link_gbps, la)
            lines.append(" {:>6} {:>6}   {:>12} {:>12.2f}   {:>12} {:>12.2f}   {:>12}".format(
                n, format_size(nb), human_time(t1), busbw_of(n, nb, t1), human_time(t2),
                busbw_of(n, nb, t2), human_bytes(m.link(n, nb))))
    return "\n".join(lines)


def side_by_side(fits: Dict[str, Fit], link_gbps: float, ranks: Sequence[int],
                 sizes: Sequence[int] = (64 << 20, 1 << 30)) -> str:
    """Inter-host predictions of every fitted model, one line per (N, size)."""
    order = [k for k in MODELS if k in fits]
    head = "#{:>6} {:>6}".format("N", "size") + "".join(
        f"   {k + ' time':>16} {k + ' link':>16}" for k in order)
    lines = [f"# side by side: inter-host, busiest link at {link_gbps:g} Gbit/s", head]
    for n in ranks:
        for nb in sizes:
            cells = []
            for k in order:
                t = predict(fits[k], n, nb, link_gbps, None)
                cells.append(f"   {human_time(t):>16} {human_bytes(MODELS[k].link(n, nb)):>16}")
            lines.append(" {:>6} {:>6}".format(n, format_size(nb)) + "".join(cells))
    return "\n".join(lines)


def measured_gamma(docs: Sequence[Dict[str, Any]], reduce_gbps: Optional[float]
                   ) -> Tuple[Optional[float], str]:
    if reduce_gbps is not None:
        if not reduce_gbps > 0:
            raise SystemExit(f"--reduce-gbps must be > 0, got {reduce_gbps}")
        return 1.0 / (reduce_gbps * 1e9), f"--reduce-gbps {reduce_gbps:g}"
    rates = [d["reduce_rate"]["gbps"] for d in docs if d.get("reduce_rate")]
    if not rates:
        return None, ""
    g = min(rates)
    return 1.0 / (g * 1e9), (f"the reduction rate the benchmark measured ({g:.2f} GB/s: "
                             f"{docs[0]['reduce_rate'].get('how', '')})")


def main(args: argparse.Namespace) -> int:
    docs = [load_json(p) for p in args.fit]
    gamma, source = measured_gamma(docs, args.reduce_gbps)
    ia = args.inter_host_latency_us
    ranks = getattr(args, "predict_ranks", None) or PREDICT_N
    wanted = list(MODELS) if getattr(args, "model", "ring") == "all" else [args.model]
    fits: Dict[str, Fit] = {}
    for model in wanted:
        try:
            pts, backend, dtype, op = select(docs, None if len(wanted) > 1 else args.backend,
                                             args.fit_dtype, model)
        except ValueError as e:
            if len(wanted) == 1:
                raise SystemExit(f"ringreduce-bench --fit: {e}")
            print(f"# {model}: not fitted: {e}")
            continue
        fit = fits[model] = fit_points(pts, gamma, source, model)
        world = sorted({p.nranks for p in pts})
        m = MODELS[model]
        print(f"# {model} cost model ({m.what}): backend {backend}, {dtype} {op}, out-of-place, "
              f"N = {', '.join(map(str, world))} ({', '.join(args.fit)})")
        print("# time = L(N)*alpha + V(N, bytes)*(2*beta + gamma); least squares on relative "
              "error")
        if len(world) == 1:
            print("# one world size: alpha and the per-byte total delta = 2*beta + gamma are "
                  "fitted")
        else:
            print("# several world sizes: fitted jointly; beta and gamma still enter only as "
                  "2*beta + gamma")
        print(report(fit, args.inter_host_gbps, None if ia is None else ia * 1e-6, ranks))
        print()
    if len(fits) > 1:
        print(side_by_side(fits, args.inter_host_gbps, ranks))
    return 0 if fits else 2


def synthetic(alpha: float, beta: float, gamma: float, nranks: Sequence[int],
              sizes: Sequence[int], noise: float = 0.0, seed: int = 0,
              model: str = "ring") -> List[Point]:
    """Points from a model itself (for tests), with optional relative noise."""
    m = MODELS[model]
    rng = np.random.default_rng(seed)
    out = []
    for n in nranks:
        for b in sizes:
            t = m.steps(n) * alpha + m.volume(n, b) * (2 * beta + gamma)
            out.append(Point(n, b, t * (1 + noise * rng.standard_normal()) if noise else t))
    return out
