"""The GPU worker's own machinery (inputs, float64 references, tolerances,
digests, job parsing, the second "mpi" communicator), checked on host
tensors where no GPU is: a GPU run then fails only for what the GPU does."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from conftest import needs_mpi, run_mpi  # noqa: E402


@needs_mpi
def test_worker_matrix_on_host_tensors():
    pytest.importorskip("mpi4py")
    pytest.importorskip("torch")
    p = run_mpi(3, HERE / "worker.py", "matrix:auto+mpi/ring", "mpi", "torch-cpu", timeout=300,
                env={"RR_TEST_BIG": "4099"})
    reports = [json.loads(line[7:]) for line in p.stdout.splitlines() if line.startswith("RESULT ")]
    assert len(reports) == 3, p.stdout[-3000:] + p.stderr[-3000:]
    failures = [f for r in reports for f in r["failures"]]
    assert not failures, "\n".join(failures[:20])
    # 6 counts x (8 dtypes x 5 ops) x 2 placements, for each of the two algorithms
    assert reports[0]["checked"]["matrix:auto+mpi/ring"] == 2 * 6 * 8 * 5 * 2, reports[0]



@needs_mpi
def test_worker_colls_on_host_tensors():
    """The colls suite's references and checks (reduce_scatter blocks, allgather
    in place, broadcast roots) on host tensors, through the host algorithms."""
    pytest.importorskip("mpi4py")
    pytest.importorskip("torch")
    jobs = "colls:auto,colls:mpi/ring"
    p = run_mpi(3, HERE / "worker.py", jobs, "mpi", "torch-cpu", timeout=300,
                env={"RR_TEST_BIG": "4099"})
    reports = [json.loads(line[7:]) for line in p.stdout.splitlines() if line.startswith("RESULT ")]
    assert len(reports) == 3, p.stdout[-3000:] + p.stderr[-3000:]
    failures = [f for r in reports for f in r["failures"]]
    assert not failures, "\n".join(failures[:20])
    # counts {0,1,2,3,4,192,4099} x 8 dtypes x (4 reduce_scatters, 3 allgathers, 2 broadcasts)
    for job in jobs.split(","):
        assert reports[0]["checked"][job] == 7 * 8 * 9, reports[0]
