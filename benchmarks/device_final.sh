#!/usr/bin/env bash
# GPU machine, last call of a session: the final build's GPU tests (NCCL engine
# with and without the IPC path, stream ordering on every backend, NCCL faults),
# the 2-GPU benchmark, NVIDIA's all_reduce_perf beside it, and ResNet-50.
set -uo pipefail
cd "$(dirname "$0")/.."
source benchmarks/device_env.sh
N=${N:-2}
export RINGREDUCE_TEST_GPUS=$N
MPI=(mpirun -np "$N" --bind-to none -x PYTHONPATH -x NCCL_NVLS_ENABLE -x TORCH_SYMM_MEM_DISABLE_MULTICAST -x NVSHMEM_DISABLE_NVLS)
bash scripts/build_device.sh > "$OUT/build.log" 2>&1 || { tail -30 "$OUT/build.log"; exit 1; }
(make -C nccl_tests_src/src -j 16 NCCL_HOME=/usr CUDA_HOME=/usr/local/cuda \
   NVCC_GENCODE="-gencode=arch=compute_90,code=sm_90" ../build/all_reduce_perf > "$OUT/nccl_tests_build.log" 2>&1 &)
echo "== GPU tests"
timeout ${TEST_S:-170} python3 -m pytest -q -rs tests/gpu/test_gpu.py tests/faults/test_faults_gpu.py \
  -k "${TEST_K:-(matrix and torch and nccl) or ordering or faults}" 2>&1 | tee "$OUT/gpu_tests.log" | tail -4
echo "== ringreduce-bench"
timeout ${BENCH_S:-120} "${MPI[@]}" python3 -m ringreduce.bench --device cuda -b 8 -e 4G -f ${BENCH_F:-2} -d float32,bfloat16 \
  -w 3 -n 20 --budget 0.1 --min-iters 3 --no-progress --backends ringreduce-nccl,nccl,torch-nccl \
  --json "$OUT/gpu-${N}xh200.json" --plot "$OUT/gpu-${N}xh200.png" 2>&1 | grep -v Warning > "$OUT/bench.log"
grep "out-of-place\|avg bus" "$OUT/bench.log" | tail -12
echo "== all_reduce_perf"
timeout 40 nccl_tests_src/build/all_reduce_perf -b 8 -e 4G -f 2 -g "$N" -w 5 -n 20 > "$OUT/all_reduce_perf.log" 2>&1; tail -3 "$OUT/all_reduce_perf.log"
echo "== ResNet-50"
timeout ${RESNET_S:-150} python3 -m torch.distributed.run --nproc-per-node "$N" benchmarks/resnet_step_time.py \
  --warmup 5 --steps 12 --json "$OUT/resnet50-${N}xh200.json" 2>&1 | grep -v Warning | tail -7
