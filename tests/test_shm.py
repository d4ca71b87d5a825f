"""Host shared memory (csrc/shm/, algo/shm.*): attaching the segment, and what
a rank that disagrees, refuses or never comes sees while the others wait in
it. Results by dtype, op, count and rank count are in test_algorithms.py
(shm_one_shot, shm_two_shot); over real processes in the mpirun suites,
where shared memory is on by default."""
from __future__ import annotations

import glob
import time

import numpy as np
import pytest

from conftest import WORKERS, needs_mpi, results, run_mpi
from support.loopback import finalize, make_world, run_ranks

T = 3.0  # the worlds' timeout, seconds


def segments():
    return set(glob.glob("/dev/shm/ringreduce-*"))


@pytest.fixture
def world4():
    before = segments()
    comms = make_world(4, timeout=T, shm_round_bytes=4096)
    # Rank 0 unlinks the segment's name once every rank has mapped it.
    assert segments() == before
    yield comms
    finalize(comms)


def kinds(res):
    return [type(e).__name__ if isinstance(e, BaseException) else "ok" for e in res]


def timed(comms, fn):
    t0 = time.monotonic()
    res = run_ranks(comms, fn, timeout=T + 30)
    return res, time.monotonic() - t0


def test_attached_and_right(world4):
    def fn(c):
        assert c.shared_memory == "attached"
        x = np.arange(10000, dtype=np.float32) * (c.rank + 1)
        return c.allreduce(x)
    for y in run_ranks(world4, fn):
        assert np.array_equal(y, np.arange(10000, dtype=np.float32) * 10)


@pytest.mark.parametrize("count", [3, 5000])  # one-shot, two-shot
def test_count_mismatch_raises_on_every_rank(world4, count):
    res, took = timed(world4, lambda c: c.allreduce(np.ones(count + (c.rank == 2), np.float32)))
    assert kinds(res) == ["CollectiveMismatch"] * 4, res
    assert took < T, f"{took:.1f} s: the fingerprint in the round should catch it at once"
    assert "differs" in str(res[0]) and "rank 2" in str(res[0]), res[0]


def test_dtype_mismatch_raises_on_every_rank(world4):
    res, _ = timed(world4, lambda c: c.allreduce(np.ones(8, np.float64 if c.rank == 1 else np.float32)))
    assert kinds(res) == ["CollectiveMismatch"] * 4, res


@pytest.mark.parametrize("other", ["broadcast", "barrier"])
def test_peer_in_another_collective_is_a_mismatch_not_a_timeout(world4, other):
    """Rank 3 runs another collective under the same number: the others wait in
    shared memory and it waits in the transport; the board tells them all."""
    def fn(c):
        x = np.ones(16, np.float32)
        if c.rank == 3:
            return c.broadcast(x, 0) if other == "broadcast" else c.barrier()
        return c.allreduce(x)
    res, took = timed(world4, fn)
    assert set(kinds(res)) == {"CollectiveMismatch"}, res
    assert took < T, f"{took:.1f} s"
    assert any("call differs (as collective #0)" in str(e) for e in res), res


def test_refusing_rank_frees_the_others(world4):
    def fn(c):
        return c.allreduce(np.ones(16, np.float32), op="nope" if c.rank == 1 else "sum")
    res, took = timed(world4, fn)
    assert isinstance(res[1], ValueError), res[1]
    assert all(type(e).__name__ in ("CollectiveMismatch", "RingReduceError") for e in res[:1] + res[2:]), res
    assert took < T, f"{took:.1f} s"


def test_absent_rank_times_out(world4):
    def fn(c):
        if c.rank == 0:
            return None  # never comes
        return c.allreduce(np.ones(16, np.float32))
    res, took = timed(world4, fn)
    assert kinds(res)[1:] == ["CollectiveTimeout"] * 3, res
    assert "never put in its part" in str(res[1]) and "rank 0" in str(res[1]), res[1]
    assert T - 0.5 < took < T + 5, took


def test_many_rounds_and_calls_in_a_row(world4):
    """Rounds alternate parities: fast ranks run ahead into the next call
    while slow ones still read; nothing may be overwritten under them."""
    def fn(c):
        outs = []
        for i in range(200):
            n = 1 + (i * 37) % 3000  # one-shot and two-shot, one round and many
            x = np.full(n, c.rank + i, np.float64)
            if c.rank == i % 4:
                time.sleep(0.0005)  # one slow rank per call
            outs.append(c.allreduce(x)[0])
        return outs
    res = run_ranks(world4, fn)
    want = [float(sum(r + i for r in range(4))) for i in range(200)]
    for r in res:
        assert r == want


def test_attach_failure_is_the_same_everywhere_and_harmless():
    """A segment /dev/shm cannot hold: every rank gets the same reason, and
    the algorithms over the transport take over."""
    comms = make_world(3, timeout=T)
    try:
        why = run_ranks(comms, lambda c: c._impl.attach_shared_memory(1 << 50))
        assert len(set(why)) == 1 and "rank 0 could not make" in why[0], why
        res = run_ranks(comms, lambda c: (c.shared_memory, c.explain("allreduce", count=4)[0],
                                          c.allreduce(np.ones(4, np.float32))))
        for attached, algo, y in res:
            assert attached == "not attached" and algo == "recursive_doubling"
            assert np.array_equal(y, np.full(4, 3, np.float32))
    finally:
        finalize(comms)


@needs_mpi
def test_processes_attach_and_agree():
    """Real processes: attached by default, the choice by size, the same bits
    on every rank, and RINGREDUCE_SHM=0 (or shared_memory=False) turns it off."""
    out = results(run_mpi(3, WORKERS / "shm.py", timeout=120).stdout)
    assert len(out) == 3
    for res in out:
        assert res["default"] == "attached", res
        assert res["small"] == "shm_one_shot" and res["large"] == "shm_two_shot", res
        assert res["off"].startswith("turned off") and res["off_algo"] == "recursive_doubling", res
        assert res["wrong"] == 0, res
    assert len({res["digest"] for res in out}) == 1, out
    assert not segments()
