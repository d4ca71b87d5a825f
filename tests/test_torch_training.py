"""Training proofs for the "ringreduce" torch.distributed backend on CPU ranks
(tests/workers/torch_training.py), each against the same run on gloo in the
same launch: FSDP2 (fp32, bf16 params with fp32 reduce, bf16 params with bf16
reduce), HSDP on a 2x2 DeviceMesh, torch.distributed.checkpoint save/load of
the sharded model, and DDP with find_unused_parameters=True and with
static_graph=True.

One launch per (launcher, world size) runs its proofs on both backends:
2 ranks run everything but HSDP, 4 ranks run FSDP and HSDP (the HSDP result
must also agree with 4-rank FSDP). Both torchrun and mpirun launch them.
For every proof and rank: ringreduce's losses and final full parameters match
gloo's within floating-point tolerance, the full parameters are bitwise
identical across ranks (sha256), training moved them, and the collectives
really went through ringreduce's communicators (and none of them on gloo's run).
"""
from __future__ import annotations

import math
import os
import sys
import tempfile
from pathlib import Path

import pytest

from conftest import (MPIRUN, ROOT, WORKERS, free_port, launcher_free_env, needs_mpi,
                      results, run_launched, run_mpi)

pytest.importorskip("torch.distributed")

WORKER = WORKERS / "torch_training.py"
TORCHRUN = Path(sys.executable).with_name("torchrun")
TIMEOUT = 150  # seconds per launch
STEPS = 4  # the worker's training steps
BACKENDS = ("gloo", "ringreduce")

# Proofs per world size; fsdp_fp32 first: later proofs are compared with it.
PROOFS = {2: ["fsdp_fp32", "fsdp_bf16", "fsdp_bf16_reduce", "dcp", "ddp_unused", "ddp_static"],
          4: ["fsdp_fp32", "hsdp"]}
LAUNCHES = [pytest.param(launcher, n, marks=[needs_mpi] if launcher == "mpirun" else [],
                         id=f"{launcher}-np{n}")
            for n in PROOFS for launcher in ("torchrun", "mpirun")]
CASES = [pytest.param(launcher, n, proof, marks=[needs_mpi] if launcher == "mpirun" else [],
                      id=f"{launcher}-np{n}-{proof}")
         for n in PROOFS for launcher in ("torchrun", "mpirun") for proof in PROOFS[n]]

# Collectives each proof must have run on ringreduce's communicators.
NEEDED_CALLS = {"fsdp_fp32": ("allgather", "reduce_scatter"),
                "fsdp_bf16": ("allgather", "reduce_scatter"),
                "fsdp_bf16_reduce": ("allgather", "reduce_scatter"),
                "dcp": ("allgather", "reduce_scatter"),
                "hsdp": ("allgather", "reduce_scatter", "allreduce"),
                "ddp_unused": ("broadcast", "allreduce"),
                "ddp_static": ("broadcast", "allreduce")}
MESH_DIMS = {"fsdp_fp32": 1, "fsdp_bf16": 1, "fsdp_bf16_reduce": 1, "dcp": 1, "hsdp": 2}

# ringreduce vs gloo. On 2 ranks every correct reduction gives the same bits
# (a + b is one correctly rounded, commutative operation; halving is exact),
# so there ringreduce must match gloo exactly, bf16 runs included. On 4 ranks
# the summation order may differ, so fp32 results agree to rounding: after 4
# SGD steps (no Adam, whose normalisation can amplify a rounding difference
# near a zero gradient) the observed difference is ~6e-8.
PARAM_TOL = {2: 0.0, 4: 1e-5}
LOSS_RTOL = {2: 0.0, 4: 1e-5}
HSDP_TOL = 1e-5  # HSDP vs FSDP on 4 ranks: other groupings of the same sums


def _env(extra: dict) -> dict:
    return launcher_free_env(extra)


def _start(launcher: str, n: int, out: str) -> str:
    proofs = ",".join(PROOFS[n])
    # One intra-op thread per rank: up to 4 ranks share CI's 2 cores.
    extra = {"TORCH_TRAINING_OUT": out, "OMP_NUM_THREADS": "1"}
    if launcher == "mpirun":
        if MPIRUN is None:
            pytest.skip("mpirun not found")
        extra.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()))
        return run_mpi(n, WORKER, "mpirun", proofs, timeout=TIMEOUT, env=extra).stdout
    if not TORCHRUN.exists():
        pytest.skip("torchrun not found")
    cmd = [str(TORCHRUN), "--nproc-per-node", str(n), "--master-port", str(free_port()),
           str(WORKER), "torchrun", proofs]
    return run_launched(cmd, _env(extra), TIMEOUT)


_cache: dict = {}


@pytest.fixture(scope="module")
def launches():
    def get(launcher: str, n: int) -> dict:
        """{(proof, backend, rank): entry} of one launch, run once per module."""
        key = (launcher, n)
        if key not in _cache:
            with tempfile.TemporaryDirectory() as out:
                log = _start(launcher, n, out)
                text = "\n".join(open(f"{out}/rank{r}.txt").read() for r in range(n)
                                 if os.path.exists(f"{out}/rank{r}.txt"))
            got = {(e["proof"], e["backend"], e["rank"]): e for e in results(text)}
            assert got, f"the {launcher} launch of {n} ranks reported nothing:\n{log[-3000:]}"
            _cache[key] = got
        return _cache[key]
    return get


@pytest.mark.parametrize("launcher,n", LAUNCHES)
def test_launch_reports_every_proof(launches, launcher, n):
    got = launches(launcher, n)
    want = {(p, b, r) for p in PROOFS[n] for b in BACKENDS for r in range(n)}
    assert set(got) == want, f"missing {sorted(want - set(got))}, extra {sorted(set(got) - want)}"


def _close(a: float, b: float, rtol: float) -> bool:
    return math.isfinite(a) and math.isfinite(b) and abs(a - b) <= rtol * max(1.0, abs(b))


@pytest.mark.parametrize("launcher,n,proof", CASES)
def test_proof_matches_gloo(launches, launcher, n, proof):
    got = launches(launcher, n)
    ptol, rtol = PARAM_TOL[n], LOSS_RTOL[n]
    steps = STEPS
    for r in range(n):
        gloo, ours = got[(proof, "gloo", r)], got[(proof, "ringreduce", r)]
        assert gloo["ok"], f"rank {r} on gloo: {gloo['error']}\n{gloo['where']}"
        assert ours["ok"], f"rank {r} on ringreduce: {ours['error']}\n{ours['where']}"
        # Loss trajectory.
        assert len(ours["losses"]) == len(gloo["losses"]) == steps, (ours["losses"],
                                                                    gloo["losses"])
        for k, (a, b) in enumerate(zip(ours["losses"], gloo["losses"])):
            assert _close(a, b, rtol), f"rank {r} step {k}: loss {a} on ringreduce, {b} on gloo"
        # Full parameters after the last step.
        assert ours["same_keys"], f"rank {r}: the parameter names differ from gloo's"
        assert ours["max_diff"] <= ptol, f"rank {r}: parameters differ from gloo's by " \
                                         f"{ours['max_diff']} > {ptol}"
        for e in (gloo, ours):
            assert e["sha"] != e["init_sha"], f"rank {r} on {e['backend']}: training left " \
                                              "the parameters at their initial values"
        # The collectives ran on ringreduce, and none on the gloo run.
        assert gloo["calls"] == {}, f"rank {r}: the gloo run called ringreduce: {gloo['calls']}"
        for c in NEEDED_CALLS[proof]:
            assert ours["calls"].get(c, 0) > 0, f"rank {r}: no {c} on ringreduce " \
                                                f"({ours['calls']})"
        if proof in MESH_DIMS:
            for e in (gloo, ours):
                assert e["mesh_backends"] == [e["backend"]] * MESH_DIMS[proof], e["mesh_backends"]
    # Bitwise identical full parameters on every rank.
    for b in BACKENDS:
        shas = {got[(proof, b, r)]["sha"] for r in range(n)}
        assert len(shas) == 1, f"{b}: the ranks' full parameters differ: {shas}"
    # The data differ per rank, so the ranks' losses must too (else the test is vacuous).
    assert len({tuple(got[(proof, "ringreduce", r)]["losses"]) for r in range(n)}) == n


@pytest.mark.parametrize("launcher", [pytest.param("torchrun"),
                                      pytest.param("mpirun", marks=needs_mpi)])
def test_dcp_resume_matches_uninterrupted_run(launches, launcher):
    """Saved after 3 steps, loaded into a fresh sharded model and stepped once
    more: equal to the original, and to 4 uninterrupted FSDP steps."""
    got = launches(launcher, 2)
    for b in BACKENDS:
        for r in range(2):
            e = got[("dcp", b, r)]
            assert e["ok"], e.get("error")
            assert e["loaded_equal"], f"{b} rank {r}: loaded parameters differ from the saved"
            assert e["continue_equal"], f"{b} rank {r}: the loaded model's next step differs " \
                                        "from the original's"
            assert e["vs_fsdp_fp32"] == 0.0, f"{b} rank {r}: resumed run differs from the " \
                                             f"uninterrupted one by {e['vs_fsdp_fp32']}"
            assert e["losses"] == got[("fsdp_fp32", b, r)]["losses"]


@pytest.mark.parametrize("launcher", [pytest.param("torchrun"),
                                      pytest.param("mpirun", marks=needs_mpi)])
def test_hsdp_matches_fsdp(launches, launcher):
    """HSDP on 2x2 averages the same gradients as FSDP over 4 ranks."""
    got = launches(launcher, 4)
    for b in BACKENDS:
        for r in range(4):
            e = got[("hsdp", b, r)]
            assert e["ok"], e.get("error")
            assert e["vs_fsdp_fp32"] <= HSDP_TOL, (b, r, e["vs_fsdp_fp32"])
            for a, f in zip(e["losses"], got[("fsdp_fp32", b, r)]["losses"]):
                assert _close(a, f, HSDP_TOL), (b, r, a, f)


@pytest.mark.parametrize("launcher", [pytest.param("torchrun"),
                                      pytest.param("mpirun", marks=needs_mpi)])
def test_bf16_mixed_precision_takes_effect(launches, launcher):
    """bf16 parameters change the trajectory: the mixed-precision runs are not fp32 ones."""
    got = launches(launcher, 2)
    for r in range(2):
        fp32 = got[("fsdp_fp32", "ringreduce", r)]
        for proof in ("fsdp_bf16", "fsdp_bf16_reduce"):
            e = got[(proof, "ringreduce", r)]
            assert e["ok"] and fp32["ok"], (e.get("error"), fp32.get("error"))
            assert e["losses"] != fp32["losses"] and e["sha"] != fp32["sha"], proof
