"""The adversarial safety matrix: misuse, disagreement and failure on 2-4 ranks.

Every case must end, on every rank and within the timeout + 5 s, with the
right result or a typed error, and leave the communicator usable, poisoned
(later calls raise at once, with the same error type) or the process with
the right exit code. Nothing wrong may come back silently.

The cases live in matrix_worker.py and run in few launches: one per group
and number of ranks (the mismatch matrix has one per number of ranks under
the selector's own choice, and one that forces each host algorithm in turn
through RINGREDUCE_ALGO). Only the cases pytest selected run (so
`-k <case>` launches just what it needs). When a launch dies (a crash, an
abort), the case that was running is reported as crashed with the output,
and the cases after it run in a new launch.
"""
from __future__ import annotations

import ast
import json
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from conftest import ROOT, needs_mpi, run_mpi

WORKER = ROOT / "tests" / "safety" / "matrix_worker.py"
T = 2.0  # the communicators' timeout, seconds
BOUND = T + 5  # every step of every case ends within this on every rank
TYPED = ("RingReduceError", "CollectiveMismatch", "CollectiveTimeout")

MISMATCH_FIELDS = ("dtype_f32_i32", "dtype_f16_bf16", "op_sum_max", "op_avg_sum",
                   "coll_allreduce_barrier", "coll_allreduce_broadcast", "count", "root",
                   "reduce_scatter_op", "reduce_dtype", "all_to_all_dtype")
# Where the ranks that disagree only send (a broadcast's root, a reduce's
# non-roots), no message carrying the other fingerprint reaches them in the
# call: they may return, right by their own arguments, as long as their
# communicator is poisoned by the next call.
ROOTED_FIELDS = ("root", "reduce_dtype")
# Fields where the ranks' messages differ in size; their large cases run last,
# side by side (in the worker: SIZE_CHANGING).
SIZE_CHANGING = ("coll_allreduce_barrier", "coll_allreduce_broadcast", "count", "root")

GROUPS = {
    "lifetime": ["lifetime_dropped_work_fresh_arrays_intact", "lifetime_kept_work_result_right",
                 "lifetime_64mib_async_del_gc", "lifetime_many_dropped_works",
                 "lifetime_finalize_with_async_inflight",
                 "lifetime_finalize_with_dropped_inflight"],
    "refusal": ["refusal_call_k_unknown_op_one_rank", "refusal_call_k_noncontiguous_one_rank",
                "refusal_call_k_unsupported_dtype_one_rank", "refusal_call_k_readonly_one_rank",
                "refusal_call_k_bad_chunk_bytes_one_rank", "refusal_call_k_unknown_algo_one_rank",
                "refusal_call_k_algo_cannot_serve_one_rank",
                "refusal_call_k_async_unknown_op_one_rank", "refusal_call_k_bad_root_one_rank",
                "refusal_readonly_broadcast_small_then_allreduce",
                "refusal_readonly_broadcast_root_refuses_then_allreduce",
                "refusal_readonly_broadcast_large_then_allreduce",
                "refusal_readonly_broadcast_one_receiver_then_allreduce"],
    "mismatch": [f"mismatch_{f}_small" for f in MISMATCH_FIELDS]
                + [f"mismatch_{f}_large" for f in MISMATCH_FIELDS if f not in SIZE_CHANGING]
                + [f"mismatch_{f}_large" for f in SIZE_CHANGING]
                + ["mismatch_fresh_communicator_after_all"],
    "creation": ["creation_timeout_inf", "creation_timeout_none", "creation_timeout_nan",
                 "creation_timeout_negative", "creation_timeout_string", "creation_timeout_zero",
                 "creation_timeout_bool", "creation_timeout_setter_rejects_nan",
                 "creation_env_timeout_malformed",
                 "creation_absent_rank"],  # last: it leaves MPI's duplication pending
    "sizes": ["sizes_allgather_negative_one_rank", "sizes_allgather_overflowing_one_rank",
              "sizes_allgather_beyond_int64_one_rank", "sizes_allgather_sum_wraps_int64_one_rank",
              "sizes_allgather_lists_disagree_one_rank", "sizes_allgather_lists_disagree_fewer",
              "sizes_allgather_exchanged_counts_differ",
              "sizes_reduce_scatter_out_too_small_one_rank",
              "sizes_reduce_scatter_out_too_large_some_ranks",
              "sizes_reduce_scatter_out_wrong_dtype_one_rank",
              "sizes_reduce_scatter_input_counts_differ",
              "sizes_allgather_lists_disagree_fewer_large"],
    "timeout": ["timeout_sleeping_rank_allreduce", "timeout_sleeping_rank_barrier",
                "timeout_sleeping_rank_broadcast", "timeout_sleeping_rank_async_wait"],
    "readonly": ["readonly_bytes_allreduce", "readonly_memoryview_of_bytes_allreduce",
                 "readonly_numpy_allreduce", "readonly_numpy_allreduce_module_level",
                 "readonly_numpy_async_allreduce", "readonly_numpy_broadcast",
                 "readonly_bytes_broadcast", "readonly_out_reduce_scatter",
                 "readonly_out_allgather", "readonly_input_with_writable_out_is_fine",
                 "readonly_bytes_allgather_input_is_fine"],
    "signal": ["signal_sigint_blocking_allreduce", "signal_sigint_blocking_allreduce_small",
               "signal_sigint_barrier", "signal_sigint_work_wait"],
    "fork": ["fork_child_allreduce_clear_error", "fork_child_barrier_clear_error",
             "fork_child_async_allreduce_clear_error", "fork_child_exit_handlers_harmless"],
    "finalize_race": ["finalize_race_blocking_allreduce", "finalize_race_allreduce_moving_data",
                      "finalize_race_work_wait", "finalize_race_barrier",
                      "finalize_race_every_rank_finalizes",
                      "finalize_race_concurrent_finalize_calls"],
    "autograd": ["autograd_inplace_bumps_version_blocking", "autograd_inplace_bumps_version_async",
                 "autograd_broadcast_bumps_version", "autograd_saved_tensor_backward_raises",
                 "autograd_leaf_requiring_grad_refused_in_place",
                 "autograd_leaf_requiring_grad_with_out_is_fine",
                 "autograd_leaf_refused_on_one_rank_only",
                 "autograd_mismatch_float16_bfloat16_torch_small",
                 "autograd_mismatch_float16_bfloat16_torch_large"],
}
RANKS = {"lifetime": (2, 3), "refusal": (2, 3, 4), "creation": (2, 3), "sizes": (2, 3),
         "timeout": (2, 3, 4), "readonly": (2, 3), "signal": (2,), "fork": (2,),
         "finalize_race": (2, 3), "autograd": (2,)}
# RINGREDUCE_ALGO for the mismatch matrix: the selector's own choice on 2, 3
# and 4 ranks (one launch each), then each host algorithm forced on 4 ranks (a
# power of two, which some need), all in one launch: the worker makes each
# case's communicator under its algorithm's setting.
HOST_ALGOS = ("ring", "gather_fold", "recursive_doubling", "rabenseifner", "recursive_halving",
              "binomial", "direct", "pairwise", "parameter_server", "sharded_ps")
FORCED_NP = 4
MISMATCH_LAUNCHES = [("auto", n) for n in (2, 3, 4)] + [(a, FORCED_NP) for a in HOST_ALGOS]


# -- launching ---------------------------------------------------------------------------------
@dataclass
class Launch:
    results: dict = field(default_factory=dict)  # case -> {rank: report}
    crashed: dict = field(default_factory=dict)  # case -> why
    runs: list = field(default_factory=list)  # (returncode, stdout, stderr) per mpirun
    ended: list = field(default_factory=list)  # per mpirun: did every rank get to the end


def _reports(d: Path) -> list:
    out = []
    for f in sorted(d.glob("rank*.jsonl")):
        for line in f.read_text().splitlines():
            if line.startswith("RESULT "):
                try:
                    out.append(json.loads(line[7:]))
                except json.JSONDecodeError:
                    pass  # the last line of a rank that died while writing it
    return out


def _run(group: str, np_: int, cases: list, algo: str = "") -> Launch:
    """Run `cases` of `group`; after a launch dies, go on with the cases after
    the one it died in (and the ones that ran alongside it)."""
    launch, todo = Launch(), list(cases)
    while todo and len(launch.runs) < 12:
        with tempfile.TemporaryDirectory() as d:
            p = run_mpi(np_, WORKER, group, T, ",".join(todo), timeout=200, check=False,
                        env={"RR_MATRIX_DIR": d, "RINGREDUCE_ALGO": ""})
            reports = _reports(Path(d))
        launch.runs.append((p.returncode, p.stdout, p.stderr))
        by_case: dict = {}
        for rep in reports:
            by_case.setdefault(rep["case"], {})[rep["rank"]] = rep
        launch.ended.append(len(by_case.get("_end", {})) == np_)
        complete = [c for c in todo if len(by_case.get(c, {})) == np_]
        for c in complete:
            launch.results[c] = by_case[c]
        if len(by_case.get("_end", {})) == np_:
            launch.results["_end"] = by_case["_end"]
            break
        first = next((c for c in todo if c not in complete), None)
        if first is None:
            break
        # Cases that ran side by side share their fate: which one of them
        # broke the process cannot be told apart.
        together = next((rep["cases"] for rep in reports
                         if rep["case"] == "_batch" and first in rep["cases"]), [first])
        died_in = [c for c in together if c not in complete]
        how = "RINGREDUCE_ALGO set per case" if algo == "forced" else "auto"
        why = (f"mpirun -np {np_} {group} ({how}) died with exit "
               f"code {p.returncode} while {died_in} ran; reports of the ranks that got that "
               f"far: {json.dumps(by_case.get(first, {}))[:1500]}\nstderr:\n{p.stderr[-2500:]}")
        for c in died_in:
            launch.crashed[c] = why
        todo = [c for c in todo[todo.index(first) + 1:] if c not in died_in]
    return launch


class Matrix:
    """Launches on demand, each once, with only the cases pytest selected."""

    def __init__(self, items):
        self.items, self.launches = items, {}

    def selected(self, group: str, np_: int, algo: str) -> list:
        """The worker's names of the selected cases of one launch, in its order."""
        want = set()
        for item in self.items:
            cs = getattr(item, "callspec", None)
            if cs is None or item.module.__name__ != __name__:
                continue
            p = cs.params
            if p.get("np_") != np_ or p.get("case") not in GROUPS[group]:
                continue
            a = p.get("algo", "")
            if algo == "forced" and a not in ("", "auto"):
                want.add(f"{p['case']}@{a}")
            elif a == algo:
                want.add(p["case"])
        if algo == "forced":
            # Consecutive large cases of one algorithm run side by side.
            small = [c for c in GROUPS[group] if not c.endswith("_large")]
            large = [c for c in GROUPS[group] if c.endswith("_large")]
            order = ([f"{c}@{a}" for c in small for a in HOST_ALGOS]
                     + [f"{c}@{a}" for a in HOST_ALGOS for c in large
                        if c[9:-6] not in SIZE_CHANGING]
                     + [f"{c}@{a}" for a in HOST_ALGOS for c in large
                        if c[9:-6] in SIZE_CHANGING])
            return [c for c in order if c in want] or order
        return [c for c in GROUPS[group] if c in want] or list(GROUPS[group])

    def launch(self, group: str, np_: int, algo: str = "") -> Launch:
        key = (group, np_, algo)
        if key not in self.launches:
            self.launches[key] = _run(group, np_, self.selected(group, np_, algo), algo)
        return self.launches[key]

    def case(self, group: str, case: str, np_: int, algo: str = "") -> dict:
        """{rank: report} of a case that ran to its end on every rank."""
        if algo not in ("", "auto"):
            launch, case = self.launch(group, np_, "forced"), f"{case}@{algo}"
        else:
            launch = self.launch(group, np_, algo)
        if case in launch.crashed:
            pytest.fail(f"{case} crashed the launch: {launch.crashed[case]}")
        res = launch.results.get(case)
        if res is None:
            rc, out, err = launch.runs[-1]
            pytest.fail(f"{case} did not report on every rank (exit code {rc})\n"
                        f"{out[-2000:]}\n{err[-2000:]}")
        for r, rep in sorted(res.items()):
            assert "crash" not in rep, f"rank {r}: {rep['crash']}"
            assert not rep.get("problems"), f"rank {r}: {rep['problems']}"
        skipped = {rep.get("skipped") for rep in res.values()}
        if skipped != {None}:
            assert len(skipped) == 1, f"ranks disagree on whether the case applies: {skipped}"
            pytest.skip(skipped.pop())
        _bounded(res)
        return res


@pytest.fixture(scope="module")
def matrix(request):
    return Matrix(request.session.items)


# -- checks ------------------------------------------------------------------------------------
def _bounded(res: dict) -> None:
    """Every timed step ended within the timeout + 5 s."""
    for r, rep in res.items():
        for k, v in rep.items():
            if not k.endswith("seconds") or k in ("case_seconds", "child_seconds"):
                continue  # those include the case's own sleeps
            for x in v if isinstance(v, list) else [v]:
                if isinstance(x, (int, float)):
                    assert x <= BOUND, f"rank {r}: {k} = {x} s > {BOUND} s\n{rep}"


def _show(res: dict) -> str:
    return "\n".join(f"rank {r}: {json.dumps(rep)[:900]}" for r, rep in sorted(res.items()))


def _typed(err) -> bool:
    return err in TYPED


def _after(res: dict, same_type: bool = True, mixed_ok: bool = False) -> None:
    """Usable everywhere, or poisoned everywhere with a typed error (the one
    the case raised, where it raised one). mixed_ok: some ranks may still be
    usable (their last call right) while a notice is on its way to them."""
    states = {r: rep["after"] for r, rep in res.items()}
    for r, s in states.items():
        assert s == "usable" or (s.startswith("poisoned:") and s[9:] in TYPED), \
            f"rank {r} after the case: {s}\n{_show(res)}"
    usable = {r for r, s in states.items() if s == "usable"}
    assert mixed_ok or not usable or len(usable) == len(states), \
        f"usable on ranks {sorted(usable)} only: {states}\n{_show(res)}"
    if same_type:
        for r, rep in res.items():
            if _typed(rep.get("error")) and states[r] != "usable":
                assert states[r] == "poisoned:" + rep["error"], \
                    f"rank {r} raised {rep['error']} but later calls raise {states[r][9:]}"


def _right_or_typed(rep: dict, key: str = "error", right: str = "right") -> bool:
    return (rep.get(key) is None and rep.get(right) is True) or _typed(rep.get(key))


def _cases(group):
    return [pytest.param(c, n, id=f"{c}-np{n}") for c in GROUPS[group] for n in RANKS[group]]


# -- lifetime ----------------------------------------------------------------------------------
@needs_mpi
@pytest.mark.parametrize("case,np_", _cases("lifetime"))
def test_lifetime(matrix, case, np_):
    res = matrix.case("lifetime", case, np_)
    if case.startswith("lifetime_finalize_"):
        for r, rep in res.items():
            # finalize() waits for the work, or ends it with a typed error
            assert rep["fin_error"] is None or _typed(rep["fin_error"]), _show(res)
            if "wait_error" in rep:
                assert _right_or_typed(rep, "wait_error", "wait_right"), _show(res)
            assert rep["post_error"] == "RingReduceError" and "finalized" in rep["post_message"], \
                _show(res)
        return
    for r, rep in res.items():
        assert rep["error"] is None, _show(res)
        assert rep["after"] == "usable", _show(res)


# -- desync / refusal --------------------------------------------------------------------------
@needs_mpi
@pytest.mark.parametrize("case,np_", _cases("refusal"))
def test_refusal(matrix, case, np_):
    res = matrix.case("refusal", case, np_)
    if case.startswith("refusal_readonly_broadcast"):
        for r, rep in res.items():
            if rep["role"] == "refuses":
                assert rep["bcast_error"] == "ValueError", _show(res)
            else:
                assert rep["bcast_error"] is None or _typed(rep["bcast_error"]), _show(res)
            # the all-reduce after: the right sum or a typed error, never the broadcast's data
            assert not rep["has_broadcast_data"], f"rank {r} got the broadcast's data\n{_show(res)}"
            assert _right_or_typed(rep), f"rank {r}\n{_show(res)}"
        _after(res, same_type=True)
        return
    for r, rep in res.items():
        k = rep["k"]
        for i, step in enumerate(rep["steps"]):
            if i < k:
                assert step["error"] is None and step["right"], f"rank {r} call {i}\n{_show(res)}"
            elif i == k and rep["role"] == "refuses":
                assert step["error"] in ("ValueError", "TypeError"), f"rank {r}\n{_show(res)}"
            else:
                # a call a peer refused, or one after it: right, or a typed error
                assert _right_or_typed(step), f"rank {r} call {i}: {step}\n{_show(res)}"
    _after(res)


# -- mismatch, default settings ----------------------------------------------------------------
@needs_mpi
@pytest.mark.parametrize("case", GROUPS["mismatch"])
@pytest.mark.parametrize("algo,np_", [pytest.param(a, n, id=f"{a}-np{n}")
                                      for a, n in MISMATCH_LAUNCHES])
def test_mismatch(matrix, case, algo, np_):
    res = matrix.case("mismatch", case, np_, algo)
    if case == "mismatch_fresh_communicator_after_all":
        assert all(rep["after"] == "usable" for rep in res.values()), _show(res)
        return
    field_name = case[len("mismatch_"):].rsplit("_", 1)[0]
    for r, rep in res.items():
        if _typed(rep["error"]):
            continue
        assert rep["error"] is None, \
            f"rank {r} raised {rep['error']}, not a typed error\n{_show(res)}"
        assert rep["right"], f"rank {r} returned a WRONG result silently\n{_show(res)}"
        assert field_name in ROOTED_FIELDS, \
            f"rank {r} returned instead of raising CollectiveMismatch\n{_show(res)}"
        # A rank that only sent (or only received from the true root) may end
        # its next call too, with the right sum, before the notice of a rank
        # that caught the mismatch reaches it; some rank must have caught it.
        assert rep["after"].startswith("poisoned:") or (
            rep["after"] == "usable" and any(q["after"].startswith("poisoned:") or
                                             _typed(q["error"]) for q in res.values())), \
            f"rank {r} returned and no rank knows of the mismatch\n{_show(res)}"
    _after(res, mixed_ok=field_name in ROOTED_FIELDS)


# -- creation ----------------------------------------------------------------------------------
@needs_mpi
@pytest.mark.parametrize("case,np_", _cases("creation"))
def test_creation(matrix, case, np_):
    res = matrix.case("creation", case, np_)
    errors = {rep.get("error") for rep in res.values()}
    messages = {rep.get("message") for rep in res.values()}
    if case == "creation_timeout_inf":
        assert errors == {None} and all(rep["timeout"] == "inf" and rep["use_right"]
                                        for rep in res.values()), _show(res)
    elif case == "creation_timeout_none":
        # None: the RINGREDUCE_TIMEOUT setting (300 s by default), as init() documents
        assert errors == {None} and all(rep["timeout"] == "300.0" and rep["use_right"]
                                        for rep in res.values()), _show(res)
    elif case == "creation_timeout_setter_rejects_nan":
        assert errors == {"ValueError"} and len(messages) == 1, _show(res)
        assert all(rep["timeout_after"] == T for rep in res.values()), _show(res)
    elif case == "creation_absent_rank":
        for r, rep in res.items():
            if rep["role"] == "creates":
                assert _typed(rep["error"]), _show(res)
                assert 3 - 0.1 <= rep["seconds"] <= 3 + 5, _show(res)
        launch = matrix.launch("creation", np_)
        rc, _, err = launch.runs[-1]
        assert rc == 0, f"exit code {rc}\n{err[-2000:]}"
    else:
        # nan, -1, "abc", 0, True, a malformed RINGREDUCE_TIMEOUT: ValueError alike on every rank
        assert errors == {"ValueError"} and len(messages) == 1, _show(res)
        if case == "creation_env_timeout_malformed":
            assert "RINGREDUCE_TIMEOUT" in messages.pop()
    assert all(rep["after"] == "usable" for rep in res.values()), _show(res)


# -- sizes -------------------------------------------------------------------------------------
@needs_mpi
@pytest.mark.parametrize("case,np_", _cases("sizes"))
def test_sizes(matrix, case, np_):
    res = matrix.case("sizes", case, np_)
    launch = matrix.launch("sizes", np_)
    assert not any("MPI_ABORT" in err for _, _, err in launch.runs), "a rank called MPI_Abort"
    if case == "sizes_allgather_exchanged_counts_differ":
        assert all(rep["error"] is None and rep["right"] for rep in res.values()), _show(res)
        assert all(rep["after"] == "usable" for rep in res.values()), _show(res)
        return
    for r, rep in res.items():
        if case.startswith("sizes_allgather_lists_disagree"):
            # the ranks whose lists are right may finish; the one that is wrong must not
            ok = _right_or_typed(rep) if rep["role"] == "others" else _typed(rep["error"])
        elif case == "sizes_reduce_scatter_input_counts_differ":
            ok = _typed(rep["error"])
        elif rep["role"] == "deviant":  # refused at the boundary, with the value that was wrong
            ok = rep["error"] in ("ValueError", "TypeError")
        else:
            ok = _typed(rep["error"])
        assert ok, f"rank {r}\n{_show(res)}"
    assert any(rep["error"] is not None for rep in res.values()), _show(res)
    _after(res)


# -- timeouts ----------------------------------------------------------------------------------
@needs_mpi
@pytest.mark.parametrize("case,np_", _cases("timeout"))
def test_timeout(matrix, case, np_):
    res = matrix.case("timeout", case, np_)
    for r, rep in res.items():
        if rep["role"] == "waits":
            assert rep["error"] == "CollectiveTimeout", _show(res)
            assert T - 0.1 <= rep["seconds"] <= T + 5, _show(res)
        else:
            assert _typed(rep["error"]), _show(res)  # the communicator ended while it slept
    _after(res)


@needs_mpi
@pytest.mark.parametrize("np_", [pytest.param(n, id=f"timeout_then_finalize_exits_zero-np{n}")
                                 for n in RANKS["timeout"]])
def test_timeout_then_finalize_exits_zero(matrix, np_):
    """After catching CollectiveTimeout the script finalizes and mpirun exits 0."""
    launch = matrix.launch("timeout", np_)
    assert not launch.crashed and len(launch.runs) == 1, launch.crashed
    rc, _, err = launch.runs[0]
    assert rc == 0, f"mpirun exited {rc}\n{err[-2000:]}"


@needs_mpi
@pytest.mark.parametrize("group,np_", [pytest.param(g, n, id=f"{g}_exits_cleanly-np{n}")
                                       for g in RANKS for n in RANKS[g] if g != "timeout"])
def test_exits_cleanly(matrix, group, np_):
    """A launch whose ranks all got to the end (every failure caught, every
    communicator finalized) exits 0: no abort, no hang in MPI_Finalize."""
    if group == "autograd":
        pytest.importorskip("torch")
    launch = matrix.launch(group, np_)
    for (rc, _, err), ended in zip(launch.runs, launch.ended):
        if ended:
            assert rc == 0, f"mpirun exited {rc} after every rank finished\n{err[-2000:]}"
    if not any(launch.ended):
        assert launch.crashed, f"no launch of {group} got to its end\n{launch.runs[-1][2][-2000:]}"
        pytest.skip(f"every launch of {group} died in a case, which reports the crash: "
                    f"{list(launch.crashed)}")
    for r, rep in launch.results["_end"].items():
        assert not rep["problems"], f"rank {r}: {rep['problems']}"


# -- exit codes --------------------------------------------------------------------------------
@needs_mpi
@pytest.mark.parametrize("mode,np_,expected", [
    pytest.param("mismatch_finalize", 3, 0, id="exit_zero_after_caught_mismatch_and_finalize"),
    pytest.param("mismatch", 2, 0, id="exit_zero_after_caught_mismatch_without_finalize"),
    pytest.param("timeout", 2, 0, id="exit_zero_after_caught_timeout_without_finalize"),
    pytest.param("mismatch_status3", 2, 3, id="exit_status_of_the_script_after_caught_mismatch"),
])
def test_exit_code(mode, np_, expected):
    with tempfile.TemporaryDirectory() as d:
        p = run_mpi(np_, WORKER, "exit", T, mode, timeout=90, check=False,
                    env={"RR_MATRIX_DIR": d})
        reports = _reports(Path(d))
    assert {rep["rank"] for rep in reports} == set(range(np_)), f"{p.stdout}\n{p.stderr[-2000:]}"
    want = "CollectiveMismatch" if mode.startswith("mismatch") else "CollectiveTimeout"
    for rep in reports:
        assert rep["error"] == want, rep
    assert p.returncode == expected, f"mpirun exited {p.returncode}\n{p.stderr[-2000:]}"


# -- read-only memory --------------------------------------------------------------------------
@needs_mpi
@pytest.mark.parametrize("case,np_", _cases("readonly"))
def test_readonly(matrix, case, np_):
    res = matrix.case("readonly", case, np_)
    errors = {rep["error"] for rep in res.values()}
    if case.endswith("_is_fine"):
        assert errors == {None}, _show(res)
    else:
        messages = {rep["message"] for rep in res.values()}
        assert errors == {"ValueError"} and len(messages) == 1, _show(res)
        assert "read-only" in messages.pop()
    assert all(rep["after"] == "usable" for rep in res.values()), _show(res)


# -- signals -----------------------------------------------------------------------------------
@needs_mpi
@pytest.mark.parametrize("case,np_", _cases("signal"))
def test_signal(matrix, case, np_):
    res = matrix.case("signal", case, np_)
    for r, rep in res.items():
        if rep["role"] == "victim":
            assert rep["error"] == "KeyboardInterrupt", _show(res)
            # about 1 s (the late rank comes 2.6 s after the signal), not when it
            # lets the call finish, nor after a further wait of its own
            assert rep["after_signal"] <= 1.5, \
                f"KeyboardInterrupt came {rep['after_signal']} s after SIGINT\n{_show(res)}"
        else:
            assert _typed(rep["error"]), _show(res)
    _after(res, same_type=False)


# -- fork --------------------------------------------------------------------------------------
@needs_mpi
@pytest.mark.parametrize("case,np_", _cases("fork"))
def test_fork(matrix, case, np_):
    res = matrix.case("fork", case, np_)
    for r, rep in res.items():
        child = rep["child"]
        assert rep["child_status"] == 0, f"rank {r}: the child exited with status " \
                                         f"{rep['child_status']}\n{_show(res)}"
        if case == "fork_child_exit_handlers_harmless":
            assert child.get("error") is None, _show(res)
            assert rep["child_seconds"] < 5, f"the child took {rep['child_seconds']} s to exit"
        else:
            assert child.get("error") == "RingReduceError" and "fork" in child["message"], \
                _show(res)
        assert rep["parent_error"] is None and rep["parent_right"], _show(res)
        assert rep["after"] == "usable", _show(res)


# -- finalize race -----------------------------------------------------------------------------
@needs_mpi
@pytest.mark.parametrize("case,np_", _cases("finalize_race"))
def test_finalize_race(matrix, case, np_):
    res = matrix.case("finalize_race", case, np_)
    for r, rep in res.items():
        assert _right_or_typed(rep), f"rank {r}\n{_show(res)}"
        if rep["error"] == "RingReduceError" and rep["role"] == "finalizes":
            assert "finaliz" in rep["message"], _show(res)
        assert all(e is None for e in rep.get("thread_finalize_errors", [])), _show(res)
    _after(res, same_type=False)


# -- autograd ----------------------------------------------------------------------------------
@needs_mpi
@pytest.mark.parametrize("case,np_", _cases("autograd"))
def test_autograd(matrix, case, np_):
    pytest.importorskip("torch")
    res = matrix.case("autograd", case, np_)
    for r, rep in res.items():
        if "bumped" in rep and "backward_error" not in rep:
            assert rep["bumped"] and rep["right"], _show(res)
        if case == "autograd_saved_tensor_backward_raises":
            assert rep["reduce_error"] is None and rep["bumped"], _show(res)
            assert rep["backward_error"] == "RuntimeError" and \
                "inplace" in rep["backward_message"].replace("in-place", "inplace"), _show(res)
        if case == "autograd_leaf_requiring_grad_refused_in_place":
            assert rep["error"] == "RuntimeError" and rep["untouched"], _show(res)
        if case == "autograd_leaf_requiring_grad_with_out_is_fine":
            assert rep["error"] is None and rep["right"], _show(res)
        if case == "autograd_leaf_refused_on_one_rank_only":
            assert (rep["error"] == "RuntimeError") if rep["role"] == "deviant" \
                else _typed(rep["error"]), _show(res)
        if case.startswith("autograd_mismatch"):
            assert _typed(rep["error"]), _show(res)
    if case in ("autograd_leaf_requiring_grad_refused_in_place",):
        assert len({rep["message"] for rep in res.values()}) == 1
    _after(res)


def test_every_case_is_listed():
    """The lists here name exactly the worker's cases."""
    src = WORKER.read_text()
    decorated = {node.name for node in ast.parse(src).body
                 if isinstance(node, ast.FunctionDef) and node.decorator_list}
    listed = {c for cs in GROUPS.values() for c in cs}
    by_class = {c for c in listed if c.startswith(("mismatch_", "timeout_", "finalize_race_"))}
    assert decorated - {"mismatch_fresh_communicator_after_all"} == listed - by_class
    for c in by_class - {f"mismatch_{f}_{s}" for f in MISMATCH_FIELDS for s in ("small", "large")}:
        assert f'"{c}"' in src or f"def {c}" in src, c
    assert set(MISMATCH_FIELDS) == set(re.findall(r'^    "(\w+)": \(_mm_', src, re.M))
