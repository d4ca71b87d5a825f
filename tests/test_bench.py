"""ringreduce-bench without a launcher: argument parsing, the size grid,
bandwidth formulas, the checker, the measuring loop driven directly (a
corrupting backend, a failing one), the cost models and the mpirun hint.
Real runs under mpirun are in test_bench_runs.py."""
from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path

import numpy as np
import pytest

from ringreduce.bench import baselines, check, cli, fit, harness, machine, report
from ringreduce.bench.backend import Backend, Context
from ringreduce.bench.control import Control, RowSkipped
from ringreduce.bench.measure import Harness
from ringreduce.bench.rows import algbw, busbw
from ringreduce.bench.timing import Plan

ROOT = Path(__file__).resolve().parent.parent
PLUGIN = ROOT / "tests" / "support" / "bench_plugin.py"


# -- argument parsing ----------------------------------------------------------------
@pytest.mark.parametrize("text,expected", [
    ("8", 8), ("1K", 1024), ("1k", 1024), ("1M", 1 << 20), ("16M", 16 << 20), ("1G", 1 << 30),
    ("256M", 256 << 20), ("4KiB", 4096), ("2MB", 2 << 20), ("0", 0), ("100B", 100)])
def test_parse_size(text, expected):
    assert cli.parse_size(text) == expected


@pytest.mark.parametrize("bad", ["", "1.5M", "-8", "abc", "1X", "K", "1 M B", "1e6"])
def test_parse_size_rejects(bad):
    with pytest.raises(ValueError, match="bad size"):
        cli.parse_size(bad)


def test_cli_rejects_bad_size_with_message(capsys):
    with pytest.raises(SystemExit) as e:
        cli.parse_args(["-b", "12Q"])
    assert e.value.code == 2
    assert "bad size '12Q'" in capsys.readouterr().err


def test_cli_rejects_min_above_max(capsys):
    with pytest.raises(SystemExit):
        cli.parse_args(["-b", "1M", "-e", "1K"])
    assert "larger than -e" in capsys.readouterr().err


@pytest.mark.parametrize("argv,msg", [
    (["-d", "float32,complex64"], "unknown dtype 'complex64'"),
    (["-o", "xor"], "unknown op 'xor'"),
    (["--backends", "ringreduce,foo"], "unknown backend 'foo'"),
    (["--backends", "test-corrupt"], "unknown backend 'test-corrupt'"),  # only with its plug-in
    (["-f", "1"], "step factor must be > 1"),
    (["-n", "0"], "expected an integer >= 1"),
    (["--chunk-bytes", "64K,oops"], "bad size 'oops'"),
    (["--sizes", "8..1Kx1"], "step factor must be > 1"),
    (["--sizes", "1M..8"], "is larger than"),
    (["--graph-iters", "0"], "expected an integer >= 1"),
    (["--fit", "x.json", "--model", "tree"], "invalid choice: 'tree'"),
])
def test_cli_rejects(argv, msg, capsys):
    with pytest.raises(SystemExit):
        cli.parse_args(argv)
    assert msg in capsys.readouterr().err


def test_cli_defaults_and_lists():
    a = cli.parse_args(["-b", "8", "-e", "1G", "-d", "float32,bfloat16", "-o", "sum,max",
                        "--backends", "ringreduce,ringreduce-ps,launch,gloo",
                        "--chunk-bytes", "256K"])
    assert (a.minbytes, a.maxbytes, a.stepfactor) == (8, 1 << 30, 2.0)
    assert a.datatype == ["float32", "bfloat16"] and a.op == ["sum", "max"]
    assert a.backends == ["ringreduce", "ringreduce-ps", "launch", "gloo"]
    assert a.chunk_bytes == [256 << 10]
    assert a.check == 1 and a.iters == 20 and a.warmup_iters == 5
    assert not a.graph and a.graph_iters == 20 and a.out_dir == "out"
    assert cli.parse_args(["--chunk-bytes", "64K,1M"]).chunk_bytes == [64 << 10, 1 << 20]
    assert cli.parse_args(["--graph-only"]).graph
    d = cli.parse_args([])
    assert d.datatype == ["float32"] and d.op == ["sum"] and d.backends is None
    assert d.sizes is None and d.model == "ring"


def test_every_row_the_brief_names_is_a_backend():
    for name in ("ringreduce", "ringreduce-ring", "ringreduce-mpi", "ringreduce-ucx",
                 "ringreduce-nccl", "ringreduce-ps", "ringreduce-ps-sharded", "nccl",
                 "torch-nccl", "torch-symm-oneshot", "torch-symm-twoshot", "mpi", "mpi-tcp",
                 "gloo", "launch"):
        assert name in baselines.names()


def test_plugin_registers_a_backend():
    try:
        cli.load_plugins(["--plugin", str(PLUGIN)])
        assert "test-corrupt" in baselines.names()
        assert cli.parse_args(["--backends", "test-corrupt,mpi"]).backends == \
            ["test-corrupt", "mpi"]
        with pytest.raises(ValueError, match="built in"):
            baselines.register("mpi", Backend)
    finally:
        baselines._CLASSES.pop("test-corrupt", None)


# -- the size grid -------------------------------------------------------------------
def test_sizes():
    assert cli.sizes(8, 1024, 2) == [8, 16, 32, 64, 128, 256, 512, 1024]
    assert cli.sizes(8, 1000, 4) == [8, 32, 128, 512]
    assert cli.sizes(1 << 20, 1 << 20, 2) == [1 << 20]


def test_sizes_include_the_end_when_it_lies_on_the_grid():
    # 8 * 4^k are odd powers of two: 256M is not on that grid, 128M is the last size.
    assert cli.sizes(8, 256 << 20, 4)[-1] == 128 << 20
    assert cli.sizes(8, 128 << 20, 4)[-1] == 128 << 20
    assert cli.sizes(16, 256 << 20, 4)[-2:] == [64 << 20, 256 << 20]
    assert cli.sizes(8, 256 << 20, 2)[-1] == 256 << 20
    assert cli.sizes(3, 3 ** 20, 3)[-1] == 3 ** 20          # exact integer powers, no drift
    assert cli.sizes(64, 729, 1.5) == [64, 96, 144, 216, 324, 486, 729]
    assert cli.sizes(1, 10 ** 12, 10)[-1] == 10 ** 12
    s = cli.sizes(10, 30, 1.1)                               # from b each time: no drift
    assert s == sorted(set(s)) and s[-1] == int(10 * 1.1 ** 11)


def test_size_list():
    assert cli.parse_size_list("8..64K,256K..256Mx4") == \
        [8 << k for k in range(14)] + [256 << 10, 1 << 20, 4 << 20, 16 << 20, 64 << 20,
                                       256 << 20]
    assert cli.parse_size_list("1M,8,1M") == [8, 1 << 20]
    assert cli.parse_args(["--sizes", "1K..4K"]).sizes == [1024, 2048, 4096]


def test_output_paths_land_in_out_dir():
    assert cli.output_path("r.json", "out") == os.path.join("out", "r.json")
    assert cli.output_path("res/r.json", "out") == "res/r.json"
    assert cli.output_path("./r.json", "out") == "./r.json"
    assert cli.output_path(None, "out") is None


# -- the mpirun line for a run without a launcher ---------------------------------------
def test_mpirun_line():
    cmd = [".venv/bin/ringreduce-bench", "-b", "8"]
    assert machine.mpirun_line(cmd, 4, "openmpi", True, 2) == \
        "mpirun --allow-run-as-root --oversubscribe -np 4 .venv/bin/ringreduce-bench -b 8"
    assert machine.mpirun_line(cmd, 4, "openmpi", False, 16) == \
        "mpirun -np 4 .venv/bin/ringreduce-bench -b 8"
    assert machine.mpirun_line(cmd, 4, "mpich", True, 2) == \
        "mpirun -np 4 .venv/bin/ringreduce-bench -b 8"
    assert machine.own_command(["/x/ringreduce/bench/__main__.py", "-n", "3"]) == \
        [sys.executable, "-m", "ringreduce.bench", "-n", "3"]
    own = machine.own_command(["/v/bin/ringreduce-bench", "-n", "3"])
    assert own == ["/v/bin/ringreduce-bench", "-n", "3"]


# -- bandwidth formulas ------------------------------------------------------------------
def test_algbw_busbw():
    assert algbw(10 ** 9, 1.0) == pytest.approx(1.0)
    assert algbw(1 << 20, 100e-6) == pytest.approx(10.48576)
    assert busbw(1.0, 4) == pytest.approx(1.5)      # 2*3/4
    assert busbw(2.0, 2) == pytest.approx(2.0)      # 2*1/2
    assert busbw(3.0, 8) == pytest.approx(5.25)     # 2*7/8
    assert busbw(5.0, 1) == 0.0


# -- inputs, expected results and the checker ----------------------------------------------
@pytest.mark.parametrize("dtype", list(check.ITEMSIZE))
@pytest.mark.parametrize("op", ["sum", "prod", "min", "max", "avg"])
@pytest.mark.parametrize("nranks", [1, 3, 4])
def test_expected_is_exact_in_dtype(dtype, op, nranks):
    """Reducing the rank tables in the dtype itself, in any order, gives the
    float64 expectation (within the stated tolerance): the check is fair."""
    import torch

    tables = [torch.from_numpy(harness.rank_table(7, r, nranks, dtype, op)).to(getattr(torch, dtype))
              for r in range(nranks)]
    for t, r in zip(tables, range(nranks)):  # inputs are themselves exact in the dtype
        assert torch.equal(t.double(), torch.from_numpy(harness.rank_table(7, r, nranks, dtype, op)))
    exp, rtol = harness.expected_table(7, nranks, dtype, op)
    for order in (range(nranks), reversed(range(nranks))):
        order = list(order)
        acc = tables[order[0]].clone()
        for r in order[1:]:
            acc = {"sum": torch.add, "avg": torch.add, "prod": torch.mul, "min": torch.minimum,
                   "max": torch.maximum}[op](acc, tables[r])
        if op == "avg":
            acc = acc / nranks if acc.is_floating_point() else torch.div(acc, nranks,
                                                                          rounding_mode="trunc")
            acc = acc.to(getattr(torch, dtype))
        assert check.count_wrong(acc, torch.from_numpy(exp), rtol) == 0
    assert np.abs(exp).max() > 0  # the check compares something


def _periodic(count, table):
    import torch

    t = torch.empty(count, dtype=torch.float32)
    check.fill_periodic(t, torch.from_numpy(table).float())
    return t


def test_fill_periodic():
    table = np.arange(check.PERIOD, dtype=np.float64)
    for n in (0, 5, check.PERIOD, 3 * check.PERIOD + 17):
        t = _periodic(n, table)
        assert np.array_equal(t.numpy(), np.resize(table, n).astype(np.float32))


def test_count_wrong_counts_exactly_the_wrong_elements():
    import torch

    exp, _ = harness.expected_table(3, 4, "float32", "sum")
    n = check.CHECK_BLOCK * 2 + 12345  # several check blocks, a ragged last one
    good = _periodic(n, exp)
    e = torch.from_numpy(exp)
    assert check.count_wrong(good, e) == 0
    bad = good.clone()
    idx = [0, 1, check.PERIOD, check.CHECK_BLOCK - 1, check.CHECK_BLOCK, n - 1]
    for i in idx:
        bad[i] += 1
    bad[777] = float("nan")
    assert check.count_wrong(bad, e) == len(idx) + 1
    # A segment landing one element off is wrong almost everywhere it lands.
    shifted = good.clone()
    shifted[1000:3000] = good[1001:3001]
    assert check.count_wrong(shifted, e) >= 1900


def test_count_wrong_with_tolerance():
    import torch

    e = torch.tensor([3.0, -1.5, 100.0], dtype=torch.float64)
    got = torch.tensor([3.0, -1.5, 100.0 * (1 + 2e-3)], dtype=torch.float32)
    assert check.count_wrong(got, e, rtol=2 ** -7) == 0
    assert check.count_wrong(got, e, rtol=2 ** -10) == 1
    assert check.count_wrong(got, e) == 1


def test_budget_plan():
    p = Plan(warmup=5, iters=100, budget=0.5, min_iters=3, check=True, seed=1)
    assert p.counts(0.001) == (4, 100)   # cheap: capped by -n
    assert p.counts(0.05) == (1, 10)     # 0.5 s / 0.05 s
    assert p.counts(2.0) == (0, 3)       # expensive: the minimum
    q = Plan(5, 20, 0.0, 3, True, 1)
    assert q.counts(10.0) == (4, 20)     # no budget: -w and -n as given


# -- the measuring loop, driven directly on one rank --------------------------------------
class _Copy(Backend):
    """An all-reduce over one rank: the result is the input."""

    name = "copy"

    def run(self, inp, out, op):
        if out is not None:
            out.copy_(inp)


class _Corrupt(_Copy):
    name = "corrupt"

    def run(self, inp, out, op):
        super().run(inp, out, op)
        t = (inp if out is None else out).view(-1)
        t[t.numel() // 2] += 1


class _Raises(_Copy):
    name = "raises"

    def run(self, inp, out, op):
        raise RuntimeError("no such thing here")


def _harness():
    return Harness("cpu", Control(), Plan(1, 3, 0.0, 1, True, 5))


@pytest.mark.parametrize("inplace", [False, True])
def test_wrong_elements_of_a_corrupting_backend_are_counted(inplace):
    h = _harness()
    ctx = Context("cpu", None, Control(), None)
    inp, out = h.allocate(4099, "float32")
    assert h.measure(_Copy(ctx), inp, out, "float32", "sum", inplace).wrong == 0
    m = h.measure(_Corrupt(ctx), inp, out, "float32", "sum", inplace)
    assert m.wrong == 1 and m.iters == 3 and m.seconds > 0


def test_a_failing_backend_skips_its_row_with_the_error():
    h = _harness()
    inp, out = h.allocate(16, "float32")
    with pytest.raises(RowSkipped, match="RuntimeError: no such thing here"):
        h.measure(_Raises(Context("cpu", None, Control(), None)), inp, out, "float32", "sum",
                  False)


class _FakeGraphs:
    """Enough of torch.cuda's graph API to drive measure_graph on the host:
    a captured call is recorded, a replay runs the recorded calls."""

    capturing = None

    class CUDAGraph:
        def __init__(self):
            self.calls = []

        def replay(self):
            for c in self.calls:
                c()

    @staticmethod
    @contextlib.contextmanager
    def graph(g, **kw):
        _FakeGraphs.capturing = g
        try:
            yield
        finally:
            _FakeGraphs.capturing = None

    class _Stream:
        def wait_stream(self, other):
            pass

    @classmethod
    def install(cls, monkeypatch):
        import torch

        monkeypatch.setattr(torch.cuda, "CUDAGraph", cls.CUDAGraph)
        monkeypatch.setattr(torch.cuda, "graph", cls.graph)
        monkeypatch.setattr(torch.cuda, "Stream", cls._Stream)
        monkeypatch.setattr(torch.cuda, "stream", lambda s: contextlib.nullcontext())
        monkeypatch.setattr(torch.cuda, "current_stream", cls._Stream)
        monkeypatch.setattr(torch.cuda, "synchronize", lambda *a: None)


class _Capturable(_Copy):
    """Counts the calls that really run; under capture, records them instead."""

    name = "capturable"
    corrupt = False
    fail_capture = False

    def __init__(self, ctx):
        super().__init__(ctx)
        self.ran = 0

    def run(self, inp, out, op):
        def call():
            self.ran += 1
            _Copy.run(self, inp, out, op)
            if self.corrupt:
                t = (inp if out is None else out).view(-1)
                t[0] += 1
        g = _FakeGraphs.capturing
        if g is None:
            call()
        elif self.fail_capture:
            raise RuntimeError("operation not permitted when stream is capturing")
        else:
            g.calls.append(call)


@pytest.mark.parametrize("inplace", [False, True])
def test_graph_rows_check_the_replay_and_time_per_call(monkeypatch, inplace):
    _FakeGraphs.install(monkeypatch)
    h = Harness("cpu", Control(), Plan(warmup=2, iters=4, budget=0.0, min_iters=1, check=True,
                                       seed=5, graph_calls=5))
    ctx = Context("cpu", None, Control(), None)
    inp, out = h.allocate(2048, "float32")
    b = _Capturable(ctx)
    m = h.measure_graph(b, inp, out, "float32", "sum", inplace)
    assert m.wrong == 0 and m.iters == 4 and m.seconds > 0
    # 2 eager warm-ups, 1 checked replay of the one-call graph, then replays of
    # the 5-call graph: 1 timed warm-up, 1 more warm-up, 4 timed.
    assert b.ran == 2 + 1 + 5 * (1 + 1 + 4)
    bad = _Capturable(ctx)
    bad.corrupt = True
    assert h.measure_graph(bad, inp, out, "float32", "sum", inplace).wrong == 1
    fails = _Capturable(ctx)
    fails.fail_capture = True
    with pytest.raises(RowSkipped, match="stream is capturing"):
        h.measure_graph(fails, inp, out, "float32", "sum", inplace)


def test_host_rows_say_why_they_cannot_be_graphed():
    ctx = Context("cpu", None, Control(), None)
    for name in ("ringreduce", "mpi", "gloo", "launch", "mpi-naive"):
        assert baselines.make(name, ctx).graph_skip_reason()
    assert baselines.make("mpi", Context("cuda", None, Control(), None)).graph_skip_reason()
    assert baselines.make("nccl", Context("cuda", None, Control(), None)).graph_skip_reason() \
        is None


# -- cost models -------------------------------------------------------------------------------
SIZES = [8 << k for k in range(0, 26, 2)]


def test_fit_recovers_alpha_and_delta_from_one_world_size():
    alpha, beta, gamma = 20e-6, 0.25e-9, 0.4e-9
    f = fit.fit_points(fit.synthetic(alpha, beta, gamma, [4], SIZES))
    assert f.alpha == pytest.approx(alpha, rel=1e-6)
    assert f.delta == pytest.approx(2 * beta + gamma, rel=1e-6)
    assert f.beta is None and "not split" in f.split
    assert f.rms_rel < 1e-9


def test_fit_splits_beta_with_a_known_gamma_and_several_world_sizes():
    alpha, beta, gamma = 5e-6, 0.1e-9, 0.3e-9
    pts = fit.synthetic(alpha, beta, gamma, [2, 4, 8], SIZES, noise=0.02, seed=3)
    f = fit.fit_points(pts, gamma=gamma, gamma_source="test")
    assert f.alpha == pytest.approx(alpha, rel=0.05)
    assert f.beta == pytest.approx(beta, rel=0.05)
    assert f.gamma == gamma
    # Predictions follow the model: time and busbw at a large N.
    t = fit.predict(f, 64, 1 << 30)
    assert t == pytest.approx(2 * 63 * alpha + 63 / 64 * (1 << 30) * (2 * beta + gamma), rel=0.05)
    # A slower inter-host link (25 Gbit/s = 0.32 ns/B) replaces beta.
    t2 = fit.predict(f, 64, 1 << 30, link_gbps=25.0)
    assert t2 == pytest.approx(2 * 63 * f.alpha + 63 / 64 * (1 << 30) * (2 * 0.32e-9 + gamma),
                               rel=1e-6)
    assert fit.busbw_of(64, 1 << 30, t2) < fit.busbw_of(64, 1 << 30, t)


def test_parameter_server_model_scales_with_n():
    alpha, beta, gamma = 5e-6, 0.1e-9, 0.3e-9
    pts = fit.synthetic(alpha, beta, gamma, [4, 8, 16], SIZES, model="ps")
    ps = fit.fit_points(pts, model="ps")
    assert ps.alpha == pytest.approx(alpha, rel=1e-6) and ps.model == "ps"
    ring = fit.fit_points(fit.synthetic(alpha, beta, gamma, [4, 8, 16], SIZES))
    nb = 1 << 30
    # The server's link carries 2(N-1) buffers; a ring link about 2, whatever N is.
    assert fit.MODELS["ps"].link(4096, nb) == 2 * 4095 * nb
    assert fit.MODELS["ring"].link(4096, nb) < 2 * nb
    assert fit.predict(ps, 4096, nb) / fit.predict(ring, 4096, nb) > 1000
    assert fit.busbw_of(4096, nb, fit.predict(ps, 4096, nb)) < 0.01 * \
        fit.busbw_of(4096, nb, fit.predict(ring, 4096, nb))


def test_fit_needs_points():
    with pytest.raises(ValueError, match="at least 2"):
        fit.fit_points([fit.Point(4, 8, 1e-5)])


def test_summary_lines_name_the_sizes_that_ran():
    oop = [(1 << 20, "float32", "sum", 1.2, 0.8), (128 << 20, "float32", "sum", 1.1, 0.9),
           (8, "float32", "sum", 0.5, 2.0)]
    busl, timel = report.summary_lines(oop, "ringreduce", "mpi")
    assert "at 1M..128M (2 sizes of the 1M..256M target range)" in busl
    assert "at 8 (1 sizes of the 8..64K target range)" in timel
    (launch,) = report.summary_lines(oop, "ringreduce", "launch")
    assert "target <= 1.3x" in launch


def test_mpi_views_never_mix_up_two_buffers():
    """The MPI row keeps NumPy views of its buffers between calls. Two
    buffers whose pointer and length once folded into one equal number got
    one view: on that rank MPI then reduced the old buffer with the old count,
    and its peers waited for it forever."""
    from ringreduce.bench.mpi_backends import Mpi

    class Fake:
        def __init__(self, ptr, n, dtype="float32"):
            self.ptr, self.n, self.dtype = ptr, n, dtype
            self.array = np.zeros(n, dtype=np.float32)

        def data_ptr(self):
            return self.ptr

        def numel(self):
            return self.n

        def numpy(self):
            return self.array

    backend = Mpi.__new__(Mpi)
    backend._views = {}
    # 0x10C0 ^ (32 << 1) == 0x1000 ^ (64 << 1) == 0x1080: one number under the old fold
    a, b = Fake(0x10C0, 32), Fake(0x1000, 64)
    assert a.ptr ^ (a.n << 1) == b.ptr ^ (b.n << 1)
    assert backend._np(a) is a.array
    assert backend._np(b) is b.array
    assert backend._np(a) is a.array
    c = Fake(0x10C0, 32, "int32")  # same memory, another dtype: another view
    assert backend._np(c) is c.array
