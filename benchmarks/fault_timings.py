"""Time to error for each host-path failure mode, from real runs of
tests/faults/fault_worker.py under mpirun (3 ranks, rank 1 is the victim).

    python benchmarks/fault_timings.py --timeout 3 --json benchmarks/results/faults-cpu.json
"""
import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORKER = ROOT / "tests" / "faults" / "fault_worker.py"
MODES = ["kill", "stop", "mismatch_checked", "mismatch_op_checked", "mismatch_unchecked", "nan_checked"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--timeout", type=float, default=3.0, help="collective timeout, seconds")
    ap.add_argument("--json")
    args = ap.parse_args()
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
               OMPI_MCA_rmaps_base_oversubscribe="1", PYTHONPATH=str(ROOT))
    rows = []
    for mode in MODES:
        cmd = [shutil.which("mpirun"), "-np", "3", "--mca", "orte_abort_on_non_zero_status", "0",
               sys.executable, str(WORKER), mode, str(args.timeout)]
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)
        for line in p.stdout.splitlines():
            if line.startswith("RESULT "):
                res = json.loads(line[7:])
                rows.append({"mode": mode, "rank": res["rank"], "error": res["error"],
                             "seconds": round(res["seconds"], 4), "message": res["message"]})
    print(f"{'mode':<22} {'rank':>4} {'error':<20} {'seconds':>8}")
    for r in rows:
        print(f"{r['mode']:<22} {r['rank']:>4} {str(r['error']):<20} {r['seconds']:>8.3f}")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "machine": {"host": platform.node(), "cpu": platform.machine(), "cores": os.cpu_count()},
            "command": " ".join(sys.argv), "world_size": 3, "timeout_s": args.timeout,
            "results": rows}, indent=1))


if __name__ == "__main__":
    main()
