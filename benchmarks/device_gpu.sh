#!/usr/bin/env bash
# GPU machine, one call (about 6-7 minutes on one H200, 9.5 at most): build, then the GPU
# tests with 2, 3 and 4 processes sharing the one GPU (CUDA IPC between
# processes, the host-path engine for everything else), then a short timing
# of gpu_ring against ipc_two_shot at 64 MiB .. 1 GiB with 2 processes.
#   bash benchmarks/device_gpu.sh   -> $OUT/gpu-tests-1xh200.log, $OUT/gpu-1xh200.json, $OUT/build.log
#   BUILD=0 BUDGET_S=400 ...        (ringreduce._C already built; a shorter budget)
#   ONLY_K='mismatch or matrix' ... (one stage of the tests -k selects, not the slow ones)
# Each stage has its own time limit, quickest and most telling first, so a
# hang costs one stage, not the call. With N GPUs the same tests put one
# rank on each and add the NCCL-only checks.
set -uo pipefail
cd "$(dirname "$0")/.."
source benchmarks/device_env.sh  # NVLink multicast off, PYTHONPATH, OUT
export RINGREDUCE_TEST_NPROCS=${RINGREDUCE_TEST_NPROCS:-2,3,4}
LOG="$OUT/gpu-tests-1xh200.log"
T0=$(date +%s)
BUDGET=${BUDGET_S:-570}  # the call's 10 minutes, less a margin for bringing $OUT back
stamp() { echo "[$(( $(date +%s) - T0 )) s] $*" | tee -a "$LOG"; }
# Seconds for a stage: at most $1, and no more than leaves $2 for what follows.
limit() {
  local left=$(( BUDGET - ($(date +%s) - T0) - $2 ))
  [ "$left" -lt "$1" ] && echo "$left" || echo "$1"
}
: > "$LOG"

stamp "== machine"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 | tee -a "$LOG"
python3 - <<'EOF' 2>&1 | tee -a "$LOG"
import sys, torch
try:
    import cupy; cv = cupy.__version__
except Exception as e:  # noqa: BLE001
    cv = f"none ({e})"
print("python", sys.version.split()[0], "torch", torch.__version__, "gpus", torch.cuda.device_count(),
      "cupy", cv)
EOF

if [ "${BUILD:-1}" = 1 ]; then
  stamp "== build"
  if ! bash scripts/build_device.sh > "$OUT/build.log" 2>&1; then
    tail -40 "$OUT/build.log" | tee -a "$LOG"
    exit 1
  fi
  tail -1 "$OUT/build.log" | tee -a "$LOG"
fi

# One pytest run per stage; junit XML per stage, merged into the JSON below.
stage() {  # name, seconds, pytest args...
  local name=$1 secs=$2
  shift 2
  if [ "$secs" -lt 30 ]; then
    stamp "!! stage $name skipped: only ${secs} s of the budget left"
    return 0
  fi
  stamp "== tests: $name (limit ${secs} s)"
  # The tests shorten (or skip) their launches to end before this deadline,
  # so pytest itself finishes and writes its report; `timeout` is the backstop.
  export RINGREDUCE_TEST_DEADLINE=$(( $(date +%s) + secs - 20 ))
  timeout -k 10 "$secs" python3 -m pytest -v -rs -p no:cacheprovider --timeout 300 \
    --junitxml="$OUT/junit-$name.xml" "$@" 2>&1 | tee -a "$LOG" | grep -E "PASSED|FAILED|SKIPPED|ERROR|passed|failed" | tail -60
  local rc=${PIPESTATUS[0]}
  [ "$rc" = 124 ] && stamp "!! stage $name hit its ${secs} s limit"
  return 0
}

G=tests/gpu/test_gpu.py
# In-band mismatches (6 launches) and a stopped / killed peer (2 launches).
if [ -n "${ONLY_K:-}" ]; then  # one stage of the tests -k selects, nothing else
  stage selected "$(limit "$BUDGET" 10)" "$G" -k "$ONLY_K" -m "not slow"
  : > "$OUT/timing.out"
else
stage faults "$(limit 110 420)" "$G" -k "mismatch or dead_or_stopped"
# One launch per process count (and one for CuPy): graph capture, stream
# ordering, then the matrix of every device path.
stage main "$(limit 280 200)" "$G" -k "matrix or ordering or capture or colls" -m "not slow"
# Device buffers over UCX's CUDA transports: one launch per process count (about 75 s at 4).
stage ucx "$(limit 160 70)" "$G" -k "ucx_device" -m "not slow"
stage large "$(limit 50 70)" "$G" -m slow

stamp "== smoke timing: gpu_ring vs ipc_two_shot, 2 processes on ONE GPU"
echo "NOTE: both processes share one H200, so every byte moves through local HBM (no NVLink)," \
     "and the processes' kernels are time-sliced by the driver: these numbers check that the" \
     "kernels run and scale with size; they are NOT NVLink bandwidths and not comparable to NCCL." \
  | tee -a "$LOG"
TL=$(limit 65 5)
if [ "$TL" -ge 20 ]; then
  timeout -k 5 "$TL" mpirun --allow-run-as-root --bind-to none -np 2 -x PYTHONPATH -x NCCL_NVLS_ENABLE \
    -x TORCH_SYMM_MEM_DISABLE_MULTICAST -x NVSHMEM_DISABLE_NVLS -x PYTHONUNBUFFERED \
    python3 tests/gpu/worker.py timing:auto default torch > "$OUT/timing.out" 2>&1
  stamp "timing exit $?"
else
  stamp "!! timing skipped: only ${TL} s of the budget left"
  : > "$OUT/timing.out"
fi
grep -v '^RESULT' "$OUT/timing.out" | tail -5 | tee -a "$LOG"
fi

python3 - "$OUT" <<'EOF' 2>&1 | tee -a "$LOG"
import glob, json, os, sys, xml.etree.ElementTree as ET
out = sys.argv[1]
tests = []
for f in sorted(glob.glob(os.path.join(out, "junit-*.xml"))):
    try:
        root = ET.parse(f).getroot()
    except ET.ParseError as e:
        tests.append({"stage": os.path.basename(f), "name": "(unreadable junit)", "outcome": str(e)})
        continue
    for tc in root.iter("testcase"):
        outcome = "passed"
        for tag in ("failure", "error", "skipped"):
            el = tc.find(tag)
            if el is not None:
                outcome = tag if tag != "failure" else "failed"
                msg = (el.get("message") or el.text or "")[:300]
                break
        else:
            msg = ""
        tests.append({"stage": os.path.basename(f)[6:-4], "name": tc.get("name"),
                      "outcome": outcome, "seconds": float(tc.get("time", 0)), "message": msg})
timing = []
try:
    for line in open(os.path.join(out, "timing.out")):
        if line.startswith("RESULT "):
            r = json.loads(line[7:])
            if r.get("rank") == 0:
                timing = r.get("timing", [])
                if r.get("failures"):
                    timing.append({"failures": r["failures"]})
except OSError:
    pass
counts = {}
for t in tests:
    counts[t["outcome"]] = counts.get(t["outcome"], 0) + 1
rec = {"machine": "1x H200, processes sharing one GPU", "summary": counts, "tests": tests,
       "smoke_timing": {"note": "2 processes on ONE GPU: local HBM traffic and time-sliced "
                                "kernels, not NVLink; a smoke test of the kernels only",
                        "rows": timing}}
json.dump(rec, open(os.path.join(out, "gpu-1xh200.json"), "w"), indent=1)
print("summary:", counts)
for t in tests:
    if t["outcome"] in ("failed", "error"):
        print("FAILED", t["stage"], t["name"], "::", t["message"][:200])
print(f"{'algo':14} {'bytes':>12} {'us':>10} {'busbw GB/s':>11}  (ONE GPU, local HBM, time-sliced)")
for r in timing:
    if "algo" in r:
        print(f"{r['algo']:14} {r['bytes']:>12} {r['us']:>10} {r['busbw_GBps']:>11}")
EOF
stamp "== done"
