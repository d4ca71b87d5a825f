#!/usr/bin/env bash
# GPU machine, one call: the committed 2-GPU results. ringreduce-bench from 8 B
# to 4 GiB in float32 and bfloat16 against native NCCL and torch's NCCL (and the
# MPI device path against the naive copy/MPI_Allreduce/copy route up to 1 GiB),
# NVIDIA's all_reduce_perf for validation when its source is carried in
# nccl_tests_src/, and the ResNet-50 step-time comparison.
set -uo pipefail
cd "$(dirname "$0")/.."
source benchmarks/device_env.sh
N=${N:-2}
MPI=(mpirun -np "$N" --bind-to none -x PYTHONPATH -x NCCL_NVLS_ENABLE -x TORCH_SYMM_MEM_DISABLE_MULTICAST -x NVSHMEM_DISABLE_NVLS)
bash scripts/build_device.sh > "$OUT/build.log" 2>&1 || { tail -30 "$OUT/build.log"; exit 1; }
if [ -d nccl_tests_src ] && [ "${SKIP_NCCL_TESTS:-0}" != 1 ]; then
  (make -C nccl_tests_src/src -j 16 NCCL_HOME=/usr CUDA_HOME=/usr/local/cuda \
     NVCC_GENCODE="-gencode=arch=compute_90,code=sm_90" ../build/all_reduce_perf > "$OUT/nccl_tests_build.log" 2>&1 &)
fi
echo "== NCCL fault tests"
timeout 60 python3 -m pytest -q tests/faults/test_faults_gpu.py 2>&1 | tail -3
echo "== ringreduce-bench, $N GPUs"
timeout 270 "${MPI[@]}" python3 -m ringreduce.bench --device cuda -b 8 -e 4G -f 2 -d float32,bfloat16 \
  -w 3 -n 20 --budget 0.15 --min-iters 3 --no-progress \
  --backends ringreduce-nccl,nccl,torch-nccl \
  --json "$OUT/gpu-${N}xh200.json" --plot "$OUT/gpu-${N}xh200.png" 2>&1 | grep -v Warning > "$OUT/bench.log"
grep -A60 -i "compar" "$OUT/bench.log" | head -90
echo "== MPI device path vs naive"
timeout 60 "${MPI[@]}" python3 -m ringreduce.bench --device cuda -b 1M -e 256M -f 4 -w 1 -n 5 --budget 0.3 \
  --min-iters 2 --no-progress --outofplace-only --backends ringreduce-mpi,mpi-naive \
  --json "$OUT/gpu-${N}xh200-mpi.json" 2>&1 | grep -v Warning > "$OUT/bench_mpi.log"
grep -A12 -i "compar" "$OUT/bench_mpi.log" | head -16
if [ -x nccl_tests_src/build/all_reduce_perf ] || sleep 20 && [ -x nccl_tests_src/build/all_reduce_perf ]; then
  echo "== all_reduce_perf"
  timeout 40 nccl_tests_src/build/all_reduce_perf -b 8 -e 4G -f 2 -g "$N" -w 5 -n 20 > "$OUT/all_reduce_perf.log" 2>&1
  tail -8 "$OUT/all_reduce_perf.log"
else
  echo "all_reduce_perf not built"; tail -5 "$OUT/nccl_tests_build.log" 2>/dev/null
fi
if [ "${RESNET:-0}" = 1 ]; then
  echo "== ResNet-50 step time"
  timeout 200 python3 -m torch.distributed.run --nproc-per-node "$N" benchmarks/resnet_step_time.py \
    --warmup 8 --steps 20 --json "$OUT/resnet50-${N}xh200.json" 2>&1 | grep -v Warning | tail -12
fi
