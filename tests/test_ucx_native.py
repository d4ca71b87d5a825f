"""The UCX transport on its own, before the communicator uses it.

Builds tests/native/ucx_transport_selftest (the transport's sources plus a
driver) with g++ against the libucx wheel, then runs its scenarios as plain
processes that exchange worker addresses through files in a temp dir: no
mpirun, no store. Skips when the wheel or g++ is missing.

The build is cached under build/ucx-selftest-<hash of the sources>/, so a rerun
starts at once. Messages above 1 GiB are skipped unless RR_UCX_TEST_HUGE=1
(4 GiB + 15 bytes took 31 s here, nearly all of it filling and checking).
"""
from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NATIVE = ROOT / "tests" / "native"
SOURCES = [NATIVE / "ucx_transport_selftest.cc", NATIVE / "ucx_selftest_errors.cc",
           ROOT / "csrc" / "transport" / "ucx_transport.cc", ROOT / "csrc" / "transport" / "ucx_setup.cc",
           ROOT / "csrc" / "transport" / "ucx_control.cc"]
HEADERS = [NATIVE / "ucx_selftest.h", NATIVE / "ucx_test_util.h",
           ROOT / "csrc" / "transport" / "ucx_transport.h", ROOT / "csrc" / "transport" / "transport.h",
           ROOT / "csrc" / "common" / "fingerprint.h", ROOT / "csrc" / "common" / "errors.h",
           ROOT / "csrc" / "common" / "dtypes.h"]

libucx = pytest.importorskip("libucx", reason="the libucx-cu13 wheel is not installed")
CXX = shutil.which(os.environ.get("CXX", "g++"))
if CXX is None:
    pytest.skip("no C++ compiler", allow_module_level=True)
UCX = Path(libucx.__file__).resolve().parent


@pytest.fixture(scope="module")
def selftest() -> Path:
    flags = ["-std=c++17", "-O1", "-Wall", f"-I{ROOT / 'csrc'}", f"-I{NATIVE}", f"-I{UCX / 'include'}"]
    digest = hashlib.sha256(" ".join(flags).encode())
    for p in SOURCES + HEADERS:
        digest.update(p.read_bytes())
    out = ROOT / "build" / f"ucx-selftest-{digest.hexdigest()[:16]}"
    exe = out / "ucx_transport_selftest"
    if exe.exists():
        return exe
    out.mkdir(parents=True, exist_ok=True)

    # Two translation units (driver, transport), one per core: each parses
    # the heavy headers once, which halves the build on the 2-core CI machine.
    units = {"driver": SOURCES[:2], "transport": SOURCES[2:]}
    for name, srcs in units.items():
        (out / f"{name}.cc").write_text("".join(f'#include "{s}"\n' for s in srcs))

    def compile_one(name: str) -> Path:
        obj = out / f"{name}.o"
        subprocess.run([CXX, *flags, "-c", str(out / f"{name}.cc"), "-o", str(obj)], check=True,
                       capture_output=True, text=True)
        return obj

    try:
        with ThreadPoolExecutor(max_workers=2) as pool:
            objs = list(pool.map(compile_one, units))
        subprocess.run([CXX, *map(str, objs), f"-L{UCX / 'lib'}", "-lucp", "-lucs", "-ldl", "-pthread",
                        f"-Wl,-rpath,{UCX / 'lib'}", "-o", str(exe) + ".tmp"], check=True,
                       capture_output=True, text=True)
    except subprocess.CalledProcessError as e:
        pytest.fail(f"building the UCX self-test failed:\n{e.stderr[-4000:]}")
    os.replace(str(exe) + ".tmp", exe)
    return exe


def clean_env(extra: dict | None = None) -> dict:
    """Our own environment without UCX_* settings, so the defaults are tested."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("UCX_")}
    env.update(extra or {})
    return env


def launch(exe: Path, tmp: Path, scenario: str, n: int, *args: str, env: dict | None = None,
           timeout: float = 45, stopped: int | None = None,
           rank_args: dict | None = None) -> list[tuple[int, str]]:
    """Runs `n` ranks of `scenario`; returns (exit code, output) per rank. A rank
    that stops itself (`stopped`) is killed once the others have ended;
    `rank_args` adds arguments to some ranks only."""
    procs = [subprocess.Popen([str(exe), "--scenario", scenario, "--rank", str(r), "--size", str(n),
                               "--dir", str(tmp), *args, *(rank_args or {}).get(r, [])],
                              stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, env=clean_env(env))
             for r in range(n)]
    outs: list[tuple[int, str] | None] = [None] * n
    deadline = time.monotonic() + timeout
    try:
        for r, p in enumerate(procs):
            if r == stopped:
                continue
            out, _ = p.communicate(timeout=max(1, deadline - time.monotonic()))
            outs[r] = (p.returncode, out)
    except subprocess.TimeoutExpired:
        for p in procs:
            p.kill()
        dump = "\n".join(f"[{r}] {p.communicate()[0][-2000:]}" for r, p in enumerate(procs))
        pytest.fail(f"{scenario} on {n} ranks hung for {timeout}s:\n{dump}")
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGKILL)
    if stopped is not None:
        out, _ = procs[stopped].communicate()
        outs[stopped] = (procs[stopped].returncode, out)
    return outs  # type: ignore[return-value]


def expect_ok(outs, scenario: str, ranks=None):
    for r, (rc, out) in enumerate(outs):
        if ranks is not None and r not in ranks:
            continue
        assert rc == 0 and f"OK {scenario}" in out, f"rank {r} exited {rc}:\n{out[-3000:]}"


def lines(out: str, prefix: str) -> list[str]:
    return [line[len(prefix):].strip() for line in out.splitlines() if line.startswith(prefix)]


def test_basics(selftest, tmp_path):
    (rc, out), = launch(selftest, tmp_path, "basics", 1)
    assert rc == 0 and "OK basics" in out, out
    settings = lines(out, "SETTINGS")[0]
    # One host, nobody told us a network device: shared memory only.
    assert "TLS=self,sm (default)" in settings and "RNDV_SCHEME=get_zcopy" in settings, settings


@pytest.mark.parametrize("n,tls,env", [
    (2, "", None), (3, "", None), (4, "", None),
    (2, "tcp", None),                 # TCP over loopback, chosen through UcxOptions
    (3, "", {"UCX_TLS": "tcp"}),      # ... and through the environment
], ids=["shm-2", "shm-3", "shm-4", "tcp-2", "tcp-env-3"])
def test_sizes(selftest, tmp_path, n, tls, env):
    outs = launch(selftest, tmp_path, "sizes", n, *(["--tls", tls] if tls else []), env=env)
    expect_ok(outs, "sizes")
    if tls or env:
        assert "TLS=tcp" in lines(outs[0][1], "SETTINGS")[0]


def test_unreachable_peer(selftest, tmp_path):
    # Rank 0 speaks TCP only, rank 1 shared memory only: both fail at construction, naming the other.
    outs = launch(selftest, tmp_path, "sizes", 2, rank_args={0: ["--tls", "tcp"]})
    for r, (rc, out) in enumerate(outs):
        assert rc != 0 and f"cannot reach rank {1 - r} (this host)" in out, out


def test_large_message(selftest, tmp_path):
    huge = os.environ.get("RR_UCX_TEST_HUGE") == "1"
    size = (4 << 30) + 15 if huge else (1 << 30) + 1
    outs = launch(selftest, tmp_path, "huge", 2, "--bytes", str(size), timeout=240 if huge else 60)
    expect_ok(outs, "huge")


def test_mismatch(selftest, tmp_path):
    outs = launch(selftest, tmp_path, "mismatch", 2)
    expect_ok(outs, "mismatch")
    got = dict(line.split(": ", 1) for line in lines(outs[0][1], "EXPECTED"))
    # The receiver names both calls, or what differs, and never uses the bytes.
    assert "this rank is in allreduce #5 (float32, sum), the peer in allgather #5" in got["collective"]
    assert "rank 1" in got["collective"] and "not used" in got["collective"]
    assert "the count, root or per-rank sizes differ" in got["count"]
    assert "rank 1 sent 100 bytes, not the 4096 bytes expected" in got["short"]
    assert "sent more than the 5000 bytes" in got["long eager"]
    assert "sent more than the 65536 bytes" in got["long rendezvous"]


def test_notices(selftest, tmp_path):
    outs = launch(selftest, tmp_path, "notice", 3)
    expect_ok(outs, "notice")
    for r in (0, 2):
        assert float(lines(outs[r][1], "NOTICE_AFTER")[0]) < 3


@pytest.mark.parametrize("tls", ["", "tcp"], ids=["shm", "tcp"])
def test_killed_peer(selftest, tmp_path, tls):
    deadline = 5
    t0 = time.monotonic()
    outs = launch(selftest, tmp_path, "kill", 3, "--deadline", str(deadline), "--after", "5",
                  *(["--tls", tls] if tls else []))
    assert outs[1][0] == -signal.SIGKILL
    for r in (0, 2):
        rc, out = outs[r]
        got = lines(out, "EXPECTED")
        assert rc == 0 and got, out
        assert got[0].startswith(("Error", "TimeoutError")), got
        assert float(got[0].split(" after ")[1].split(" s")[0]) < deadline + 5, got
        assert "rank 1" in got[0] or "rank 2" in got[0] or "rank 0" in got[0], got
    assert time.monotonic() - t0 < deadline + 15


def test_stopped_peer(selftest, tmp_path):
    outs = launch(selftest, tmp_path, "stop", 2, "--deadline", "2", "--after", "3", stopped=1)
    rc, out = outs[0]
    got = lines(out, "EXPECTED")
    assert rc == 0 and got and got[0].startswith("TimeoutError"), out
    waited = float(got[0].split(" after ")[1].split(" s")[0])
    assert 1.9 < waited < 4, got
    assert "rank 1 never sent its 1048576 bytes" in got[0], got
    assert float(lines(out, "DESTROYED in")[0].split()[0]) < 3, out


@pytest.mark.parametrize("how", ["kill", "stop"])
@pytest.mark.parametrize("tls", ["", "tcp"], ids=["shm", "tcp"])
def test_teardown_beside_a_dead_peer(selftest, tmp_path, how, tls):
    # Nothing in flight, the peer gone or stopped: the destructor's flush gives up within 2 s.
    outs = launch(selftest, tmp_path, "teardown", 2, "--how", how, *(["--tls", tls] if tls else []),
                  stopped=1 if how == "stop" else None)
    rc, out = outs[0]
    assert rc == 0 and "OK teardown" in out, out
    assert float(lines(out, "DESTROYED in")[0].split()[0]) < 2.5, out


def test_abort(selftest, tmp_path):
    outs = launch(selftest, tmp_path, "abort", 2)
    expect_ok(outs, "abort")
    got = lines(outs[0][1], "EXPECTED")
    assert any("UCX transport was aborted" in g for g in got), got


@pytest.mark.parametrize("tls,net", [("", ""), ("tcp", "lo")], ids=["shm", "tcp-lo"])
def test_listens_only_where_told(selftest, tmp_path, tls, net):
    args = (["--tls", tls] if tls else []) + (["--net", net] if net else [])
    outs = launch(selftest, tmp_path, "security", 2, *args)
    expect_ok(outs, "security")
    for _, out in outs:
        listening = lines(out, "LISTEN")
        if not tls:
            assert listening == [], listening  # shared memory only: no socket at all
        else:
            assert listening, out
            for entry in listening:
                table, addr = entry.split()
                assert table == "/proc/net/tcp" and addr.split(":")[0] == "0100007F", listening
