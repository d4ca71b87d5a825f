"""Every RINGREDUCE_* setting, parsed and documented once.

Each setting has a name, a default, a unit and one sentence on what it
changes; README.md's settings table is generated from this list
(``python -m ringreduce.settings``) and a test keeps the two equal. Values are
read from the environment when a communicator is created; arguments to
``init()`` win over the environment. An unknown ``RINGREDUCE_*`` name or a
malformed value is a ValueError naming it, never silently ignored.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any, Callable, Dict, Optional

from . import _C

__all__ = ["SETTINGS", "get", "check_environment", "make_options", "table_markdown",
           "ALGORITHMS"]

# Algorithm names the selector knows (csrc/algo/select.cc); RINGREDUCE_ALGO must be one.
ALGORITHMS = ("ring", "gather_fold", "recursive_doubling", "rabenseifner", "recursive_halving",
              "binomial", "direct", "pairwise", "parameter_server", "sharded_ps",
              "shm_one_shot", "shm_two_shot", "ipc_one_shot", "ipc_two_shot", "gpu_ring")


def _bytes(text: str) -> int:
    """'1048576', '1M', '64K', '1G' (powers of two) -> bytes."""
    t = text.strip().upper().removesuffix("B").removesuffix("I")
    scale = 1
    if t and t[-1] in "KMGT":
        scale = 1 << (10 * ("KMGT".index(t[-1]) + 1))
        t = t[:-1]
    value = int(t) * scale
    if value < 0:
        raise ValueError("must be >= 0")
    return value


def _seconds(text: str) -> float:
    t = text.strip().lower()
    if t in ("inf", "infinity", "none"):
        return math.inf  # no timeout
    v = float(t)
    if math.isnan(v) or v < 0:
        raise ValueError("must be a positive number of seconds, or inf")
    return v


def _flag(text: str) -> bool:
    t = text.strip().lower()
    if t in ("1", "true", "yes", "on"):
        return True
    if t in ("0", "false", "no", "off", ""):
        return False
    raise ValueError("must be 0/1, true/false, yes/no or on/off")


def _positive_int(text: str) -> int:
    v = int(text)
    if v < 1:
        raise ValueError("must be >= 1")
    return v


def _choice(*allowed: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        t = text.strip().lower()
        if t not in allowed:
            raise ValueError(f"must be one of {', '.join(allowed)}")
        return t
    return parse


def _algo(text: str) -> str:
    t = text.strip().lower()
    if t in ("", "auto"):
        return ""
    if t not in ALGORITHMS:
        raise ValueError(f"must be auto or one of {', '.join(ALGORITHMS)}")
    return t


def _text(text: str) -> str:
    return text.strip()


@dataclass(frozen=True)
class Setting:
    name: str
    default: Any
    unit: str
    parse: Callable[[str], Any]
    doc: str


SETTINGS: Dict[str, Setting] = {s.name: s for s in [
    Setting("RINGREDUCE_TIMEOUT", 300.0, "seconds", _seconds,
            "How long one collective may take before the communicator aborts and raises "
            "CollectiveTimeout; `inf` for no timeout."),
    Setting("RINGREDUCE_BACKEND", "auto", "name", _choice("auto", "mpi", "ucx", "nccl"),
            "The host transport `init()` uses when its backend argument is None: auto is MPI "
            "under mpirun, UCX under other launchers, none for one process."),
    Setting("RINGREDUCE_FINGERPRINT", True, "flag", _flag,
            "Every message carries its call's fingerprint, so ranks that disagree on a call raise "
            "CollectiveMismatch instead of mixing data; 0 only to measure its cost."),
    Setting("RINGREDUCE_CHECK", False, "flag", _flag,
            "Strict mode: ranks agree on the call's fingerprint in an extra exchange before data "
            "moves, so a mismatch leaves the communicator usable (the in-band fingerprint is "
            "always on and ends the communicator)."),
    Setting("RINGREDUCE_NAN_CHECK", False, "flag", _flag,
            "Refuse NaN/Inf input of reductions, naming the rank (an extra pass and exchange)."),
    Setting("RINGREDUCE_CHUNK_BYTES", 1 << 20, "bytes", _bytes,
            "Pipeline chunk of the ring on host buffers (also per call: chunk_bytes=)."),
    Setting("RINGREDUCE_DEVICE_CHUNK_BYTES", 0, "bytes", _bytes,
            "Pipeline chunk of the ring on device buffers; 0: the engine's measured best."),
    Setting("RINGREDUCE_DEPTH", 2, "exchanges", _positive_int,
            "Exchanges the ring keeps in flight (2: double buffering)."),
    Setting("RINGREDUCE_ALGO", "", "name", _algo,
            "Force this algorithm for the collectives it serves (auto: the selector decides; "
            "`comm.explain()` says what it picks and why)."),
    Setting("RINGREDUCE_SMALL_BYTES", 64 << 10, "bytes", _bytes,
            "Host calls up to this size take latency algorithms (recursive doubling/halving, "
            "binomial trees); 0 turns them off."),
    Setting("RINGREDUCE_MEDIUM_BYTES", 0, "bytes", _bytes,
            "Host all-reduces up to this size take recursive halving + doubling (Rabenseifner) "
            "on a power-of-two world; 0 turns it off."),
    Setting("RINGREDUCE_SHM", True, "flag", _flag,
            "When every rank is on one machine, map one shared-memory segment into all of them "
            "at creation, and run host all-reduces through it (`comm.shared_memory` says why not "
            "when it could not)."),
    Setting("RINGREDUCE_SHM_BYTES", 0, "bytes", _bytes,
            "Host all-reduces up to this size go through shared memory when attached; 0: any "
            "size."),
    Setting("RINGREDUCE_SHM_ONE_SHOT_BYTES", 0, "bytes", _bytes,
            "Of those, up to this size every rank folds all inputs itself (one-shot); 0: "
            "4 KiB / (N-1)."),
    Setting("RINGREDUCE_SHM_ROUND_BYTES", 1 << 20, "bytes", _bytes,
            "Bytes per rank per shared-memory round (larger calls take several rounds); the "
            "segment is about 4 x this x N, and takes a quarter or a sixteenth of it where "
            "/dev/shm cannot hold that."),
    Setting("RINGREDUCE_ONE_SHOT_BYTES", 0, "bytes", _bytes,
            "Device all-reduces up to this size take the IPC one-shot; 0: 1 MiB / (N-1)."),
    Setting("RINGREDUCE_GPU_RING_BYTES", 64 << 20, "bytes", _bytes,
            "Device all-reduces from this size take the GPU ring kernel on more than two GPUs."),
    Setting("RINGREDUCE_DEVICE_FINGERPRINT", True, "flag", _flag,
            "Device calls whose algorithm carries no fingerprint (the ring over NCCL) compare "
            "fingerprints with the ring neighbours over the host transport first."),
    Setting("RINGREDUCE_MPI_DEVICE_PATH", "auto", "name", _choice("auto", "direct", "staged"),
            "How device buffers travel over MPI: direct (CUDA-aware MPI), staged (pinned host "
            "pipeline) or auto (direct when MPI says it is CUDA-aware)."),
    Setting("RINGREDUCE_UCX_DEVICE_PATH", "auto", "name", _choice("auto", "ucx", "staged"),
            "How device buffers travel when the host transport is UCX: ucx (a second UCX "
            "transport with UCX's CUDA transports takes device pointers), staged (pinned host "
            "pipeline over the host UCX) or auto (ucx for ranks that share a GPU, when every "
            "rank's UCX has CUDA support, else staged; NCCL when each rank has its own GPU)."),
    Setting("RINGREDUCE_UCX_TLS", "", "list", _text,
            "UCX transports for the UCX backend (empty: ringreduce's measured default)."),
    Setting("RINGREDUCE_CUDA", "auto", "build", _choice("auto", "0", "1"),
            "Build switch read by setup.py: add the CUDA+NCCL sources when found (auto), require "
            "them (1) or leave them out (0); no effect at run time."),
    Setting("RINGREDUCE_MPI", "auto", "build", _choice("auto", "0", "1"),
            "Build switch read by setup.py: 0 builds without MPI even when mpicc is found; no "
            "effect at run time."),
    Setting("RINGREDUCE_UCX", "auto", "build", _choice("auto", "0", "1"),
            "Build switch read by setup.py: add the UCX transport when found (auto), require it "
            "(1) or leave it out (0); no effect at run time."),
    Setting("RINGREDUCE_UCX_NET_DEVICES", "", "list", _text,
            "Network devices UCX may listen on (empty: the interface of MASTER_ADDR, or "
            "loopback on one host)."),
]}


def get(name: str, override: Any = None) -> Any:
    """The value of setting `name`: `override` when not None, else the
    environment's, else the default. Raises ValueError on a malformed value."""
    s = SETTINGS[name]
    if override is not None:
        return override
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return s.default
    try:
        return s.parse(raw)
    except ValueError as e:
        raise ValueError(f"environment variable {name}={raw!r}: {e}") from None


def check_environment() -> None:
    """Raise ValueError for a RINGREDUCE_* variable that is unknown or malformed
    (RINGREDUCE_TEST_* are the test suite's own and pass unread)."""
    for name in sorted(os.environ):
        # RINGREDUCE_TEST_* belong to the project's test suite, not the library.
        if not name.startswith("RINGREDUCE_") or name.startswith("RINGREDUCE_TEST_"):
            continue
        if name not in SETTINGS:
            import difflib

            close = difflib.get_close_matches(name, SETTINGS, n=1)
            hint = f"; did you mean {close[0]}?" if close else ""
            raise ValueError(f"unknown setting {name}{hint} (known: see README.md, Settings)")
        get(name)


def make_options(timeout: Optional[float] = None, check: Optional[bool] = None,
                 nan_check: Optional[bool] = None,
                 chunk_bytes: Optional[int] = None) -> "_C.Options":
    """A filled _C.Options from the environment and the given overrides."""
    check_environment()
    o = _C.Options()
    t = get("RINGREDUCE_TIMEOUT", timeout)
    if isinstance(t, bool) or not isinstance(t, (int, float)):
        raise ValueError(f"timeout must be a number of seconds or None, got {t!r}")
    t = float(t)
    if math.isnan(t) or t <= 0:
        raise ValueError(f"timeout must be > 0 seconds (math.inf for none), got {t!r}")
    o.timeout = t
    o.fingerprint = get("RINGREDUCE_FINGERPRINT")
    o.check = bool(get("RINGREDUCE_CHECK", check))
    o.nan_check = bool(get("RINGREDUCE_NAN_CHECK", nan_check))
    chunk = get("RINGREDUCE_CHUNK_BYTES", chunk_bytes)
    if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
        raise ValueError(f"chunk_bytes must be an integer >= 1, got {chunk!r}")
    o.chunk_bytes = chunk
    o.device_chunk_bytes = get("RINGREDUCE_DEVICE_CHUNK_BYTES")
    o.depth = get("RINGREDUCE_DEPTH")
    o.device_fingerprint = get("RINGREDUCE_DEVICE_FINGERPRINT")
    p = _C.SelectPolicy()
    p.forced = get("RINGREDUCE_ALGO")
    p.small_bytes = get("RINGREDUCE_SMALL_BYTES")
    p.medium_bytes = get("RINGREDUCE_MEDIUM_BYTES")
    p.one_shot_bytes = get("RINGREDUCE_ONE_SHOT_BYTES")
    p.gpu_ring_bytes = get("RINGREDUCE_GPU_RING_BYTES")
    p.shm_bytes = get("RINGREDUCE_SHM_BYTES")
    p.shm_one_shot_bytes = get("RINGREDUCE_SHM_ONE_SHOT_BYTES")
    o.policy = p
    return o


def _shown(v: Any) -> str:
    if v is True or v is False:
        return "1" if v else "0"
    if v == "":
        return "(empty)"
    if isinstance(v, int) and v >= 1024 and v % 1024 == 0:
        for unit, shift in (("G", 30), ("M", 20), ("K", 10)):
            if v % (1 << shift) == 0:
                return f"{v >> shift}{unit}"
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v)


def table_markdown() -> str:
    """The README's settings table."""
    rows = ["| setting | default | unit | what it changes |", "| --- | --- | --- | --- |"]
    for s in SETTINGS.values():
        rows.append(f"| `{s.name}` | {_shown(s.default)} | {s.unit} | {s.doc} |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(table_markdown())
