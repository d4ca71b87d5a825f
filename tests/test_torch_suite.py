"""A subset of torch's own distributed test suite (tests/torch_suite), on
"ringreduce" and on gloo side by side, 2 spawned CPU ranks: every test of
the subset passes on both. The whole suite, at 2 and 3 ranks, is one command
(docs/torch.md); its counts are in benchmarks/results/torch-suite-cpu.json."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("expecttest")  # torch's test utilities import it

from tests.conftest import launcher_free_env  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
# One or two of each kind: collectives, rooted calls, point-to-point (tags,
# any source), the barrier, subgroups, DDP.
SUBSET = ["test_all_reduce_sum", "test_broadcast", "test_scatter", "test_send_recv_with_tag",
          "test_send_recv_any_source", "test_barrier", "test_get_rank_size_group",
          "test_DistributedDataParallelCPU"]


def test_torch_suite_subset_passes_as_on_gloo(tmp_path):
    out = tmp_path / "suite.json"
    p = subprocess.run([sys.executable, str(ROOT / "tests" / "torch_suite" / "run.py"),
                        "--world-sizes", "2", "--backends", "gloo,ringreduce",
                        "--tests", ",".join(SUBSET), "--json", str(out),
                        "--out-dir", str(tmp_path)],
                       cwd=ROOT, env=launcher_free_env(), capture_output=True, text=True,
                       timeout=900)
    assert out.exists(), p.stdout[-3000:] + p.stderr[-3000:]
    report = json.loads(out.read_text())
    runs = {r["backend"]: r for r in report["runs"]}
    assert runs["gloo"]["counts"]["passed"] == len(SUBSET), runs["gloo"]
    assert runs["ringreduce"]["failed"] == [], (runs["ringreduce"], p.stdout[-3000:])
    assert runs["ringreduce"]["counts"]["passed"] == len(SUBSET), runs["ringreduce"]
    assert report["pass_on_gloo_not_on_ringreduce"] == {"2": []}
