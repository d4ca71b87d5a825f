#!/usr/bin/env bash
# Builds benchmarks/dev/ucx_bench.cc and mpi_bench.c against the libucx wheel
# and runs one mode on N ranks (plain processes for UCX, mpirun for MPI).
#
#   benchmarks/dev/ucx_bench.sh ucx pingpong|exchange|allreduce [N] [ucx_bench args...]
#   benchmarks/dev/ucx_bench.sh mpi pingpong|exchange|allreduce [N] [max_bytes [B1,B2,..]]
#   benchmarks/dev/ucx_bench.sh perftest "<UCX_ENV=..>" [ucx_perftest args...]   (2 ranks, loopback)
#   benchmarks/dev/ucx_bench.sh perfmatrix "<UCX_ENV=..>"   tag_lat with peer error handling, 8 B .. 256 MiB
# OUT_DIR (default /tmp/rr-ucx-bench) holds the binaries; NO_BUILD=1 reuses them as they are.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=/work/main/.venv/bin/python
UCX=$("$PY" -c "import libucx, os; print(os.path.dirname(libucx.__file__))")
OUT=${OUT_DIR:-/tmp/rr-ucx-bench}
mkdir -p "$OUT"

build() {
  [ -n "${NO_BUILD:-}" ] && return  # use the binaries already in $OUT_DIR
  if [ ! -x "$OUT/ucx_bench" ] || [ -n "$(find csrc/transport benchmarks/dev tests/native -newer "$OUT/ucx_bench" -name '*.[ch]*')" ]; then
    g++ -std=c++17 -O3 -march=native -Icsrc -Itests/native -I"$UCX/include" benchmarks/dev/ucx_bench.cc \
      csrc/transport/ucx_transport.cc csrc/transport/ucx_setup.cc csrc/transport/ucx_control.cc -L"$UCX/lib" -lucp -lucs -ldl \
      -pthread -Wl,-rpath,"$UCX/lib" -o "$OUT/ucx_bench"
  fi
  if [ ! -x "$OUT/mpi_bench" ] || [ benchmarks/dev/mpi_bench.c -nt "$OUT/mpi_bench" ]; then
    mpicc -O3 benchmarks/dev/mpi_bench.c -o "$OUT/mpi_bench"
  fi
}

what=$1; shift
case "$what" in
  ucx)
    build
    mode=$1; n=${2:-2}; shift 2 || shift $#
    dir=$(mktemp -d "$OUT/run.XXXX")
    pids=()
    cores=$(nproc)
    for ((r = 0; r < n; r++)); do
      # One core per rank, as mpirun binds its ranks (BIND=0 leaves it to the scheduler).
      bind=(); [ "${BIND:-1}" != 0 ] && bind=(taskset -c $((r % cores)))
      "${bind[@]}" "$OUT/ucx_bench" --mode "$mode" --rank $r --size "$n" --dir "$dir" "$@" &
      pids+=($!)
    done
    for p in "${pids[@]}"; do wait "$p"; done
    rm -rf "$dir"
    ;;
  mpi)
    build
    mode=$1; n=${2:-2}; max=${3:-268435456}
    mpirun --allow-run-as-root --oversubscribe -np "$n" "$OUT/mpi_bench" "$mode" "$max" ${4:-}
    ;;
  perftest)
    envs=$1; shift
    port=$((20000 + RANDOM % 20000))
    export LD_LIBRARY_PATH="$UCX/lib"
    env $envs "$UCX/bin/ucx_perftest" -p $port "$@" >/dev/null 2>&1 &
    spid=$!
    sleep 0.5
    env $envs "$UCX/bin/ucx_perftest" 127.0.0.1 -p $port "$@"
    wait $spid
    ;;
  perfmatrix)
    envs=$1
    for s in 8 1024 65536 1048576 8388608 67108864 268435456; do
      n=10000; [ "$s" -ge 1048576 ] && n=200; [ "$s" -ge 67108864 ] && n=20
      line=$("$0" perftest "$envs" -t tag_lat -s "$s" -n $n -w $((n / 10 + 1)) -f -e | tail -1)
      lat=$(echo "$line" | awk '{print $2}')
      awk -v s="$s" -v l="$lat" 'BEGIN { printf "%12d B  %10.3f us  %6.2f GB/s\n", s, l, s / (l * 1000) }'
    done
    ;;
  *) echo "usage: $0 ucx|mpi|perftest|perfmatrix ..." >&2; exit 2 ;;
esac
