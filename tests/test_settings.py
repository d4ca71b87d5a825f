"""Settings: one list, parsed alike everywhere, and the README's table made from it."""
import math
import re
from pathlib import Path

import pytest

from ringreduce import settings

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_table_is_the_generated_one():
    text = README.read_text()
    m = re.search(r"<!-- settings:begin -->\n(.*?)\n<!-- settings:end -->", text, re.S)
    assert m, "README.md lost its settings markers"
    assert m.group(1).strip() == settings.table_markdown().strip(), \
        "regenerate it: python -m ringreduce.settings"


def test_every_setting_read_in_the_sources_is_listed():
    root = README.parent
    used = set()
    for pattern in ("ringreduce/**/*.py", "csrc/**/*.cc", "csrc/**/*.h", "setup.py"):
        for f in root.glob(pattern):
            used |= set(re.findall(r"RINGREDUCE_[A-Z0-9_]+", f.read_text()))
    used = {u for u in used if not u.startswith("RINGREDUCE_TEST_") and not u.endswith("_")}
    assert used <= set(settings.SETTINGS), sorted(used - set(settings.SETTINGS))


def test_build_switches_are_known(monkeypatch):
    # CI builds with RINGREDUCE_CUDA=1 and runs the tests in that environment.
    for name in ("RINGREDUCE_CUDA", "RINGREDUCE_MPI", "RINGREDUCE_UCX"):
        monkeypatch.setenv(name, "1")
    settings.check_environment()
    monkeypatch.setenv("RINGREDUCE_CUDA", "yes please")
    with pytest.raises(ValueError, match="RINGREDUCE_CUDA"):
        settings.check_environment()


def test_unknown_name_is_an_error_with_a_hint(monkeypatch):
    monkeypatch.setenv("RINGREDUCE_TIMEOUTS", "3")
    with pytest.raises(ValueError, match="did you mean RINGREDUCE_TIMEOUT"):
        settings.check_environment()


def test_test_suite_names_pass_unread(monkeypatch):
    monkeypatch.setenv("RINGREDUCE_TEST_DEADLINE", "whatever")
    settings.check_environment()


@pytest.mark.parametrize("raw,want", [("inf", math.inf), ("none", math.inf), ("2.5", 2.5)])
def test_timeout_values(monkeypatch, raw, want):
    monkeypatch.setenv("RINGREDUCE_TIMEOUT", raw)
    assert settings.get("RINGREDUCE_TIMEOUT") == want


@pytest.mark.parametrize("raw", ["nan", "-1", "soon"])
def test_bad_timeouts_are_value_errors(monkeypatch, raw):
    monkeypatch.setenv("RINGREDUCE_TIMEOUT", raw)
    with pytest.raises(ValueError, match="RINGREDUCE_TIMEOUT"):
        settings.get("RINGREDUCE_TIMEOUT")


@pytest.mark.parametrize("raw,want", [("64K", 65536), ("1M", 1 << 20), ("1MiB", 1 << 20),
                                      ("4096", 4096)])
def test_byte_sizes(monkeypatch, raw, want):
    monkeypatch.setenv("RINGREDUCE_CHUNK_BYTES", raw)
    assert settings.get("RINGREDUCE_CHUNK_BYTES") == want


def test_unknown_algorithm_is_refused(monkeypatch):
    monkeypatch.setenv("RINGREDUCE_ALGO", "bubble_sort")
    with pytest.raises(ValueError, match="RINGREDUCE_ALGO"):
        settings.check_environment()
