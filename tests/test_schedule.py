"""The ring's pure arithmetic: chunks cover every element exactly once."""
import numpy as np
import pytest

from ringreduce import _C


# A million one-element chunks would only slow the test down.
CASES = [(n, count, chunk) for n in [1, 2, 3, 4, 5, 7, 8, 16, 64]
         for count in [0, 1, 2, 3, 7, 8, 9, 63, 64, 65, 1000, 1000003]
         for chunk in [1, 3, 64, 1 << 20] if not (chunk == 1 and count > 1000)]


@pytest.mark.parametrize("n,count,chunk", CASES)
def test_chunks_cover_every_element_once(n, count, chunk):
    sched = _C.RingSchedule(count, n, chunk)
    spans = [(seg, c, *sched.chunk(seg, c)) for seg in range(n)
             for c in range(sched.chunks_per_segment)]
    hits = np.zeros(count, dtype=np.int64)
    per_segment = {}
    for seg, c, off, cnt in spans:
        assert cnt >= 0 and 0 <= off and off + cnt <= count
        assert cnt <= chunk, "no chunk exceeds chunk size"
        hits[off:off + cnt] += 1
        per_segment.setdefault(seg, []).append(cnt)
    assert (hits == 1).all()
    # Segments: the first count % n get one extra element.
    sizes = [sum(per_segment[s]) for s in range(n)]
    assert sizes == [count // n + (1 if s < count % n else 0) for s in range(n)]
    # Every segment has the same number of chunks, and chunks differ by <= 1.
    assert len({len(v) for v in per_segment.values()}) == 1
    for v in per_segment.values():
        assert max(v) - min(v) <= 1


@pytest.mark.parametrize("n", [2, 3, 4, 8])
def test_steps_form_a_ring(n):
    s = _C.RingSchedule(n, n, 1)
    steps = {r: [(s.rs_send_segment(r, t), s.rs_recv_segment(r, t), s.ag_send_segment(r, t),
                  s.ag_recv_segment(r, t)) for t in range(n - 1)] for r in range(n)}
    for r in range(n):
        left = (r - 1) % n
        for t in range(n - 1):
            rs_send, rs_recv, ag_send, ag_recv = steps[r][t]
            # What I receive is what my left neighbour sends at the same step.
            assert rs_recv == steps[left][t][0]
            assert ag_recv == steps[left][t][2]
            # What I send at step t+1 is what I reduced at step t.
            if t + 1 < n - 1:
                assert steps[r][t + 1][0] == rs_recv
                assert steps[r][t + 1][2] == ag_recv
        # The last reduce-scatter step leaves rank r owning segment r,
        # and the all-gather brings every other segment exactly once.
        assert steps[r][-1][1] == r
        assert steps[r][0][2] == r
        assert sorted(s[3] for s in steps[r]) == sorted(set(range(n)) - {r})


def test_half_conversions_match_numpy():
    bits = np.arange(1 << 16, dtype=np.uint16)
    ref = bits.view(np.float16).astype(np.float32)
    got = np.array([_C.half_to_float(int(b)) for b in bits], dtype=np.float32)
    finite = np.isfinite(ref)
    assert np.array_equal(got[finite], ref[finite])
    assert np.isnan(got[np.isnan(ref)]).all()
    rng = np.random.default_rng(0)
    vals = np.concatenate([rng.normal(0, 1, 20000), rng.normal(0, 1e-5, 5000),
                           rng.normal(0, 3e4, 5000), [65504, 65520, 1e6, -1e6, 0.0, -0.0]])
    vals = vals.astype(np.float32)
    want = vals.astype(np.float16).view(np.uint16)
    got = np.array([_C.float_to_half(float(v)) for v in vals], dtype=np.uint16)
    assert np.array_equal(got, want), vals[got != want][:5]


def test_bf16_round_to_nearest_even():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(1)
    vals = np.concatenate([rng.normal(0, 1, 20000), rng.normal(0, 1e30, 100)]).astype(np.float32)
    want = torch.from_numpy(vals).to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)
    got = np.array([_C.float_to_bf16(float(v)) for v in vals], dtype=np.uint16)
    assert np.array_equal(got, want)
    back = torch.from_numpy(want[:200].view(np.int16).copy()).view(torch.bfloat16).float().numpy()
    assert [_C.bf16_to_float(int(b)) for b in want[:200]] == back.tolist()
