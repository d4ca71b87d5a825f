#!/usr/bin/env bash
# Two ranks whose traffic crosses TCP, side by side: ringreduce over UCX's TCP
# transport (when built with UCX), ringreduce's ring over MPI, MPI_Allreduce
# under Open MPI's TCP BTL only, and gloo. 64 KiB up, float32, JSON + PNG into
# $OUT (tcp-netns-2rank.* or tcp-loopback-2rank.*), then one short run per row
# that shows its bytes crossed the TCP interface (byte counters before/after).
#
#   bash benchmarks/tcp_bench.sh          (as root; about 2-3 minutes)
#
# The ranks run in two network namespaces joined by a veth pair, made here
# with `ip netns add` / `ip link add ... type veth` and removed on exit, so
# every byte between them goes through the kernel's TCP stack and the veth
# link, as between two hosts (same kernel, no wire). mpirun runs in the first
# namespace; the second rank enters the other through `ip netns exec`, and
# reaches mpirun's PMIx server over the veth (PMIX_MCA_ptl_tcp_*). Where
# namespaces cannot be made (no root, no CAP_NET_ADMIN, a sandbox), the ranks
# run on loopback instead with UCX_TLS=tcp, and the script says why.
#
# The MPI transport is a launch option, so it is given to mpirun here:
# `--mca pml ob1 --mca btl tcp,self` (ob1: an Open MPI built with UCX would
# otherwise use its UCX PML and ignore the BTL list), with
# btl_tcp_if_include naming the interface. The mpi-tcp row checks for it.
# Settings: SIZES (default 64K..256Mx4), ROWS, PY, ITERS; LOOPBACK=1 forces the fallback;
# PASS_ENV="UCX_TCP_TX_SEG_SIZE ..." names more variables for both ranks.
set -uo pipefail
cd "$(dirname "$0")/.."
source benchmarks/device_env.sh
PY=${PY:-python3}
SIZES=${SIZES:-64K..256Mx4}
ROWS=${ROWS:-ringreduce-ucx,ringreduce-mpi,mpi-tcp,gloo}
ITERS=${ITERS:-20}
NS_A=rr-tcp-a NS_B=rr-tcp-b IFACE=rr0 IP_A=10.77.0.1 IP_B=10.77.0.2
PYBIN=$(command -v "$PY")
t_all=$SECONDS

if ! "$PY" -c "import ringreduce._C" 2>/dev/null; then  # a fresh machine: host-only build
  t=$SECONDS
  RINGREDUCE_CUDA=0 "$PY" setup.py build_ext --inplace > "$OUT/build.log" 2>&1 ||
    { tail -30 "$OUT/build.log"; exit 1; }
  echo "== build: $((SECONDS - t)) s"
fi

cleanup() { ip netns del "$NS_A" 2>/dev/null; ip netns del "$NS_B" 2>/dev/null; true; }
trap cleanup EXIT

make_netns() {
  cleanup
  ip netns add "$NS_A" && ip netns add "$NS_B" &&
  ip link add rr-tcp-va type veth peer name rr-tcp-vb &&
  ip link set rr-tcp-va netns "$NS_A" && ip link set rr-tcp-vb netns "$NS_B" &&
  # The same interface name on both sides: one RINGREDUCE_UCX_NET_DEVICES /
  # btl_tcp_if_include / GLOO_SOCKET_IFNAME serves both ranks.
  ip -n "$NS_A" link set rr-tcp-va name "$IFACE" && ip -n "$NS_B" link set rr-tcp-vb name "$IFACE" &&
  ip -n "$NS_A" addr add "$IP_A/24" dev "$IFACE" && ip -n "$NS_B" addr add "$IP_B/24" dev "$IFACE" &&
  ip -n "$NS_A" link set "$IFACE" up && ip -n "$NS_B" link set "$IFACE" up &&
  ip -n "$NS_A" link set lo up && ip -n "$NS_B" link set lo up || return 1
  # An answer (a refused connection) from the other side: the link works.
  local probe
  probe=$(ip netns exec "$NS_A" "$PYBIN" -c \
    "import socket; socket.create_connection(('$IP_B', 9), 2)" 2>&1)
  [[ $probe == *refused* ]] || { echo "no answer from $IP_B over the veth: $probe"; return 1; }
}

if [ "${LOOPBACK:-0}" != 1 ] && make_netns > "$OUT/netns.log" 2>&1; then
  MODE=netns
  echo "== ranks in network namespaces $NS_A ($IP_A) and $NS_B ($IP_B), veth $IFACE"
  MASTER=$IP_A
  # mpirun (and rank 0) in NS_A; rank 1 enters NS_B.
  LAUNCH=(ip netns exec "$NS_A" env PMIX_MCA_ptl_tcp_remote_connections=1
          PMIX_MCA_ptl_tcp_if_include=$IFACE OMPI_MCA_oob_tcp_if_include=$IFACE
          mpirun --oversubscribe --bind-to none)
  SECOND=(ip netns exec "$NS_B")
  counters() { for ns in "$NS_A" "$NS_B"; do
      ip netns exec "$ns" cat /sys/class/net/$IFACE/statistics/tx_bytes; done | paste -sd' '; }
else
  MODE=loopback
  cleanup
  why=$([ "${LOOPBACK:-0}" = 1 ] && echo "LOOPBACK=1" || tail -1 "$OUT/netns.log")
  echo "== network namespaces not available ($why):"
  echo "   falling back to both ranks on loopback, UCX_TLS=tcp, btl tcp over lo"
  IFACE=lo MASTER=127.0.0.1
  LAUNCH=(mpirun --oversubscribe --bind-to none)
  SECOND=()
  counters() { cat /sys/class/net/lo/statistics/tx_bytes; }  # both ranks' sends together
fi
export RINGREDUCE_UCX_TLS=tcp UCX_TLS=tcp RINGREDUCE_UCX_NET_DEVICES=$IFACE UCX_NET_DEVICES=$IFACE
export GLOO_SOCKET_IFNAME=$IFACE MASTER_ADDR=$MASTER
# The ranks share this kernel's IPC namespace, so ringreduce would put them on
# one shared-memory segment and no byte would cross TCP (run 16, loopback).
export RINGREDUCE_SHM=0
MCA=(--mca pml ob1 --mca btl tcp,self --mca btl_tcp_if_include "$IFACE")

XS=(-x PYTHONPATH -x PYTHONUNBUFFERED -x RINGREDUCE_UCX_TLS -x UCX_TLS -x RINGREDUCE_UCX_NET_DEVICES
    -x UCX_NET_DEVICES -x GLOO_SOCKET_IFNAME -x MASTER_ADDR -x RINGREDUCE_SHM -x OMPI_ALLOW_RUN_AS_ROOT
    -x OMPI_ALLOW_RUN_AS_ROOT_CONFIRM)
for v in ${PASS_ENV:-}; do XS+=(-x "$v"); done

bench() {  # bench SECONDS ARGS...: one rank here, one in the other namespace, under a timeout
  local limit=$1; shift
  local cmd=("$PYBIN" -m ringreduce.bench --device cpu --no-progress "$@")
  timeout -s KILL "$limit" "${LAUNCH[@]}" "${MCA[@]}" "${XS[@]}" -np 1 "${cmd[@]}" : \
    -np 1 "${SECOND[@]}" "${cmd[@]}"
}

NAME=tcp-$MODE-2rank
echo "== side by side: $ROWS, sizes $SIZES"
t=$SECONDS
bench 300 --sizes "$SIZES" -w 3 -n "$ITERS" --budget 0.3 --min-iters 3 \
  --backends "$ROWS" --json "$OUT/$NAME.json" --plot "$OUT/$NAME.png" > "$OUT/$NAME.log" 2>&1
echo "   exit $?, $((SECONDS - t)) s"
grep -E "^# (skipping|skipped|note)|out of bounds|avg bus" "$OUT/$NAME.log" | head -30
grep -A40 "^# comparison" "$OUT/$NAME.log" | grep -E "^# [a-z].*(vs|/)" | head -20

# Traffic check: each row alone at one size, interface byte counters around it.
# Per call each rank sends 2(N-1)/N * S = S bytes (N = 2); a run makes -w 1
# (one warm-up) + 1 check + -n 4 timed calls = 6 calls, so about 6 S per rank.
S=$((64 << 20))
echo "== traffic on $IFACE per row: 6 calls of 64 MiB, so about $((6 * S >> 20)) MiB sent per rank"
: > "$OUT/$NAME-traffic.log"
for row in ${ROWS//,/ }; do
  before=$(counters)
  bench 120 -b 64M -e 64M -w 1 -n 4 --outofplace-only --backends "$row" > "$OUT/traffic.tmp" 2>&1
  rc=$?
  after=$(counters)
  { echo "==== $row"; cat "$OUT/traffic.tmp"; } >> "$OUT/$NAME-traffic.log"
  if grep -q "skipping backend $row" "$OUT/traffic.tmp"; then
    echo "   $row: skipped ($(grep "skipping backend $row" "$OUT/traffic.tmp" | cut -c25-200))"
    rm -f "$OUT/traffic.tmp"
    continue
  fi
  rm -f "$OUT/traffic.tmp"
  "$PYBIN" - "$row" "$rc" "$S" "$before" "$after" "$MODE" <<'EOF'
import sys
row, rc, s = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
before, after = (list(map(int, a.split())) for a in sys.argv[4:6])
ranks_per_counter = 2 if sys.argv[6] == "loopback" else 1  # lo counts both ranks' sends
sent = [b - a for a, b in zip(before, after)]
ratio = min(sent) / (6 * s * ranks_per_counter)
verdict = "crossed TCP" if ratio > 0.9 else "did NOT cross this interface"
print(f"   {row}: exit {rc}; sent " + ", ".join(f"{x / 2**20:.0f} MiB" for x in sent)
      + (" (both ranks)" if ranks_per_counter == 2 else " (rank 0, rank 1)")
      + f" = {ratio:.2f}x the all-reduce bytes: {verdict}")
EOF
done
echo "== total $((SECONDS - t_all)) s; files: $(cd "$OUT" && ls $NAME* | paste -sd' ')"
