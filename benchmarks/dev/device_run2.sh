#!/usr/bin/env bash
# Development run on the one-H200 machine's 16-core host: CPU all-reduce at 4,
# 8 and 16 ranks (ringreduce over MPI and over UCX, Rabenseifner forced, the
# parameter servers, MPI_Allreduce, gloo; benchmarks/cpu_scaling.sh), then
# the cost of the call checks (benchmarks/check_cost.py). Needs the libucx
# wheel carried in .whl. Everything lands in $OUT/run2.tgz.
set -uo pipefail
cd "$(dirname "$0")/../.."
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
  --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
FINAL=$OUT
export OUT=/tmp/run2
mkdir -p "$OUT"
ROWS=ringreduce,ringreduce:rabenseifner,ringreduce-ucx,ringreduce-ps,ringreduce-ps-sharded,mpi,gloo \
  timeout 440 bash benchmarks/cpu_scaling.sh
source benchmarks/device_env.sh
timeout 110 mpirun -np 4 --bind-to core -x PYTHONPATH -x OMPI_MCA_pml -x OMPI_MCA_osc python3 \
  benchmarks/check_cost.py --json "$OUT/check-cost-cpu-4rank-16core.json" 2>&1 | tail -25
tar czf "$FINAL/run2.tgz" -C /tmp run2
