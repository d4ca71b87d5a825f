"""The registry of benchmarked backends (rows): the built-in ones, and any a
plug-in registers (--plugin), and setting them up on every rank alike.

A plug-in is a Python file or module that calls register() when imported;
the tests register a deliberately corrupting backend this way, so the
production code carries no fault-injection switch.
"""
from __future__ import annotations

import importlib
import importlib.util
import os
from typing import Callable, Dict, List, Optional, Tuple, Type

from . import device_backends, mpi_backends, ringreduce_backends, torch_backends
from .backend import Backend, BackendUnavailable, Context

_CLASSES: Dict[str, Type[Backend]] = {}
for _mod in (ringreduce_backends, device_backends, mpi_backends, torch_backends):
    _CLASSES.update(_mod.CLASSES)

# Listed in this order by --help; the run keeps the order of --backends.
BUILTIN = ("ringreduce", "ringreduce-ring", "ringreduce-noshm", "ringreduce-mpi", "ringreduce-ucx",
           "ringreduce-ucx-noshm", "ringreduce-nccl",
           "ringreduce-ps", "ringreduce-ps-sharded", "nccl", "torch-nccl", "torch-symm-oneshot",
           "torch-symm-twoshot", "mpi", "mpi-tcp", "mpi-naive", "gloo", "launch")
assert set(BUILTIN) == set(_CLASSES), sorted(set(BUILTIN) ^ set(_CLASSES))
HOST_DEFAULT = ("ringreduce", "mpi", "gloo")
DEVICE_DEFAULT = ("ringreduce-nccl", "ringreduce-mpi", "nccl", "torch-nccl")


def names() -> List[str]:
    """Every backend name --backends accepts: the built-in ones, then plug-ins'."""
    return list(BUILTIN) + [n for n in _CLASSES if n not in BUILTIN]


def register(name: str, cls: Type[Backend]) -> None:
    """Make `cls` available as --backends `name` (for plug-ins)."""
    if not isinstance(cls, type) or not issubclass(cls, Backend):
        raise TypeError(f"backend {name!r}: {cls!r} is not a subclass of "
                        f"ringreduce.bench.backend.Backend")
    if name in BUILTIN:
        raise ValueError(f"backend {name!r} is built in; a plug-in must use another name")
    cls.name = name
    _CLASSES[name] = cls


def load_plugin(spec: str) -> None:
    """Import a plug-in: a path to a .py file, or a module name."""
    if spec.endswith(".py") or os.sep in spec:
        path = os.path.abspath(spec)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"--plugin {spec}: no such file")
        modname = "ringreduce_bench_plugin_" + os.path.splitext(os.path.basename(path))[0]
        s = importlib.util.spec_from_file_location(modname, path)
        assert s is not None and s.loader is not None
        mod = importlib.util.module_from_spec(s)
        s.loader.exec_module(mod)
    else:
        importlib.import_module(spec)


def resolve_names(requested: List[str], device: str) -> List[str]:
    """Map requested names onto the ones that apply: on cuda, 'mpi' means the
    naive device route and is reported as 'mpi-naive'; on cpu, 'mpi-naive' is
    plain 'mpi'."""
    out: List[str] = []
    for n in requested:
        if device == "cuda" and n == "mpi":
            n = "mpi-naive"
        elif device == "cpu" and n == "mpi-naive":
            n = "mpi"
        if n not in out:
            out.append(n)
    return out


def forced_row(name: str) -> Optional[Tuple[str, str]]:
    """("ringreduce-ucx", "rabenseifner") for the row "ringreduce-ucx:rabenseifner"
    (a ringreduce row with that algorithm forced), else None."""
    from ..settings import ALGORITHMS

    base, sep, algo = name.partition(":")
    if sep and algo in ALGORITHMS and base in _CLASSES and is_ringreduce(base):
        return base, algo
    return None


def make(name: str, ctx: Context, chunk_bytes: Optional[int] = None) -> Backend:
    forced = forced_row(name)
    if forced is None:
        return _CLASSES[name](ctx, chunk_bytes)
    base, algo = forced
    cls = type(f"Forced_{algo}", (_CLASSES[base],),
               {"name": name, "algo": algo, "what": f"algorithm forced to {algo!r}",
                "forced": lambda self: algo})
    return cls(ctx, chunk_bytes)


def is_ringreduce(name: str) -> bool:
    return name.startswith("ringreduce")


def setup_all(planned: List[Tuple[str, Optional[int], str]], ctx: Context,
              say: Callable[[str], None]) -> Tuple[List[Backend], Dict[str, str]]:
    """Set up each (name, chunk bytes, display name) on every rank. A backend
    that fails anywhere is closed everywhere and reported with its reason;
    the run goes on with the others."""
    active: List[Backend] = []
    skipped: Dict[str, str] = {}
    for name, chunk, shown in planned:
        b = make(name, ctx, chunk)
        b.name = shown
        reason = None
        try:
            b.setup()
        except BackendUnavailable as e:
            reason = str(e)
        except Exception as e:  # report, but keep the other backends
            reason = f"{type(e).__name__}: {e}"
        reasons = ctx.control.allgather(reason)
        bad = [(r, m) for r, m in enumerate(reasons) if m]
        if bad:
            if reason is None:
                b.close()
            r0, msg = bad[0]
            skipped[shown] = msg if len(bad) == len(reasons) else f"rank {r0}: {msg}"
            say(f"# skipping backend {shown}: {skipped[shown]}")
        else:
            active.append(b)
    return active, skipped
