"""The UCX transport from Python: host collectives under torchrun, under a
plain launch (the environment set by hand) and in one process, a killed
peer, and CPU training under torchrun with no MPI on the way."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import ROOT, WORKERS, results

import ringreduce._C as _C

pytestmark = pytest.mark.skipif(not getattr(_C, "has_ucx", False),
                                reason="built without the UCX transport")
WORKER = WORKERS / "ucx_collectives.py"
TORCHRUN = Path(sys.executable).with_name("torchrun")


def _free_port() -> int:
    """A free port P with P + 1 free too (the store of a plain launch listens there)."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        try:
            with socket.socket() as s:
                s.bind(("127.0.0.1", port + 1))
            return port
        except OSError:
            continue
    raise RuntimeError("no pair of free ports")


def _env(extra: dict | None = None) -> dict:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("OMPI_", "PMIX_", "PMI_"))}  # no MPI launcher around
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.update({"PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"})
    env.update(extra or {})
    return env


def _torchrun(n: int, *args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    if not TORCHRUN.exists():
        pytest.skip("torchrun not found beside the interpreter (torch not installed)")
    cmd = [str(TORCHRUN), "--nproc-per-node", str(n), "--master-port", str(_free_port()), *args]
    return subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True,
                          timeout=timeout)


def _plain(n: int, *args: str, timeout: float = 120) -> list:
    """n processes started by hand, as a job scheduler would."""
    port = str(_free_port())
    procs = [subprocess.Popen([sys.executable, *args], cwd=ROOT, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True,
                              env=_env({"RANK": str(r), "WORLD_SIZE": str(n),
                                        "LOCAL_RANK": str(r), "LOCAL_WORLD_SIZE": str(n),
                                        "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port}))
             for r in range(n)]
    outs = []
    deadline = time.monotonic() + timeout
    for p in procs:
        try:
            out, err = p.communicate(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            pytest.fail(f"a plain launch of {n} processes hung for {timeout} s")
        outs.append((p.returncode, out, err))
    return outs


def _assert_all_passed(res: list, n: int, text: str) -> None:
    assert sorted(r["rank"] for r in res) == list(range(n)), text[-3000:]
    for r in res:
        assert r["size"] == n and r["backend"] == "ucx", r
        assert len(r["checked"]) >= 15 and not r["failures"], r


@pytest.mark.parametrize("n", [2, 4])
def test_collectives_under_torchrun(n):
    p = _torchrun(n, str(WORKER))
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    _assert_all_passed(results(p.stdout), n, p.stdout + p.stderr)


def test_collectives_under_a_plain_launch():
    outs = _plain(3, str(WORKER))
    text = "".join(f"--- rank {r} (exit {rc})\n{o}{e[-2000:]}" for r, (rc, o, e) in enumerate(outs))
    assert all(rc == 0 for rc, _, _ in outs), text[-3000:]
    _assert_all_passed([r for _, o, _ in outs for r in results(o)], 3, text)


def test_one_process_over_ucx():
    p = subprocess.run([sys.executable, str(WORKER)], cwd=ROOT, env=_env(), capture_output=True,
                       text=True, timeout=60)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    _assert_all_passed(results(p.stdout), 1, p.stdout + p.stderr)


def test_killed_peer_raises_within_the_timeout():
    outs = _plain(3, str(WORKER), "kill", timeout=60)
    res = {r["rank"]: r for _, o, _ in outs for r in results(o)}
    text = "".join(o + e for _, o, e in outs)
    assert set(res) == {0, 2}, text[-3000:]
    for r in res.values():
        assert r["error"] in ("CollectiveTimeout", "RingReduceError"), r
        assert r["seconds"] <= 3 + 5, r
        assert r["later_error"] is not None, "the communicator must stay poisoned"


def test_cpu_training_under_torchrun_without_mpi():
    pytest.importorskip("sklearn")
    p = _torchrun(2, "examples/digits_mlp.py", "--mode", "all", "--epochs", "6", timeout=300)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    finals = [line for line in p.stdout.splitlines() if line.startswith("epoch  6")]
    assert len(finals) == 3, p.stdout[-3000:]
    accs = [float(line.split("test acc")[1].split()[0]) for line in finals]
    assert min(accs) > 0.85, finals
    assert "mpi" not in p.stdout.lower().replace("mpirun", ""), "no MPI on the way"
