"""Where an eager device all-reduce's time goes, one process, one GPU.

Times, as the benchmark's CUDA timer does (calls enqueued back to back, an
event after each, the median gap), and interleaved round by round so that
drift hits every variant alike:
  launch        x.add_(1)                      one torch kernel launch
  copy          y.copy_(x)                     torch's device-to-device copy
  rr_inplace    rr.allreduce(x)                the public call, in place
  rr_out        rr.allreduce(x, out=y)         the public call, out of place
  cxx_inplace   comm._impl.allreduce_device    the C++ latency path alone
  cxx_out       the same, out of place
for 8 B, 4 KiB and 64 KiB of float32. Prints one JSON object.
Usage: python3 benchmarks/dev/eager_parts.py [rounds] [iters]
"""
from __future__ import annotations

import json
import statistics
import sys

import torch

import ringreduce as rr
from ringreduce import _C


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 7
    iters = int(sys.argv[2]) if len(sys.argv) > 2 else 400
    comm = rr.init(timeout=60)
    dev = torch.device("cuda", 0)
    torch.cuda.set_device(dev)
    out = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__,
           "world_size": comm.size, "rounds": rounds, "iters": iters, "sizes": {}}
    f32, total = int(_C.DType.float32), int(_C.ReduceOp.sum)
    for nbytes in (8, 4096, 65536):
        n = nbytes // 4
        x = torch.ones(n, device=dev)
        y = torch.empty_like(x)
        stream = torch.cuda.current_stream().cuda_stream
        impl = comm._impl
        variants = {
            "launch": lambda: x.add_(1),
            "copy": lambda: y.copy_(x),
            "rr_inplace": lambda: comm.allreduce(x),
            "rr_out": lambda: comm.allreduce(x, out=y),
            "cxx_inplace": lambda: impl.allreduce_device(x.data_ptr(), n, f32, total, 0,
                                                         stream, 0),
            "cxx_out": lambda: impl.allreduce_device(x.data_ptr(), n, f32, total, 0, stream,
                                                     y.data_ptr()),
        }
        med = {k: [] for k in variants}
        for fn in variants.values():  # warm-up
            for _ in range(50):
                fn()
        torch.cuda.synchronize()
        for _ in range(rounds):
            for name, fn in variants.items():
                ev = [torch.cuda.Event(enable_timing=True) for _ in range(iters + 1)]
                ev[0].record()
                for i in range(iters):
                    fn()
                    ev[i + 1].record()
                torch.cuda.synchronize()
                gaps = [ev[i].elapsed_time(ev[i + 1]) * 1e3 for i in range(iters)]
                med[name].append(statistics.median(gaps))
        row = {k: round(statistics.median(v), 2) for k, v in med.items()}
        row["spread_us"] = {k: [round(min(v), 2), round(max(v), 2)] for k, v in med.items()}
        for k in ("rr_inplace", "rr_out", "cxx_inplace", "cxx_out", "copy"):
            row[f"{k}_over_launch"] = round(row[k] / row["launch"], 3)
        out["sizes"][str(nbytes)] = row
    comm.finalize()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
