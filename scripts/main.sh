#!/usr/bin/env bash
# Sets up (scripts/setup.sh), then runs the main job: a 4-rank all-reduce
# bandwidth benchmark (ringreduce against MPI_Allreduce and gloo, side by side),
# then a small training demo (an MLP on scikit-learn's digits, sharded over 4
# ranks, in the three PyTorch integration modes). CPU ranks when there is no
# GPU; with 2+ GPUs and a CUDA build the benchmark also runs on the GPUs.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
mkdir -p out
NP=${NP:-4}
MPIRUN=(mpirun --oversubscribe -np "$NP" --mca btl self,vader)

echo; echo "== benchmark: $NP CPU ranks, 8 B to 32 MiB, sizes 4x apart (results in out/)"
timeout 900 "${MPIRUN[@]}" .venv/bin/ringreduce-bench --device cpu -b 8 -e 32M -f 4 -w 3 -n 20 \
  --backends ringreduce,mpi,gloo --json out/bench-cpu.json --plot out/bench-cpu.png

GPUS=$(.venv/bin/python -c "import ringreduce._C as c; print(c.cuda_device_count() if c.has_cuda else 0)")
if [ "$GPUS" -ge 2 ]; then
  echo; echo "== benchmark: $GPUS GPUs, 8 B to 1 GiB"
  timeout 900 mpirun -np "$GPUS" .venv/bin/ringreduce-bench --device cuda -b 8 -e 1G -f 4 \
    --json out/bench-gpu.json --plot out/bench-gpu.png
fi

echo; echo "== fitting the ring cost model to the CPU run"
.venv/bin/ringreduce-bench --fit out/bench-cpu.json

echo; echo "== training demo: MLP on scikit-learn's digits, $NP ranks, three integration modes"
timeout 600 "${MPIRUN[@]}" .venv/bin/python examples/digits_mlp.py --mode all
