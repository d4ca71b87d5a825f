"""Bootstrap of the UCX transport: worker addresses travel through engines
that already exist (a c10d Store, MPI, or nothing for one process), and UCX
is told which network device it may use. The project runs no rendezvous
server of its own.

Which store: the one torch hands a process group's creator; else
torch.distributed's default store when it is initialised; else, under
torchrun, torchrun's own store at MASTER_ADDR:MASTER_PORT (joined as a
client, so nothing new listens). Only when none of these exists does rank 0
open a TCPStore on MASTER_PORT + 1 (documented in docs/architecture.md).
"""
from __future__ import annotations

import fcntl
import os
import socket
import struct
from datetime import timedelta
from typing import Any, Callable, List, Optional

from . import _C, settings
from .errors import CollectiveTimeout, RingReduceError
from .launch import LaunchInfo

# Stores are shared by every communicator a process makes over them; each
# creation takes the next generation number, the same on every rank because
# ranks create communicators in the same order. The stores are kept here:
# Python reuses the id() of a collected object, and a new store with an old
# store's id would start at that store's generation on some ranks only.
_generation: dict = {}  # id(store) -> (store, next generation)


def _interface_of(ip: str) -> Optional[str]:
    """The local network interface that holds address `ip`, or None."""
    for _, name in socket.if_nameindex():
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                packed = fcntl.ioctl(s.fileno(), 0x8915,  # SIOCGIFADDR
                                     struct.pack("256s", name.encode()[:15]))
            if socket.inet_ntoa(packed[20:24]) == ip:
                return name
        except OSError:
            continue
    return None


def net_devices(launch: LaunchInfo, one_host: Optional[bool] = None) -> str:
    """Where UCX may listen: RINGREDUCE_UCX_NET_DEVICES, else loopback when
    every rank is on this host (`one_host`, else the launcher's local size
    says so), else the interface that reaches MASTER_ADDR."""
    chosen = settings.get("RINGREDUCE_UCX_NET_DEVICES")
    if chosen:
        return chosen
    if one_host if one_host is not None else launch.local_size >= launch.size:
        return "lo"
    addr = os.environ.get("MASTER_ADDR")
    if not addr:
        raise RingReduceError("ranks span several hosts but MASTER_ADDR is not set: say which "
                              "network device UCX may use with RINGREDUCE_UCX_NET_DEVICES")
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect((socket.gethostbyname(addr), 9))  # no packet is sent for UDP
            local_ip = s.getsockname()[0]
    except OSError as e:
        raise RingReduceError(f"cannot find the network device that reaches MASTER_ADDR={addr}: "
                              f"{e}; set RINGREDUCE_UCX_NET_DEVICES") from None
    dev = _interface_of(local_ip)
    if dev is None:
        raise RingReduceError(f"no local interface holds {local_ip} (the address that reaches "
                              f"MASTER_ADDR={addr}); set RINGREDUCE_UCX_NET_DEVICES")
    return dev


def _launcher_store(launch: LaunchInfo, timeout: float) -> Any:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.distributed_c10d._get_default_store()
    addr, port = os.environ.get("MASTER_ADDR"), os.environ.get("MASTER_PORT")
    if not addr or not port:
        raise RingReduceError(f"launched by {launch.launcher} with {launch.size} ranks but no "
                              "store to meet in: set MASTER_ADDR/MASTER_PORT (torchrun does), or "
                              "call torch.distributed.init_process_group first")
    wait = timedelta(seconds=min(timeout, 86400.0))
    if os.environ.get("TORCHELASTIC_USE_AGENT_STORE", "").lower() == "true":
        # torchrun's agent already serves a store there: join it as a client.
        return dist.TCPStore(addr, int(port), launch.size, False, wait)
    # MASTER_PORT itself is left for a process group the user may open later.
    return dist.TCPStore(addr, int(port) + 1, launch.size, launch.rank == 0, wait)


def store_exchange(store: Any, launch: LaunchInfo, timeout: float,
                   what: str) -> Callable[[bytes], List[bytes]]:
    """An all-gather of bytes through `store`, for one communicator's setup."""
    gen = _generation.get(id(store), (store, 0))[1]
    _generation[id(store)] = (store, gen + 1)
    prefix = f"ringreduce/{what}/{gen}/"
    rounds = [0]  # a setup exchanges several times: each round has keys of its own

    def exchange(mine: bytes) -> List[bytes]:
        here = f"{prefix}{rounds[0]}/"
        rounds[0] += 1
        store.set(here + str(launch.rank), mine)
        keys = [here + str(q) for q in range(launch.size)]
        try:
            store.wait(keys, timedelta(seconds=min(timeout, 86400.0)))
        except Exception as e:  # noqa: BLE001 - c10d raises its own DistError types
            raise CollectiveTimeout(f"rank {launch.rank}: not every rank joined within "
                                    f"{timeout} s ({type(e).__name__}: {e})") from None
        return [bytes(store.get(k)) for k in keys]
    return exchange


def mpi_exchange() -> Callable[[bytes], List[bytes]]:
    """An all-gather of bytes over MPI_COMM_WORLD (mpirun with backend 'ucx')."""
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    return lambda mine: [bytes(b) for b in comm.allgather(bytes(mine))]


def make_ucx(launch: LaunchInfo, store: Any, opts: "_C.Options") -> Any:
    """A _C.Communicator over UCX for this launch."""
    if not getattr(_C, "has_ucx", False):
        raise RingReduceError("this build of ringreduce has no UCX transport (pip install "
                              "libucx-cu13, then rebuild)")
    if launch.size == 1:
        exchange: Callable[[bytes], List[bytes]] = lambda mine: [bytes(mine)]
    elif store is not None:
        exchange = store_exchange(store, launch, opts.timeout, "ucx")
    elif launch.launcher == "mpirun" and _C.has_mpi:
        exchange = mpi_exchange()
    else:
        exchange = store_exchange(_launcher_store(launch, opts.timeout), launch, opts.timeout,
                                  "ucx")
    one_host = None
    if store is not None and launch.size > 1:
        # A store's ranks need not come from one launcher, which alone knows
        # who shares this host: ask them (one more round of the exchange).
        one_host = len(set(exchange(socket.gethostname().encode()))) == 1
    ucx = _C.UcxOptions()
    ucx.net_devices = net_devices(launch, one_host)
    ucx.tls = settings.get("RINGREDUCE_UCX_TLS")
    return _C.Communicator.ucx(launch.rank, launch.size, exchange, ucx, opts)
