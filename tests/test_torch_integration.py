"""ringreduce.torch under mpirun on CPU: DDP hooks, the torch.distributed
backend and DistributedOptimizer against a single-process full-batch
reference (tests/torch_worker.py holds the checks), plus the digits example."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("torch.distributed")

ROOT = Path(__file__).resolve().parents[1]
MPIRUN = shutil.which("mpirun")
pytestmark = pytest.mark.skipif(MPIRUN is None, reason="mpirun not found")

TIMEOUT = 150  # seconds per launch; a hang fails the test instead of CI


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _mpirun(nranks: int, args: list, env_extra: dict | None = None) -> str:
    cmd = [MPIRUN, "--oversubscribe", "-np", str(nranks)]
    if os.geteuid() == 0:
        cmd.insert(1, "--allow-run-as-root")
    env = dict(os.environ)
    env.update(env_extra or {})
    for k in env_extra or {}:
        cmd += ["-x", k]
    cmd += [sys.executable, *args]
    try:
        p = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True,
                           timeout=TIMEOUT)
    except subprocess.TimeoutExpired as e:
        out = (e.stdout or b"")
        out = out.decode() if isinstance(out, bytes) else out
        pytest.fail(f"{' '.join(cmd)} did not finish within {TIMEOUT} s (deadlock?)\n{out[-4000:]}")
    out = p.stdout + p.stderr
    assert p.returncode == 0, f"{' '.join(cmd)} exited {p.returncode}\n{out[-6000:]}"
    return out


MODES = ["optimizer", "backend", "hook"]


# One launch per rank count runs every mode (launches dominate the runtime).
# The backend mode initialises torch.distributed without MASTER_ADDR (a
# process-local store) at 2 ranks and with it (env://, a TCPStore) at 3.
@pytest.mark.parametrize("nranks,master", [(2, False), (3, True)], ids=["np2", "np3"])
def test_modes_match_full_batch_reference(nranks: int, master: bool) -> None:
    env = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port())} if master else {}
    out = _mpirun(nranks, ["tests/torch_worker.py", *MODES], env)
    for mode in MODES:
        for r in range(nranks):
            assert f"rank {r}: ALL PASS {mode}" in out, out[-4000:]


def test_digits_example_learns() -> None:
    pytest.importorskip("sklearn")
    out = _mpirun(2, ["examples/digits_mlp.py", "--mode", "all", "--epochs", "6"])
    finals = [line for line in out.splitlines() if line.startswith("epoch  6")]
    assert len(finals) == 3, out[-3000:]
    accs = [float(line.split("test acc")[1].split()[0]) for line in finals]
    assert min(accs) > 0.85, finals
    # The three integrations compute the same averages: same losses to print precision.
    assert len({line.split("test acc")[0] for line in finals}) == 1, finals


def test_import_ringreduce_does_not_import_torch() -> None:
    code = "import sys, ringreduce; assert 'torch' not in sys.modules, 'torch was imported'"
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=60)
