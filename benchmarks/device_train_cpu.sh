#!/usr/bin/env bash
# GPU machine, one call: ResNet-50 step time (DDP+NCCL against ringreduce's
# three integrations), the 4-rank CPU benchmark on the machine's 32 cores,
# and the NCCL fault worker run by hand (its output shown).
set -uo pipefail
cd "$(dirname "$0")/.."
source benchmarks/device_env.sh
bash scripts/build_device.sh > "$OUT/build.log" 2>&1 || { tail -30 "$OUT/build.log"; exit 1; }
echo "== NCCL fault worker (stop)"
timeout 45 mpirun -np 2 --mca orte_abort_on_non_zero_status 0 -x PYTHONPATH -x NCCL_NVLS_ENABLE \
  python3 tests/faults/fault_worker.py stop_cuda 5 2>&1 | grep -v "^\[" | tail -15
echo "== ResNet-50 step time"
timeout 220 python3 -m torch.distributed.run --nproc-per-node 2 benchmarks/resnet_step_time.py \
  --warmup 8 --steps 20 --json "$OUT/resnet50-2xh200.json" 2>&1 | grep -v Warning | tail -14
echo "== CPU benchmark, 4 ranks on the GPU machine's CPUs"
timeout 170 mpirun -np 4 --bind-to core -x PYTHONPATH python3 -m ringreduce.bench --device cpu -b 8 -e 256M -f 4 \
  -w 3 -n 30 --budget 0.25 --min-iters 3 --no-progress --backends ringreduce,mpi,gloo \
  --json "$OUT/cpu-4rank-h200host.json" --plot "$OUT/cpu-4rank-h200host.png" 2>&1 | grep -v Warning > "$OUT/cpu_bench.log"
grep -A40 "comparison" "$OUT/cpu_bench.log" | head -40
