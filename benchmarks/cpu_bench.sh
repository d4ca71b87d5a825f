#!/usr/bin/env bash
# The command that produced benchmarks/results/cpu-4rank.{json,png}.
# 4 ranks on one host through Open MPI's shared-memory transport. On the
# 2-core machine the committed results come from, the 4 ranks are
# oversubscribed (2 ranks per core); see docs/benchmark-results.md.
# Iterations per size: about 0.5 s of timed iterations (--budget), at least 3,
# at most 50; 5 warm-ups at most. Extra arguments are passed through.
set -euo pipefail
cd "$(dirname "$0")/.."
BENCH=${BENCH:-.venv/bin/ringreduce-bench}
NP=${NP:-4}
exec timeout -s KILL 1200 mpirun --allow-run-as-root --oversubscribe -np "$NP" \
  --mca btl self,vader \
  "$BENCH" -b 8 -e 256M -f 2 -w 5 -n 50 --budget 0.5 --min-iters 3 \
  --backends ringreduce,mpi,gloo \
  --json benchmarks/results/cpu-4rank.json --plot benchmarks/results/cpu-4rank.png "$@"
