"""ringreduce-bench for real, under mpirun and alone: the JSON schema of a
2-rank run, rows that cannot run here skipped with their reasons, --graph
without a GPU, #wrong counted on the test plug-in's corrupting backend, the
cost-model fit on the run, dtypes and ops on 3 ranks, and the mpirun line a
run without a launcher prints."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import ringreduce._C as _C
from ringreduce.bench import machine
from ringreduce.bench.__main__ import main as bench_main

ROOT = Path(__file__).resolve().parent.parent
PLUGIN = ROOT / "tests" / "support" / "bench_plugin.py"
MPIRUN = shutil.which("mpirun")
HAS_UCX = bool(getattr(_C, "has_ucx", False))
needs_mpi = pytest.mark.skipif(MPIRUN is None, reason="mpirun not found")


def _env(extra=None):
    env = dict(os.environ)
    env.update({"OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1",
                "OMPI_MCA_btl": "self,vader", "PYTHONUNBUFFERED": "1",
                "OMPI_MCA_mpi_yield_when_idle": "1"})  # oversubscribed test machines
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra or {})
    return env


def _mpirun(nranks, args, tmp_path, timeout=150):
    cmd = ["timeout", "-s", "KILL", str(timeout - 10), MPIRUN, "--allow-run-as-root",
           "--oversubscribe", "-np", str(nranks), sys.executable, "-m", "ringreduce.bench",
           "--no-progress"] + args
    return subprocess.run(cmd, cwd=tmp_path, env=_env(), capture_output=True, text=True,
                          timeout=timeout)


# One 2-rank run serves most tests (each mpirun start costs seconds): rows that
# run here, rows that cannot (skipped with a reason), --graph without a GPU,
# and the test plug-in's deliberately corrupting backend.
ROWS = ["ringreduce", "ringreduce-ring", "ringreduce-ps", "ringreduce-ucx", "ringreduce-nccl",
        "torch-symm-oneshot", "mpi", "mpi-tcp", "gloo", "launch", "test-corrupt"]


@pytest.fixture(scope="module")
def run2(tmp_path_factory):
    if MPIRUN is None:
        pytest.skip("mpirun not found")
    tmp = tmp_path_factory.mktemp("bench")
    p = _mpirun(2, ["-b", "8", "-e", "1K", "-f", "4", "-n", "3", "-w", "1", "--graph",
                    "--plugin", str(PLUGIN), "--backends", ",".join(ROWS),
                    "--json", "r.json", "--plot", "r.png"], tmp)
    return p, tmp


@needs_mpi
def test_json_schema_from_a_real_run(run2):
    p, tmp = run2
    # 1: the corrupting test backend's rows are wrong (and only those, below).
    assert p.returncode == 1, p.stdout[-3000:] + p.stderr[-3000:]
    doc = json.loads((tmp / "out" / "r.json").read_text())  # a bare name lands in out/
    assert {"schema", "machine", "command", "world_size", "results", "skipped", "skipped_rows",
            "sizes", "environment", "options", "backends", "reduce_rate"} <= set(doc)
    assert doc["schema"] == 2 and doc["partial"] is False
    m = doc["machine"]
    assert {"host", "cpu", "cores", "gpus", "driver", "versions"} <= set(m)
    assert isinstance(m["host"], str) and isinstance(m["cores"], int)
    assert isinstance(m["gpus"], list)
    assert {"ringreduce", "torch", "nccl", "mpi", "python"} <= set(m["versions"])
    assert "Open MPI" in m["versions"]["mpi"] or "MPICH" in m["versions"]["mpi"]
    assert "ringreduce.bench" in doc["command"] and "-np 2" in doc["command"]
    assert doc["world_size"] == 2 and doc["sizes"] == [8, 32, 128, 512]
    assert doc["environment"]["OMPI_MCA_btl"] == "self,vader"
    assert doc["options"]["graph"] is True and doc["options"]["graph_iters"] == 20
    keys = {"backend", "graph", "bytes", "count", "dtype", "op", "inplace", "time_us", "algbw",
            "busbw", "wrong", "iters", "algo", "algo_why"}
    rows = doc["results"]
    ran = {"ringreduce", "ringreduce-ring", "ringreduce-ps", "mpi", "gloo", "launch",
           "test-corrupt"} | ({"ringreduce-ucx"} if HAS_UCX else set())
    assert {r["backend"] for r in rows} == ran
    assert len(rows) == 4 * len(ran) * 2
    for r in rows:
        assert keys <= set(r)
        assert r["graph"] is False
        assert isinstance(r["bytes"], int) and r["bytes"] in doc["sizes"]
        assert r["count"] == r["bytes"] // 4 and r["dtype"] == "float32" and r["op"] == "sum"
        assert isinstance(r["inplace"], bool)
        assert r["time_us"] > 0
        assert r["algbw"] == pytest.approx(r["bytes"] / (r["time_us"] * 1e-6) / 1e9)
        if r["backend"] == "launch":   # not an all-reduce: no busbw, nothing to check
            assert r["busbw"] == 0 and r["wrong"] is None and r["algo"] is None
            continue
        assert r["busbw"] == pytest.approx(r["algbw"] * 2 * (2 - 1) / 2)
        assert r["wrong"] == (1 if r["backend"] == "test-corrupt" else 0)
        if r["backend"].startswith("ringreduce"):
            assert r["algo"] and r["algo_why"]
        else:
            assert r["algo"] is None
    assert {r["algo"] for r in rows if r["backend"] == "ringreduce-ring"} == {"ring"}
    # The table was printed, with a comparison and the launch target.
    assert "# backend: ringreduce" in p.stdout and "ringreduce vs mpi" in p.stdout
    assert "ringreduce/launch out-of-place time" in p.stdout and "target <= 1.3x" in p.stdout
    assert (tmp / "out" / "r.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@needs_mpi
def test_unavailable_rows_are_skipped_with_a_reason(run2):
    p, tmp = run2
    doc = json.loads((tmp / "out" / "r.json").read_text())
    sk = doc["skipped"]
    assert "ringreduce-ucx" not in sk or "no UCX transport" in sk["ringreduce-ucx"]
    assert "device buffers only" in sk["ringreduce-nccl"]
    assert "device buffers" in sk["torch-symm-oneshot"]
    assert "--mca btl tcp,self" in sk["mpi-tcp"] and "self,vader" in sk["mpi-tcp"]
    eager = {s["backend"]: s for s in doc["skipped_rows"] if not s["graph"]}
    if "ringreduce-ps" in eager:   # until the core offers the parameter server
        assert "parameter_server" in eager["ringreduce-ps"]["reason"]
        assert eager["ringreduce-ps"]["bytes"] == doc["sizes"]
    for line in ("# skipping backend mpi-tcp:", "# skipping backend ringreduce-nccl:"):
        assert line in p.stdout


@needs_mpi
def test_graph_without_a_gpu_skips_cleanly(run2):
    p, tmp = run2
    doc = json.loads((tmp / "out" / "r.json").read_text())
    graphed = [s for s in doc["skipped_rows"] if s["graph"]]
    assert {s["backend"] for s in graphed} >= {"ringreduce", "mpi", "gloo", "launch"}
    for s in graphed:
        assert "CUDA graph" in s["reason"] and s["bytes"] == doc["sizes"]
    assert not any(r["graph"] for r in doc["results"])


@needs_mpi
def test_fit_on_a_real_run(run2, capsys):
    p, tmp = run2
    assert bench_main(["--fit", str(tmp / "out" / "r.json"), "--backend", "ringreduce"]) == 0
    out = capsys.readouterr().out
    assert "alpha =" in out and "delta = 2*beta + gamma" in out
    assert "4096" in out and "1G" in out and "busiest link" in out


@needs_mpi
def test_wrong_results_are_counted_through_a_test_plugin(run2):
    p, tmp = run2
    assert p.returncode == 1
    rows = json.loads((tmp / "out" / "r.json").read_text())["results"]
    bad = [r for r in rows if r["backend"] == "test-corrupt"]
    assert len(bad) == 8 and all(r["wrong"] == 1 for r in bad)   # 4 sizes x 2 modes
    assert all(r["wrong"] == 0 for r in rows if r["backend"] in ("mpi", "ringreduce"))
    assert "test-corrupt: out of bounds values : 8 FAILED" in p.stdout
    assert "ringreduce: out of bounds values : 0 OK" in p.stdout


@needs_mpi
def test_dtypes_and_ops_check_clean_on_three_ranks(tmp_path):
    """Every backend is correct for integer, half and double dtypes, prod and
    avg included; MPI skips the 16-bit floats with a reason."""
    p = _mpirun(3, ["-b", "4K", "-e", "4K", "-n", "2", "-w", "0",
                    "-d", "int8,bfloat16,float64", "-o", "prod,avg",
                    "--backends", "ringreduce,mpi,gloo", "--json", str(tmp_path / "d.json")],
                tmp_path)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    assert "skipping mpi (eager) for bfloat16 prod from 4K: MPI has no bfloat16 datatype" \
        in p.stdout
    rows = json.loads((tmp_path / "d.json").read_text())["results"]
    # 3 dtypes x 2 ops x 2 modes x 3 backends, less mpi's bfloat16 rows
    assert len(rows) == 3 * 2 * 2 * 3 - 2 * 2
    assert all(r["wrong"] == 0 for r in rows)
    assert {r["dtype"] for r in rows if r["backend"] == "mpi"} == {"int8", "float64"}


def test_a_run_without_launcher_prints_the_mpirun_line(tmp_path):
    p = subprocess.run([sys.executable, "-m", "ringreduce.bench", "-b", "8", "-e", "8", "-n", "1",
                        "-w", "0", "--backends", "launch", "--no-progress"], cwd=tmp_path,
                       env=_env(), capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    assert "not under a launcher" in p.stdout
    if MPIRUN:
        line = next(ln for ln in p.stdout.splitlines() if ln.startswith("#   mpirun"))
        assert "-np 4" in line and "-m ringreduce.bench -b 8 -e 8" in line
        assert ("--allow-run-as-root" in line) == (os.geteuid() == 0)
        assert ("--oversubscribe" in line) == (machine.physical_cores() < 4)
