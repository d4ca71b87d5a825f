"""ringreduce-bench: argument parsing, bandwidth formulas, the checker, the
cost-model fit, and real runs under mpirun (JSON schema, fault injection)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ringreduce.bench import cli, fit, harness
from ringreduce.bench.__main__ import main as bench_main

ROOT = Path(__file__).resolve().parent.parent
MPIRUN = shutil.which("mpirun")
needs_mpi = pytest.mark.skipif(MPIRUN is None, reason="mpirun not found")


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
    (["-f", "1"], "step factor must be > 1"),
    (["-n", "0"], "expected an integer >= 1"),
    (["--chunk-bytes", "64K,oops"], "bad size 'oops'"),
])
def test_cli_rejects(argv, msg, capsys):
    with pytest.raises(SystemExit):
        cli.parse_args(argv)
    assert msg in capsys.readouterr().err


def test_cli_defaults_and_lists():
    a = cli.parse_args(["-b", "8", "-e", "1G", "-d", "float32,bfloat16", "-o", "sum,max",
                        "--backends", "ringreduce,gloo", "--chunk-bytes", "256K"])
    assert (a.minbytes, a.maxbytes, a.stepfactor) == (8, 1 << 30, 2.0)
    assert a.datatype == ["float32", "bfloat16"] and a.op == ["sum", "max"]
    assert a.backends == ["ringreduce", "gloo"] and a.chunk_bytes == [256 << 10]
    assert a.check == 1 and a.iters == 20 and a.warmup_iters == 5
    assert cli.parse_args(["--chunk-bytes", "64K,1M"]).chunk_bytes == [64 << 10, 1 << 20]
    d = cli.parse_args([])
    assert d.datatype == ["float32"] and d.op == ["sum"] and d.backends is None


def test_sizes():
    assert cli.sizes(8, 1024, 2) == [8, 16, 32, 64, 128, 256, 512, 1024]
    assert cli.sizes(8, 1000, 4) == [8, 32, 128, 512]
    assert cli.sizes(1 << 20, 1 << 20, 2) == [1 << 20]


# -- bandwidth formulas ------------------------------------------------------------------
def test_algbw_busbw():
    assert harness.algbw(10 ** 9, 1.0) == pytest.approx(1.0)
    assert harness.algbw(1 << 20, 100e-6) == pytest.approx(10.48576)
    assert harness.busbw(1.0, 4) == pytest.approx(1.5)      # 2*3/4
    assert harness.busbw(2.0, 2) == pytest.approx(2.0)      # 2*1/2
    assert harness.busbw(3.0, 8) == pytest.approx(5.25)     # 2*7/8
    assert harness.busbw(5.0, 1) == 0.0


# -- inputs, expected results and the checker ----------------------------------------------
@pytest.mark.parametrize("dtype", list(harness.ITEMSIZE))
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
        assert harness.count_wrong(acc, torch.from_numpy(exp), rtol) == 0
    assert np.abs(exp).max() > 0  # the check compares something


def _periodic(count, table):
    import torch

    t = torch.empty(count, dtype=torch.float32)
    harness.fill_periodic(t, torch.from_numpy(table).float())
    return t


def test_fill_periodic():
    table = np.arange(harness.PERIOD, dtype=np.float64)
    for n in (0, 5, harness.PERIOD, 3 * harness.PERIOD + 17):
        t = _periodic(n, table)
        assert np.array_equal(t.numpy(), np.resize(table, n).astype(np.float32))


def test_count_wrong_counts_exactly_the_wrong_elements():
    import torch

    exp, _ = harness.expected_table(3, 4, "float32", "sum")
    n = harness.CHECK_BLOCK * 2 + 12345  # several check blocks, a ragged last one
    good = _periodic(n, exp)
    e = torch.from_numpy(exp)
    assert harness.count_wrong(good, e) == 0
    bad = good.clone()
    idx = [0, 1, harness.PERIOD, harness.CHECK_BLOCK - 1, harness.CHECK_BLOCK, n - 1]
    for i in idx:
        bad[i] += 1
    bad[777] = float("nan")
    assert harness.count_wrong(bad, e) == len(idx) + 1
    # A segment landing one element off is wrong almost everywhere it lands.
    shifted = good.clone()
    shifted[1000:3000] = good[1001:3001]
    assert harness.count_wrong(shifted, e) >= 1900
    harness.corrupt_one(good)
    assert harness.count_wrong(good, e) == 1


def test_count_wrong_with_tolerance():
    import torch

    e = torch.tensor([3.0, -1.5, 100.0], dtype=torch.float64)
    got = torch.tensor([3.0, -1.5, 100.0 * (1 + 2e-3)], dtype=torch.float32)
    assert harness.count_wrong(got, e, rtol=2 ** -7) == 0
    assert harness.count_wrong(got, e, rtol=2 ** -10) == 1
    assert harness.count_wrong(got, e) == 1


def test_budget_plan():
    p = harness.Plan(warmup=5, iters=100, budget=0.5, min_iters=3, check=True, seed=1,
                     corrupt=None)
    assert p.counts(0.001) == (4, 100)   # cheap: capped by -n
    assert p.counts(0.05) == (1, 10)     # 0.5 s / 0.05 s
    assert p.counts(2.0) == (0, 3)       # expensive: the minimum
    q = harness.Plan(5, 20, 0.0, 3, True, 1, None)
    assert q.counts(10.0) == (4, 20)     # no budget: -w and -n as given


# -- cost model -------------------------------------------------------------------------------
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


def test_fit_needs_points():
    with pytest.raises(ValueError, match="at least 2"):
        fit.fit_points([fit.Point(4, 8, 1e-5)])


# -- real runs under mpirun ---------------------------------------------------------------------
def _mpirun(nranks, args, tmp_path, extra_env=None, timeout=150):
    env = dict(os.environ)
    env.update({"OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1",
                "OMPI_MCA_btl": "self,vader", "PYTHONUNBUFFERED": "1"})
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra_env or {})
    cmd = ["timeout", "-s", "KILL", str(timeout - 10), MPIRUN, "--allow-run-as-root",
           "--oversubscribe", "-np", str(nranks), sys.executable, "-m", "ringreduce.bench",
           "--no-progress"] + args
    return subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="module")
def run2(tmp_path_factory):
    if MPIRUN is None:
        pytest.skip("mpirun not found")
    tmp = tmp_path_factory.mktemp("bench")
    p = _mpirun(2, ["-b", "8", "-e", "1K", "-f", "4", "-n", "3", "-w", "1",
                    "--backends", "ringreduce,mpi,gloo", "--json", str(tmp / "r.json"),
                    "--plot", str(tmp / "r.png")], tmp)
    return p, tmp


@needs_mpi
def test_json_schema_from_a_real_run(run2):
    p, tmp = run2
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    doc = json.loads((tmp / "r.json").read_text())
    assert {"machine", "command", "world_size", "results"} <= set(doc)
    m = doc["machine"]
    assert {"host", "cpu", "cores", "gpus", "driver", "versions"} <= set(m)
    assert isinstance(m["host"], str) and isinstance(m["cores"], int)
    assert isinstance(m["gpus"], list)
    assert {"ringreduce", "torch", "nccl", "mpi", "python"} <= set(m["versions"])
    assert "Open MPI" in m["versions"]["mpi"] or "MPICH" in m["versions"]["mpi"]
    assert "ringreduce.bench" in doc["command"] and "-np 2" in doc["command"]
    assert doc["world_size"] == 2
    keys = {"backend", "bytes", "count", "dtype", "op", "inplace", "time_us", "algbw", "busbw",
            "wrong"}
    rows = doc["results"]
    sizes = [8, 32, 128, 512]
    assert len(rows) == len(sizes) * 3 * 2
    for r in rows:
        assert keys <= set(r)
        assert r["backend"] in ("ringreduce", "mpi", "gloo")
        assert isinstance(r["bytes"], int) and r["bytes"] in sizes
        assert r["count"] == r["bytes"] // 4 and r["dtype"] == "float32" and r["op"] == "sum"
        assert isinstance(r["inplace"], bool)
        assert r["time_us"] > 0
        assert r["algbw"] == pytest.approx(r["bytes"] / (r["time_us"] * 1e-6) / 1e9)
        assert r["busbw"] == pytest.approx(r["algbw"] * 2 * (2 - 1) / 2)
        assert r["wrong"] == 0
    # The table was printed, with a comparison.
    assert "# backend: ringreduce" in p.stdout and "ringreduce vs mpi" in p.stdout
    assert (tmp / "r.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@needs_mpi
def test_fit_on_a_real_run(run2, capsys):
    p, tmp = run2
    assert p.returncode == 0
    assert bench_main(["--fit", str(tmp / "r.json")]) == 0
    out = capsys.readouterr().out
    assert "alpha =" in out and "delta = 2*beta + gamma" in out
    assert "4096" in out and "1G" in out


@needs_mpi
def test_fault_injection_is_counted(tmp_path):
    p = _mpirun(2, ["-b", "64", "-e", "256", "-f", "4", "-n", "2", "-w", "0",
                    "--backends", "ringreduce,mpi", "--json", str(tmp_path / "f.json")],
                tmp_path, {harness.CORRUPT_ENV: "ringreduce"})
    assert p.returncode == 1, p.stdout[-3000:] + p.stderr[-3000:]
    rows = json.loads((tmp_path / "f.json").read_text())["results"]
    ours = [r for r in rows if r["backend"] == "ringreduce"]
    assert len(ours) == 4 and all(r["wrong"] == 1 for r in ours)
    assert all(r["wrong"] == 0 for r in rows if r["backend"] == "mpi")
    assert "FAILED" in p.stdout


@needs_mpi
def test_dtypes_and_ops_check_clean_on_three_ranks(tmp_path):
    """Every backend is correct for integer, half and double dtypes, prod and
    avg included; MPI skips the 16-bit floats with a reason."""
    p = _mpirun(3, ["-b", "8", "-e", "4K", "-f", "512", "-n", "2", "-w", "0",
                    "-d", "int8,bfloat16,float64", "-o", "prod,avg",
                    "--backends", "ringreduce,mpi,gloo", "--json", str(tmp_path / "d.json")],
                tmp_path)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    assert "skipping mpi for bfloat16 prod: MPI has no bfloat16 datatype" in p.stdout
    rows = json.loads((tmp_path / "d.json").read_text())["results"]
    # 2 sizes x 3 dtypes x 2 ops x 2 modes x 3 backends, less mpi's bfloat16 rows
    assert len(rows) == 2 * 3 * 2 * 2 * 3 - 2 * 2 * 2
    assert all(r["wrong"] == 0 for r in rows)
    assert {r["dtype"] for r in rows if r["backend"] == "mpi"} == {"int8", "float64"}
