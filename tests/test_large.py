"""Counts above 2^31 elements on the host path (about 2.2 GB per rank)."""
import pytest

from conftest import WORKERS, needs_mpi, results, run_mpi


@needs_mpi
@pytest.mark.parametrize("chunk", [1 << 20, 1 << 32], ids=["1MiB-chunks", "split-messages"])
def test_more_than_2_31_int8_elements(chunk):
    out = results(run_mpi(2, WORKERS / "large.py", chunk, timeout=600).stdout)
    assert out and out[0]["count"] > 2 ** 31
    assert out[0]["ok"] == [True, True]
