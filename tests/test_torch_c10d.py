"""torch.distributed's collective API on the "ringreduce" backend, call by
call, against gloo in the same launch (tests/workers/torch_c10d.py).

One launch per launcher runs every call on both backends: 2 ranks under
mpirun, under torchrun (env://) and as plain processes with a tcp:// or
file:// init_method (no launcher variables). Every call that gloo gets right
must give ringreduce the same result; calls gloo refuses (PREMUL_SUM, some
dtypes, uneven list all_to_all) are checked against their definitions."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from conftest import (MPIRUN, ROOT, WORKERS, free_port, launcher_free_env, run_launched,
                      run_mpi)

pytest.importorskip("torch.distributed")

WORKER = WORKERS / "torch_c10d.py"
TORCHRUN = Path(sys.executable).with_name("torchrun")
NRANKS = 2
TIMEOUT = 120  # seconds per launch

CALLS = [
    "all_reduce_sum", "all_reduce_product", "all_reduce_min", "all_reduce_max", "all_reduce_avg",
    "all_reduce_band_int64", "all_reduce_bor_int64", "all_reduce_bxor_int64",
    "all_reduce_bor_bool", "all_reduce_premul_sum_float", "all_reduce_premul_sum_tensor",
    *[f"all_reduce_sum_{d}" for d in ["float16", "bfloat16", "float64", "int8", "uint8", "int16",
                                     "int32", "int64", "uint16", "uint32", "uint64"]],
    "all_reduce_max_bool", "all_reduce_async", "all_reduce_coalesced", "all_gather_coalesced",
    "broadcast", "all_gather",
    "all_gather_into_tensor", "reduce_scatter", "reduce_scatter_tensor", "reduce", "reduce_max",
    "gather", "scatter", "send_recv", "send_recv_tag", "recv_any_source", "isend_irecv", "batch_isend_irecv", "all_to_all",
    "all_to_all_uneven", "all_to_all_single_even", "all_to_all_single_uneven", "barrier",
    "all_gather_object", "broadcast_object_list", "gather_object", "scatter_object_list",
    "new_group_all_ranks", "new_group_rank0", "new_group_last_rank",
]
LAUNCHERS = ["mpirun", "torchrun", "plain_tcp", "plain_file"]


def _env() -> dict:
    return launcher_free_env()


def _run(cmd: list, env: dict) -> str:
    return run_launched(cmd, env, TIMEOUT)


def _plain(init_method: str) -> str:
    env = _env()
    procs = [subprocess.Popen([sys.executable, str(WORKER), "plain", str(r), str(NRANKS),
                               init_method], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for r in range(NRANKS)]
    outs = []
    for p in procs:
        try:
            outs.append(p.communicate(timeout=TIMEOUT)[0])
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            pytest.fail(f"plain launch with {init_method} hung for {TIMEOUT}s")
    for p, out in zip(procs, outs):
        assert p.returncode == 0, f"plain rank exited {p.returncode}\n{out[-4000:]}"
    return "\n".join(outs)


def _launch(launcher: str) -> list:
    """RESULT lines of every rank."""
    with tempfile.TemporaryDirectory() as out:
        os.environ["TORCH_C10D_OUT"] = out  # mpi_env() copies os.environ
        try:
            log = _start(launcher)
        finally:
            del os.environ["TORCH_C10D_OUT"]
        lines = [line for r in range(NRANKS) if os.path.exists(f"{out}/rank{r}.txt")
                 for line in open(f"{out}/rank{r}.txt").read().splitlines()]
    assert lines, f"the {launcher} launch reported nothing:\n{log[-3000:]}"
    return lines


def _start(launcher: str) -> str:
    if launcher == "mpirun":
        if MPIRUN is None:
            pytest.skip("mpirun not found")
        port = str(free_port())
        return run_mpi(NRANKS, WORKER, "mpirun", timeout=TIMEOUT,
                       env={"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port}).stdout
    if launcher == "torchrun":
        if not TORCHRUN.exists():
            pytest.skip("torchrun not found")
        return _run([str(TORCHRUN), "--nproc-per-node", str(NRANKS), "--master-port",
                     str(free_port()), str(WORKER), "torchrun"], _env())
    if launcher == "plain_tcp":
        return _plain(f"tcp://127.0.0.1:{free_port()}")
    with tempfile.TemporaryDirectory() as d:
        return _plain(f"file://{d}/store")


_cache: dict = {}


@pytest.fixture(scope="module")
def launches():
    def get(launcher: str) -> dict:
        if launcher not in _cache:
            by_call: dict = {}
            for line in _launch(launcher):
                if line.startswith("RESULT {"):
                    e = json.loads(line[len("RESULT "):])
                    by_call.setdefault(e["call"], {})[(e["backend"], e["rank"])] = e
            _cache[launcher] = by_call
        return _cache[launcher]
    return get


@pytest.mark.parametrize("launcher", LAUNCHERS)
def test_worker_reports_every_call(launches, launcher):
    got = launches(launcher)
    assert sorted(got) == sorted(CALLS)
    for name, entries in got.items():
        assert len(entries) == 2 * NRANKS, (name, sorted(entries))


@pytest.mark.parametrize("call", CALLS)
@pytest.mark.parametrize("launcher", LAUNCHERS)
def test_call(launches, launcher, call):
    entries = launches(launcher).get(call)
    assert entries, f"{call}: no result from the {launcher} launch"
    for r in range(NRANKS):
        gloo, ours = entries[("gloo", r)], entries[("ringreduce", r)]
        assert ours["ok"], f"rank {r}: {ours['error']}\n{ours.get('where', '')}"
        if gloo["ok"] and gloo["value"] == gloo["expected"]:
            assert ours["value"] == gloo["value"], f"rank {r}: ringreduce {ours['value']}, " \
                                                   f"gloo {gloo['value']}"
        else:  # gloo refuses this call: check ringreduce against the definition
            assert ours["value"] == ours["expected"], f"rank {r}: {ours['value']} != " \
                                                      f"{ours['expected']} (gloo: {gloo})"


ERRORS = r"""
import datetime, torch, torch.distributed as dist
import ringreduce as rr, ringreduce.torch as rt
dist.init_process_group("ringreduce", store=dist.HashStore(), rank=0, world_size=1,
                        timeout=datetime.timedelta(seconds=20))
pg = dist.group.WORLD
try:
    dist.recv(torch.zeros(1))
except ValueError as e:
    assert "source" in str(e), e
else:
    raise AssertionError("recv from any source did not raise")
pg._comm.abort("test")
try:
    dist.all_reduce(torch.ones(2))
except rt.RingReduceDistError as e:
    assert isinstance(e, dist.DistBackendError) and isinstance(e, dist.DistError), type(e).__mro__
    assert isinstance(e, rr.RingReduceError), type(e).__mro__
    print("OK", type(e).__name__)
else:
    raise AssertionError("all_reduce on an aborted communicator did not raise")
"""


def test_errors_are_dist_errors_and_ringreduce_errors():
    p = subprocess.run([sys.executable, "-c", ERRORS], cwd=ROOT, env=_env(), capture_output=True,
                       text=True, timeout=60)
    assert p.returncode == 0 and "OK RingReduceDistError" in p.stdout, p.stdout + p.stderr
