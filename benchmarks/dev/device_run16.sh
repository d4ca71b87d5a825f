#!/usr/bin/env bash
# One call on the one-H200 machine (about 9 minutes): the CUDA+UCX build;
# (1) device buffers over UCX's CUDA transports (the new path 'ucx': backend
# 'ucx', 2-4 processes sharing the GPU, the ring forced onto it); (2) the CPU
# all-reduce at 4, 8 and 16 ranks, ringreduce and ringreduce-ucx beside Open
# MPI and gloo, 8 B-256 MiB (benchmarks/cpu_scaling.sh); (3) two ranks over
# TCP beside MPI's TCP BTL and gloo (benchmarks/tcp_bench.sh; network
# namespaces, or loopback where they cannot be made). Needs .whl/ (carried).
set -uo pipefail
cd "$(dirname "$0")/../.."
T0=$SECONDS
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
  --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
source benchmarks/device_env.sh
for d in /usr/local/cuda/lib64 /opt/torch/.venv/lib/python3.12/site-packages/nvidia/cu13/lib; do
  [ -d "$d" ] && export LD_LIBRARY_PATH=$d${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
done
bash scripts/build_device.sh > "$OUT/build.log" 2>&1 || { tail -40 "$OUT/build.log"; exit 1; }
echo "== build: $((SECONDS - T0)) s; $(tail -1 "$OUT/build.log")"
UCXD=$(python3 -c "import libucx, os; print(os.path.dirname(libucx.__file__))")
LD_LIBRARY_PATH=$UCXD/lib:$LD_LIBRARY_PATH "$UCXD/bin/ucx_info" -d 2>&1 | grep -E "Transport|Memory domain" \
  | sort -u | head -20 > "$OUT/ucx-info.txt"; tr '\n' ' ' < "$OUT/ucx-info.txt"; echo
python3 -c "from ringreduce import _C; print('ucx cuda memory:', _C.ucx_cuda_memory() or 'yes')" 2>&1 | tail -1

ONLY_K="ucx_device" BUILD=0 BUDGET_S=150 bash benchmarks/device_gpu.sh > "$OUT/device_gpu.out" 2>&1
echo "== UCX device tests: exit $? ($((SECONDS - T0)) s)"
grep -E "passed|failed|FAILED|ERROR" "$OUT/device_gpu.out" | tail -8

BUILD=0 NPS="4 8 16" ROWS=ringreduce,ringreduce-ucx,mpi,gloo \
  timeout $(( 430 - (SECONDS - T0) )) bash benchmarks/cpu_scaling.sh > "$OUT/cpu_scaling.out" 2>&1
echo "== CPU scaling: exit $? ($((SECONDS - T0)) s)"
sed -n "/== targets/,/== parameter/p" "$OUT/cpu_scaling.out" | head -30

SIZES=64K..64Mx4 timeout -k 5 $(( 585 - (SECONDS - T0) )) bash benchmarks/tcp_bench.sh > "$OUT/tcp.out" 2>&1
echo "== TCP: exit $? ($((SECONDS - T0)) s)"; tail -14 "$OUT/tcp.out"
