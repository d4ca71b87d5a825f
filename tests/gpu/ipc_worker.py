"""Multi-rank check and timing of the CUDA-IPC all-reduce (ringreduce._C.IpcAllreduce).

Run under mpirun, one rank per GPU:

  mpirun -np 2 python tests/gpu/ipc_worker.py --mode check
  mpirun -np 2 python tests/gpu/ipc_worker.py --mode time [--max-bytes 1073741824] [--json out.json]

check: every dtype (float32, bfloat16, float16) x op (sum, prod, min, max, avg) x many counts
  (0, 1, odd, not a multiple of 16 bytes, around the one-shot limit, larger than the IPC
  buffer), in place and out of place, aligned and misaligned, auto and forced algorithms.
  Each result must equal, bit for bit, a host emulation of the documented order (fold in
  float over ranks 0..N-1, divide for avg, round once), lie within a bound of a float64
  reference, and be identical on every rank. Then bursts of back-to-back calls with changing
  data, alternating algorithms and streams and ranks skewed by sleep kernels, checked after
  one final synchronisation (this is where a flag or buffer-reuse race shows up).
  Prints "IPC CHECK OK" per rank on success; exits 1 on any failure.
time: for sizes 8 B .. --max-bytes, our time vs torch.distributed NCCL all_reduce, both
  timed with CUDA events in this process (warm-up, then the median over many iterations),
  with busbw = 2(N-1)/N * bytes / time. Rank 0 prints a table and "RESULT {json}" lines.

Prints "SKIP: ..." and exits 0 when the build has no IpcAllreduce or the GPUs are not peers.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import socket
import statistics
import sys

os.environ.setdefault("NCCL_NVLS_ENABLE", "0")  # compare against NCCL without NVLink SHARP

import torch  # noqa: E402
from mpi4py import MPI  # noqa: E402

DTYPE_CODE = {torch.float16: 0, torch.bfloat16: 1, torch.float32: 2}
OP_CODE = {"sum": 0, "prod": 1, "min": 2, "max": 3, "avg": 4}
EPS_OUT = {torch.float32: 2.0 ** -24, torch.bfloat16: 2.0 ** -8, torch.float16: 2.0 ** -11}
TINY_OUT = {torch.float32: 2.0 ** -149, torch.bfloat16: 2.0 ** -133, torch.float16: 2.0 ** -24}
EPS_ACC = 2.0 ** -24  # every dtype accumulates in float

COMM = MPI.COMM_WORLD
RANK = COMM.Get_rank()
SIZE = COMM.Get_size()


def say(*a) -> None:
    print(f"[rank {RANK}]", *a, flush=True)


def make_ipc(buffer_bytes: int, timeout: float):
    from ringreduce import _C

    if not hasattr(_C, "IpcAllreduce"):
        return None, "ringreduce._C has no IpcAllreduce (CPU-only build or not wired in)"
    device = torch.cuda.current_device()
    ipc = _C.IpcAllreduce(RANK, SIZE, device, buffer_bytes, COMM.allgather, timeout)
    if not ipc.enabled:
        return None, f"IPC path disabled: {ipc.disabled_reason}"
    return ipc, ""


# ---------------------------------------------------------------- inputs and expectations

def make_input(seed: int, r: int, count: int, dtype: torch.dtype, op: str) -> torch.Tensor:
    """Rank r's input for one case, on the CPU; every rank can rebuild every rank's."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + r * 7919 + 17)
    x = torch.randn(count, generator=g, dtype=torch.float64)
    if op == "prod":
        x = 1.0 + x / 64  # keeps N-fold products far from overflow and underflow
    elif op in ("sum", "avg"):
        x = x * 4
    return x.to(dtype)


def emulate(xs: list[torch.Tensor], op: str, dtype: torch.dtype) -> torch.Tensor:
    """The documented result: fold in float over ranks 0..N-1, avg divides, round once."""
    acc = xs[0].float()
    for x in xs[1:]:
        v = x.float()
        if op in ("sum", "avg"):
            acc = acc + v
        elif op == "prod":
            acc = acc * v
        elif op == "min":
            acc = torch.where(v < acc, v, acc)
        else:
            acc = torch.where(acc < v, v, acc)
    if op == "avg":
        acc = acc / float(len(xs))
    return acc.to(dtype)


def reference(xs: list[torch.Tensor], op: str) -> tuple[torch.Tensor, torch.Tensor]:
    """float64 result and the sum of |inputs| (the scale of the rounding error)."""
    ds = [x.double() for x in xs]
    if op in ("sum", "avg"):
        ref = torch.stack(ds).sum(0)
    elif op == "prod":
        ref = torch.stack(ds).prod(0)
    elif op == "min":
        ref = torch.stack(ds).min(0).values
    else:
        ref = torch.stack(ds).max(0).values
    scale = torch.stack([d.abs() for d in ds]).sum(0)
    if op == "avg":
        ref = ref / len(xs)
        scale = scale / len(xs)
    return ref, scale


def bound(ref: torch.Tensor, scale: torch.Tensor, op: str, dtype: torch.dtype) -> torch.Tensor:
    n = SIZE
    if op in ("min", "max"):
        return torch.zeros_like(ref)  # the result is one of the inputs, exactly
    if op == "prod":
        acc_err = 2 * n * EPS_ACC * ref.abs()
    else:
        acc_err = 2 * n * EPS_ACC * scale
    return acc_err + EPS_OUT[dtype] * ref.abs() + TINY_OUT[dtype]


def digest(t: torch.Tensor) -> str:
    return hashlib.sha256(t.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes()).hexdigest()


# ---------------------------------------------------------------- check mode

class Checker:
    def __init__(self, ipc, stream: torch.cuda.Stream):
        self.ipc = ipc
        self.stream = stream
        self.failures: list[str] = []
        self.checked = 0

    def fail(self, what: str) -> None:
        self.failures.append(what)
        say("FAIL", what)

    def verify(self, tag: str, got: torch.Tensor, xs: list[torch.Tensor], op: str,
               dtype: torch.dtype) -> None:
        """Bitwise vs the emulation, bounded vs float64, same bits on every rank."""
        self.checked += 1
        got = got.cpu()
        want = emulate(xs, op, dtype)
        if got.numel():
            same = got.view(torch.uint8).numpy().tobytes() == want.view(torch.uint8).numpy().tobytes()
            if not same:
                diff = (got.float() != want.float()).nonzero()
                i = int(diff[0]) if diff.numel() else -1
                self.fail(f"{tag}: not the rank-order fold at element {i}: got "
                          f"{got[i].item() if i >= 0 else '?'} want {want[i].item() if i >= 0 else '?'} "
                          f"({diff.numel()} elements differ)")
            ref, scale = reference(xs, op)
            err = (got.double() - ref).abs()
            lim = bound(ref, scale, op, dtype)
            over = (err > lim).nonzero()
            if over.numel():
                i = int(over[0])
                self.fail(f"{tag}: element {i} = {got[i].item()} vs float64 {ref[i].item()} "
                          f"(|err| {err[i].item():.3g} > {lim[i].item():.3g})")
        hashes = COMM.allgather(digest(got))
        if len(set(hashes)) != 1:
            self.fail(f"{tag}: ranks disagree on the bits")

    def one(self, seed: int, count: int, dtype: torch.dtype, op: str, in_place: bool,
            misaligned: bool) -> None:
        es = torch.tensor([], dtype=dtype).element_size()
        xs = [make_input(seed, q, count, dtype, op) for q in range(SIZE)]
        shift = 1 if (misaligned and RANK % 2 == 1) else 0  # odd ranks only: alignments differ
        base = torch.empty(count + 16, dtype=dtype, device="cuda")
        x = base[shift:shift + count]
        x.copy_(xs[RANK])
        if in_place:
            out = x
        else:
            obase = torch.full((count + 16,), float("nan"), dtype=dtype, device="cuda")
            out = obase[shift:shift + count]
        with torch.cuda.stream(self.stream):
            self.stream.wait_stream(torch.cuda.default_stream())
            self.ipc.run(x.data_ptr(), out.data_ptr(), count, DTYPE_CODE[dtype], OP_CODE[op],
                         self.stream.cuda_stream)
        self.stream.synchronize()
        algo = self.ipc.algorithm(count, DTYPE_CODE[dtype])
        tag = (f"{algo} count={count} ({count * es} B) {str(dtype)[6:]} {op} "
               f"{'in-place' if in_place else 'out-of-place'}{' misaligned' if misaligned else ''}")
        self.verify(tag, out, xs, op, dtype)
        if self.ipc.failed:
            raise RuntimeError(f"{tag}: the IPC kernel timed out or was aborted")

    def burst(self, seed: int, calls: int) -> None:
        """Back-to-back calls, no host sync, shapes and streams changing, ranks skewed."""
        streams = [self.stream, torch.cuda.Stream()]
        counts = [1, 4099, 70001, 3, 262147, 17, 1_500_007, 1000]
        dtype_cycle = [torch.float32, torch.bfloat16, torch.float16]
        plan = []
        for i in range(calls):
            count = counts[i % len(counts)]
            dtype = dtype_cycle[i % 3]
            op = ["sum", "avg", "max", "sum", "prod"][i % 5]
            plan.append((count, dtype, op))
        inputs, outs, xs_all = [], [], []
        for i, (count, dtype, op) in enumerate(plan):
            xs = [make_input(seed + i, q, count, dtype, op) for q in range(SIZE)]
            xs_all.append(xs)
            inputs.append(xs[RANK].cuda())
            outs.append(torch.empty(count, dtype=dtype, device="cuda"))
        torch.cuda.synchronize()
        COMM.Barrier()
        for i, (count, dtype, op) in enumerate(plan):
            s = streams[(i // 3) % 2]
            with torch.cuda.stream(s):
                if i % 4 == RANK % 4:
                    torch.cuda._sleep(int(2e5) * (1 + i % 3))  # ~0.1-0.3 ms of skew
                in_place = i % 2 == 1
                dst = inputs[i] if in_place else outs[i]
                self.ipc.run(inputs[i].data_ptr(), dst.data_ptr(), count, DTYPE_CODE[dtype],
                             OP_CODE[op], s.cuda_stream)
                if in_place:
                    outs[i] = inputs[i]
        torch.cuda.synchronize()
        if self.ipc.failed:
            raise RuntimeError("burst: the IPC kernel timed out or was aborted")
        for i, (count, dtype, op) in enumerate(plan):
            self.verify(f"burst call {i} ({self.ipc.algorithm(count, DTYPE_CODE[dtype])} "
                        f"count={count} {str(dtype)[6:]} {op})", outs[i], xs_all[i], op, dtype)


def check(args) -> int:
    ipc, why = make_ipc(args.buffer_bytes, args.kernel_timeout)
    if ipc is None:
        say("SKIP:", why)
        return 0
    ck = Checker(ipc, torch.cuda.Stream())
    half = args.buffer_bytes // 2
    dtypes = [torch.float32, torch.bfloat16, torch.float16]
    ops = ["sum", "prod", "min", "max", "avg"]
    counts = [0, 1, 2, 3, 5, 7, 8, 9, 15, 16, 17, 31, 33, 127, 1000, 4097, 65537, 262147]
    seed = 1
    for dtype in dtypes:
        es = torch.tensor([], dtype=dtype).element_size()
        one_shot_limit = min((1 << 20) // max(1, SIZE - 1), half // SIZE)
        edge = [one_shot_limit // es - 1, one_shot_limit // es, one_shot_limit // es + 1]
        beyond = [args.buffer_bytes // es + 12345]  # more than the whole IPC buffer
        for count in counts + edge + beyond:
            for op in ops:
                big = count > 100_000
                variants = [(False, False), (True, False)] if not big else [(op == "sum", False)]
                if count in (17, 4097, 65537) or count == edge[1] + 1:
                    variants.append((False, True))
                for in_place, misaligned in variants:
                    seed += 1
                    ck.one(seed, count, dtype, op, in_place, misaligned)
    # Both algorithms at sizes where auto would pick only one.
    for algo in ("one_shot", "two_shot"):
        ipc.set_tuning(algo=algo)
        for count in (1, 3, 17, 1000, 65537, 262147):
            for dtype in dtypes:
                for op in ("sum", "avg", "min"):
                    seed += 1
                    ck.one(seed, count, dtype, op, count % 2 == 0, count == 65537)
    # Small rounds and few blocks: many rounds, tiles of a few vectors.
    ipc.set_tuning(algo="two_shot", round_bytes=4096 * SIZE, max_blocks=3)
    for count in (1, 100, 5000, 300001):
        seed += 1
        ck.one(seed, count, torch.bfloat16, "sum", False, False)
        ck.one(seed, count, torch.float32, "avg", True, count == 5000)
    ipc.set_tuning()
    for rep in range(args.bursts):
        ck.burst(10_000 + 100 * rep, args.burst_calls)
    nfail = COMM.allreduce(len(ck.failures))
    if nfail:
        say(f"IPC CHECK FAILED: {len(ck.failures)} failures here, {nfail} on all ranks")
        return 1
    say(f"IPC CHECK OK ({ck.checked} results checked, world size {SIZE})")
    return 0


# ---------------------------------------------------------------- time mode

def init_nccl() -> None:
    import torch.distributed as dist

    port = None
    if RANK == 0:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
    port = COMM.bcast(port, root=0)
    dist.init_process_group("nccl", init_method=f"tcp://127.0.0.1:{port}", rank=RANK,
                            world_size=SIZE)


def median_us(fn, iters: int, warmup: int) -> float:
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    COMM.Barrier()
    evs = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
           for _ in range(iters)]
    for a, b in evs:
        a.record()
        fn()
        b.record()
    torch.cuda.synchronize()
    return statistics.median(a.elapsed_time(b) for a, b in evs) * 1000.0


def timing(args) -> int:
    ipc, why = make_ipc(args.buffer_bytes, args.kernel_timeout)
    if ipc is None:
        say("SKIP:", why)
        return 0
    ipc.set_tuning(algo=args.algo, one_shot_max_bytes=args.one_shot_max_bytes,
                   round_bytes=args.round_bytes, max_blocks=args.max_blocks)
    init_nccl()
    import torch.distributed as dist

    results = []
    dtypes = {"float32": torch.float32, "bfloat16": torch.bfloat16}
    if RANK == 0:
        print(f"# {SIZE} ranks, {torch.cuda.get_device_name()}, NCCL {torch.cuda.nccl.version()}, "
              f"NCCL_NVLS_ENABLE={os.environ.get('NCCL_NVLS_ENABLE')}, buffer {args.buffer_bytes} B, "
              f"algo {args.algo}", flush=True)
        print(f"{'bytes':>12} {'dtype':>9} {'algo':>9} {'ours_us':>10} {'nccl_us':>10} "
              f"{'ratio':>6} {'ours_busbw':>10} {'nccl_busbw':>10} {'ok':>3}", flush=True)
    for name in args.dtypes.split(","):
        dtype = dtypes[name]
        es = torch.tensor([], dtype=dtype).element_size()
        nbytes = 8
        while nbytes <= args.max_bytes:
            count = nbytes // es
            g = torch.Generator(device="cuda").manual_seed(1234 + RANK)
            x = torch.randn(count, dtype=torch.float32, device="cuda", generator=g).to(dtype)
            out = torch.empty_like(x)
            y = x.clone()
            stream = torch.cuda.current_stream().cuda_stream
            code = DTYPE_CODE[dtype]

            def ours():
                ipc.run(x.data_ptr(), out.data_ptr(), count, code, OP_CODE["sum"], stream)

            def nccl():
                dist.all_reduce(y)

            # Correctness outside the timed loop: agreement across ranks, and
            # a float64 reference (rebuilt from every rank's seed) up to 256 MiB.
            ours()
            torch.cuda.synchronize()
            bits = out.view(torch.int16 if es == 2 else torch.int32).to(torch.int64)
            weights = torch.arange(1, count + 1, device="cuda", dtype=torch.int64) % 1009
            ok = len(set(COMM.allgather(int((bits * weights).sum().item())))) == 1
            del bits, weights
            if ok and nbytes <= (256 << 20):
                ref = torch.zeros(count, dtype=torch.float64, device="cuda")
                scale = torch.zeros_like(ref)
                for q in range(SIZE):
                    gq = torch.Generator(device="cuda").manual_seed(1234 + q)
                    xq = torch.randn(count, dtype=torch.float32, device="cuda",
                                     generator=gq).to(dtype).double()
                    ref += xq
                    scale += xq.abs()
                tol = 2 * SIZE * EPS_ACC * scale + EPS_OUT[dtype] * ref.abs() + TINY_OUT[dtype]
                ok = bool(((out.double() - ref).abs() <= tol).all())
                del ref, scale, xq, tol
            ok = COMM.allreduce(int(ok), op=MPI.MIN) == 1
            iters = max(args.min_iters, min(args.max_iters, int(2e9 // max(nbytes, 1))))
            t_ours = median_us(ours, iters, args.warmup)
            t_nccl = median_us(nccl, iters, args.warmup)
            bus = 2 * (SIZE - 1) / SIZE * nbytes / 1e3  # bytes per us -> GB/s when divided by us
            row = {"bytes": nbytes, "count": count, "dtype": name,
                   "algo": ipc.algorithm(count, code), "ours_us": round(t_ours, 3),
                   "nccl_us": round(t_nccl, 3), "ratio": round(t_ours / t_nccl, 4),
                   "ours_busbw": round(bus / t_ours, 2), "nccl_busbw": round(bus / t_nccl, 2),
                   "ok": ok, "ranks": SIZE}
            results.append(row)
            if RANK == 0:
                print(f"{nbytes:>12} {name:>9} {row['algo']:>9} {t_ours:>10.2f} {t_nccl:>10.2f} "
                      f"{row['ratio']:>6.3f} {row['ours_busbw']:>10.1f} {row['nccl_busbw']:>10.1f} "
                      f"{'ok' if ok else 'BAD':>3}", flush=True)
                print("RESULT " + json.dumps(row), flush=True)
            del x, out, y
            nbytes *= 2
    if RANK == 0 and args.json:
        with open(args.json, "w") as f:
            json.dump({"device": torch.cuda.get_device_name(), "ranks": SIZE,
                       "nccl": ".".join(map(str, torch.cuda.nccl.version())),
                       "buffer_bytes": args.buffer_bytes, "algo": args.algo,
                       "results": results}, f, indent=1)
    dist.destroy_process_group()
    return 0 if all(r["ok"] for r in results) else 1


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--mode", choices=["check", "time"], default="check")
    p.add_argument("--buffer-bytes", type=int, default=None,
                   help="IPC data area per rank in bytes (check: 2 MiB so big cases chunk; "
                        "time: 256 MiB)")
    p.add_argument("--kernel-timeout", type=float, default=60.0,
                   help="seconds a kernel waits for a peer before giving up")
    p.add_argument("--bursts", type=int, default=3)
    p.add_argument("--burst-calls", type=int, default=48)
    p.add_argument("--max-bytes", type=int, default=1 << 30)
    p.add_argument("--dtypes", default="float32,bfloat16")
    p.add_argument("--algo", default="auto", choices=["auto", "one_shot", "two_shot"])
    p.add_argument("--one-shot-max-bytes", type=int, default=0)
    p.add_argument("--round-bytes", type=int, default=32 << 20)
    p.add_argument("--max-blocks", type=int, default=0)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--min-iters", type=int, default=10)
    p.add_argument("--max-iters", type=int, default=200)
    p.add_argument("--json", default=None, help="rank 0 writes the timing results here")
    args = p.parse_args()
    if args.buffer_bytes is None:
        args.buffer_bytes = (2 << 20) if args.mode == "check" else (256 << 20)

    if not torch.cuda.is_available() or torch.cuda.device_count() < 1:
        say("SKIP: no CUDA device")
        return 0
    torch.cuda.set_device(RANK % torch.cuda.device_count())
    if SIZE > torch.cuda.device_count():
        say(f"SKIP: {SIZE} ranks but {torch.cuda.device_count()} GPUs")
        return 0
    return check(args) if args.mode == "check" else timing(args)


if __name__ == "__main__":
    try:
        rc = main()
    except Exception:  # noqa: BLE001  (any failure must end every rank, not hang them)
        import traceback

        traceback.print_exc()
        rc = 1
    sys.stdout.flush()
    # A failed rank must not leave the others waiting in a collective.
    if rc != 0:
        COMM.Abort(rc)
    sys.exit(rc)
