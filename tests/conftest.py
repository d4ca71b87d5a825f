"""Shared helpers: run a worker script under mpirun with a hard timeout."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
WORKERS = Path(__file__).resolve().parent / "workers"
MPIRUN = shutil.which("mpirun")

needs_mpi = pytest.mark.skipif(MPIRUN is None, reason="mpirun not found")


def mpi_env(extra: dict | None = None) -> dict:
    env = dict(os.environ)
    env.update({"OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1",
                "OMPI_MCA_rmaps_base_oversubscribe": "1", "PYTHONUNBUFFERED": "1",
                # Keep Open MPI on shared memory: the test machines have no network.
                "OMPI_MCA_btl": "self,vader", "OMPI_MCA_mpi_yield_when_idle": "1",
                # Debian's Open MPI would load the system's older UCX into the
                # process under the same soname as ringreduce's own.
                "OMPI_MCA_pml": "^ucx", "OMPI_MCA_osc": "^ucx"})
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    if extra:
        env.update(extra)
    return env


def run_mpi(np_: int, script: str | Path, *args: str, timeout: float = 240,
            env: dict | None = None, mpirun_args: tuple = (), check: bool = True):
    """Run `script` on np_ ranks; a hang becomes a test failure, not a stall."""
    cmd = [MPIRUN, "-np", str(np_), *mpirun_args, sys.executable, str(script), *map(str, args)]
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                           env=mpi_env(env), cwd=ROOT)
    except subprocess.TimeoutExpired as e:
        out = (e.stdout or b"").decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
        pytest.fail(f"mpirun -np {np_} {script} hung for {timeout}s; output so far:\n{out[-4000:]}")
    if check and p.returncode != 0:
        pytest.fail(f"mpirun -np {np_} {script} {' '.join(map(str, args))} exited "
                    f"{p.returncode}\nstdout:\n{p.stdout[-4000:]}\nstderr:\n{p.stderr[-4000:]}")
    return p


LAUNCH_VARS = ("MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE", "LOCAL_RANK",
               "LOCAL_WORLD_SIZE", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_RANK", "PMI_RANK",
               "PMI_SIZE")


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launcher_free_env(extra: dict | None = None) -> dict:
    """mpi_env(extra) without any launcher's rank variables: a launch made
    from a test must not inherit the ones this process may have."""
    env = mpi_env(extra)
    for k in LAUNCH_VARS:
        env.pop(k, None)
    return env


def run_launched(cmd: list, env: dict, timeout: float) -> str:
    """Run a launch (torchrun, plain processes); a hang or a non-zero exit
    fails the test with the output. Returns stdout."""
    try:
        p = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True,
                           timeout=timeout)
    except subprocess.TimeoutExpired as e:
        out = e.stdout.decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
        pytest.fail(f"{' '.join(cmd)} hung for {timeout}s:\n{out[-4000:]}")
    assert p.returncode == 0, f"{' '.join(cmd)} exited {p.returncode}\n{p.stdout[-3000:]}\n" \
                              f"{p.stderr[-3000:]}"
    return p.stdout


def results(stdout: str) -> list:
    """Lines the workers print as 'RESULT {json}'."""
    return [json.loads(line[7:]) for line in stdout.splitlines() if line.startswith("RESULT ")]
