#!/usr/bin/env bash
# GPU machine, one call (~4 minutes on one H200 with the build): every device
# row eagerly and as CUDA graph replays (--graph, 20 calls per graph), 8 B to
# 256 MiB x8, float32, so the rows that cannot run on this machine say why
# (symmetric memory needs one GPU per rank; capture support in the core is
# new) and the eager-call-vs-one-launch target is read off the same run.
#   bash benchmarks/gpu_rows.sh           (one GPU: one rank)
#   N=2 bash benchmarks/gpu_rows.sh       (on nvidia-h200-x2: one rank per GPU)
# Writes gpu-rows-<N>xh200.json/.png/.log and build.log into $OUT.
set -uo pipefail
cd "$(dirname "$0")/.."
source benchmarks/device_env.sh
N=${N:-1}
ROWS=${ROWS:-ringreduce,ringreduce-ring,ringreduce-nccl,nccl,torch-nccl,torch-symm-oneshot,torch-symm-twoshot,launch}
t=$SECONDS
bash scripts/build_device.sh > "$OUT/build.log" 2>&1 || { tail -30 "$OUT/build.log"; exit 1; }
echo "== build: $((SECONDS - t)) s"
if [ "$N" -gt 1 ]; then
  LAUNCH=(mpirun -np "$N" --bind-to none -x PYTHONPATH -x NCCL_NVLS_ENABLE
          -x TORCH_SYMM_MEM_DISABLE_MULTICAST -x NVSHMEM_DISABLE_NVLS)
else
  LAUNCH=()
fi
name=gpu-rows-${N}xh200
t=$SECONDS
timeout 400 "${LAUNCH[@]}" python3 -m ringreduce.bench --device cuda -b 8 -e 256M -f 8 \
  -w 3 -n 20 --budget 0.1 --min-iters 3 --graph --no-progress --backends "$ROWS" \
  --json "$OUT/$name.json" --plot "$OUT/$name.png" > "$OUT/$name.log" 2>&1
echo "== rows: exit $?, $((SECONDS - t)) s"
grep -E "^# (skipping|skipped|note|graph)|out of bounds|/launch|/nccl" "$OUT/$name.log" | cut -c1-220 | head -60
