"""N ranks in one process: one thread per rank over the in-process loopback
transport, with the real Communicator, algorithms and checks on top."""
from __future__ import annotations

import threading
from typing import Any, Callable, List, Optional

from ringreduce import _C, settings
from ringreduce._device import DeviceEngines
from ringreduce.comm import Communicator
from ringreduce.launch import LaunchInfo


def make_world(n: int, timeout: float = 30.0, shm_round_bytes: int = 0,
               **policy: Any) -> List[Communicator]:
    """n communicators over one loopback world; `policy` sets SelectPolicy
    fields. shm_round_bytes > 0: the ranks also attach one shared-memory
    segment (rounds of that many bytes), as processes of one machine do."""
    world = _C.LoopbackWorld(n)
    opts = settings.make_options(timeout=timeout)
    p = opts.policy
    for k, v in policy.items():
        setattr(p, k, v)
    opts.policy = p
    comms = []
    for r in range(n):
        impl = _C.Communicator.loopback(world, r, opts)
        launch = LaunchInfo(r, n, r, n, "loopback")
        comms.append(Communicator(impl, "loopback", launch, DeviceEngines(impl, launch, None)))
    comms[0]._world = world  # keep it reachable for sever()
    if shm_round_bytes > 0 and n > 1:
        why = run_ranks(comms, lambda c: c._impl.attach_shared_memory(shm_round_bytes), timeout=60)
        assert why == [""] * n, why
    return comms


def run_ranks(comms: List[Communicator], fn: Callable[[Communicator], Any],
              timeout: float = 120.0) -> List[Any]:
    """fn(comm) on every rank at once; returns each rank's result, or the
    exception it raised. A rank still running after `timeout` is a hang."""
    out: List[Any] = [None] * len(comms)
    done = [False] * len(comms)

    def body(r: int) -> None:
        try:
            out[r] = fn(comms[r])
        except BaseException as e:  # noqa: BLE001 - reported to the test
            out[r] = e
        done[r] = True

    threads = [threading.Thread(target=body, args=(r,), daemon=True) for r in range(len(comms))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout)
    hung = [r for r in range(len(comms)) if not done[r]]
    if hung:
        raise AssertionError(f"ranks {hung} did not return within {timeout} s")
    return out


def finalize(comms: List[Communicator]) -> None:
    run_ranks(comms, lambda c: c.finalize(), timeout=60)


def loopback(n: int, fn: Callable[[Communicator], Any], timeout: float = 120.0,
             **policy: Any) -> List[Any]:
    """make_world + run_ranks + finalize."""
    comms = make_world(n, **policy)
    try:
        return run_ranks(comms, fn, timeout)
    finally:
        finalize(comms)


def raise_first(results: List[Any]) -> List[Any]:
    for r in results:
        if isinstance(r, BaseException):
            raise r
    return results
