"""The ring cost model fitted on the 2-GPU results, its predictions for 4
and 8 GPUs, and (where a 4-GPU run exists) the measured 4-GPU figures.

    python benchmarks/model_check.py benchmarks/results/gpu-2xh200.json benchmarks/results/gpu-4xh200.json
"""
import json
import sys

from ringreduce.bench.fit import busbw_of, fit_points, predict, select

fit_file = sys.argv[1]
measured = json.load(open(sys.argv[2])) if len(sys.argv) > 2 else None
doc = json.load(open(fit_file))
for backend in ("ringreduce-nccl", "nccl"):
    points, *_ = select([doc], backend, "float32")
    f = fit_points(points)
    print(f"{backend}: fitted on {doc['world_size']} GPUs: alpha {f.alpha * 1e6:.2f} us/step, "
          f"effective {1 / f.delta / 1e9:.1f} GB/s of (N-1)/N*bytes")
    meas = {}
    if measured:
        for r in measured["results"]:
            if r["backend"] == backend and r["dtype"] == "float32" and not r["inplace"]:
                meas[r["bytes"]] = r["busbw"]
    print(f"  {'size':>11}  {'pred N=4':>9}  {'meas N=4':>9}  {'meas/pred':>9}  {'pred N=8':>9}   (busbw GB/s)")
    for nbytes in (2 << 20, 8 << 20, 32 << 20, 128 << 20, 512 << 20, 2 << 30):
        p4 = busbw_of(4, nbytes, predict(f, 4, nbytes))
        p8 = busbw_of(8, nbytes, predict(f, 8, nbytes))
        m4 = meas.get(nbytes)
        ms = f"{m4:9.1f}  {m4 / p4:9.2f}" if m4 else f"{'-':>9}  {'-':>9}"
        print(f"  {nbytes:>11}  {p4:9.1f}  {ms}  {p8:9.1f}")
