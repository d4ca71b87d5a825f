"""Point-to-point semantics on the in-process loopback world: tags are part
of a message's fingerprint (checked, never used to reorder), and receives
from any source take the first message that no earlier receive waits for.
The same checks run over MPI and UCX in tests/workers (point_to_point_checks)."""
from __future__ import annotations

import time

import numpy as np
import pytest

import ringreduce as rr
from ringreduce import _C
from tests.support.loopback import make_world, run_ranks


def _ok(results):
    for x in results:
        if isinstance(x, BaseException):
            raise x
    return results


@pytest.mark.parametrize("n", [2, 3, 4])
def test_tagged_send_recv_pairs_by_tag(n):
    def body(c):
        r = c.rank
        got = {}
        for dst in range(n):
            if dst == r:
                for src in range(n):
                    if src != r:
                        x = np.full(9, -1.0, np.float32)
                        c.recv(x, src, tag=100 + src)
                        got[src] = x.tolist()
            else:
                c.send(np.full(9, float(r), np.float32), dst, tag=100 + r)
        return got

    for r, got in enumerate(_ok(run_ranks(make_world(n), body))):
        assert got == {s: [float(s)] * 9 for s in range(n) if s != r}


def test_tags_that_differ_raise_mismatch_and_no_data():
    def body(c):
        if c.rank == 0:
            c.send(np.arange(4, dtype=np.int32), 1, tag=3)
            time.sleep(0.5)
            with pytest.raises(rr.RingReduceError):  # the peer's verdict ends this communicator
                c.barrier()
            return None
        x = np.full(4, -1, np.int32)
        with pytest.raises(rr.CollectiveMismatch, match="tag"):
            c.recv(x, 0, tag=4)
        return x.tolist()

    out = _ok(run_ranks(make_world(2, timeout=10), body))
    assert out[1] == [-1] * 4  # the other call's bytes were never handed over


@pytest.mark.parametrize("n", [2, 3, 5])
def test_recv_from_any_source_names_the_sender(n):
    def body(c):
        if c.rank == 0:
            seen = []
            for _ in range(n - 1):
                x = np.full(6, -1, np.int64)
                w = c.recv(x, None, async_op=True)
                w.wait()
                assert (x == 7 * w.source).all(), (x, w.source)
                seen.append(w.source)
            return sorted(seen)
        c.send(np.full(6, 7 * c.rank, np.int64), 0)
        return None

    assert _ok(run_ranks(make_world(n), body))[0] == list(range(1, n))


def test_any_source_leaves_a_named_receive_its_message():
    """Rank 0 posts a receive from any source, then one from rank 1; only
    then does rank 1 send A, then B. The named receive was numbered first for
    rank 1's messages, so it takes A, and the one from any source takes B
    (had A come before the named receive was posted, it would have been the
    any-source receive's: first come, first matched)."""
    import threading
    posted = threading.Event()

    def body(c):
        if c.rank == 1:
            assert posted.wait(10)
            c.send(np.array([1.0]), 0)
            c.send(np.array([2.0]), 0)
            return None
        anyx, named = np.zeros(1), np.zeros(1)
        w = c.recv(anyx, async_op=True)
        v = c.recv(named, 1, async_op=True)
        posted.set()
        v.wait()
        w.wait()
        return anyx[0], named[0], w.source

    assert _ok(run_ranks(make_world(2), body))[0] == (2.0, 1.0, 1)


def test_named_receive_reports_its_source():
    def body(c):
        if c.rank == 0:
            c.send(np.ones(3), 1)
            return None
        w = c.recv(np.zeros(3), 0, async_op=True)
        w.wait()
        return w.source

    assert _ok(run_ranks(make_world(2), body))[1] == 0


def test_any_source_with_no_sender_times_out():
    def body(c):
        if c.rank == 0:
            t0 = time.monotonic()
            with pytest.raises(rr.CollectiveTimeout, match="any rank"):
                c.recv(np.zeros(2))
            return time.monotonic() - t0
        return None

    took = _ok(run_ranks(make_world(2, timeout=1.0), body))[0]
    assert took < 8


def test_any_source_needs_a_peer():
    c = make_world(1)[0]
    with pytest.raises(ValueError, match="world of one rank"):
        c.recv(np.zeros(2))


@pytest.mark.parametrize("bad", [1.5, "x", True, 1 << 70])
def test_bad_tag_is_refused_and_the_receiver_told(bad):
    def body(c):
        if c.rank == 0:
            with pytest.raises(ValueError, match="tag must be an integer"):
                c.send(np.zeros(2), 1, tag=bad)
            return True
        with pytest.raises(rr.CollectiveMismatch, match="refused"):  # not a wait to the deadline
            c.recv(np.zeros(2), 0)
        return True

    assert _ok(run_ranks(make_world(2, timeout=20), body)) == [True, True]


def test_any_source_constant_is_exported():
    assert _C.ANY_SOURCE < 0
