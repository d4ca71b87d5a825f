"""Describe the machine, the software versions and the command line of a run."""
from __future__ import annotations

import os
import platform
import shlex
import shutil
import socket
import subprocess
import sys
from typing import Any, Dict, List, Optional

_LAUNCHERS = ("mpirun", "mpiexec", "orterun", "prterun", "srun", "torchrun")


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _nvidia_smi(query: str) -> List[str]:
    exe = shutil.which("nvidia-smi")
    if not exe:
        return []
    try:
        out = subprocess.run([exe, f"--query-gpu={query}", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return []
    return [l.strip() for l in out.stdout.splitlines() if l.strip()] if out.returncode == 0 else []


def gpus() -> List[str]:
    try:
        import torch

        if torch.cuda.is_available():
            return [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    except Exception:
        pass
    return _nvidia_smi("name")


def driver() -> Optional[str]:
    v = _nvidia_smi("driver_version")
    return v[0] if v else None


def _nccl_version() -> Optional[str]:
    try:
        from .. import _C

        v = getattr(_C, "nccl_version", None)
        if v is not None:
            v = v() if callable(v) else v
            return str(v)
    except Exception:
        pass
    try:
        import torch

        if torch.cuda.is_available():
            v = torch.cuda.nccl.version()
            return ".".join(map(str, v)) if isinstance(v, tuple) else str(v)
    except Exception:
        pass
    try:
        from importlib import metadata

        for dist in ("nvidia-nccl-cu13", "nvidia-nccl-cu12", "nvidia-nccl-cu11"):
            try:
                return f"{metadata.version(dist)} ({dist}, installed; not loaded by this run)"
            except metadata.PackageNotFoundError:
                continue
    except Exception:
        pass
    return None


def _mpi_version() -> Optional[str]:
    try:
        from mpi4py import MPI

        return MPI.Get_library_version().replace("\0", "").strip().splitlines()[0].strip()
    except Exception:
        return None


def versions() -> Dict[str, Optional[str]]:
    from .. import __version__

    try:
        import torch

        tv: Optional[str] = torch.__version__
    except Exception:
        tv = None
    return {"ringreduce": __version__, "torch": tv, "nccl": _nccl_version(),
            "mpi": _mpi_version(), "python": platform.python_version()}


def describe() -> Dict[str, Any]:
    """The machine block of the JSON results."""
    return {"host": socket.gethostname(), "cpu": cpu_model(), "cores": os.cpu_count(),
            "gpus": gpus(), "driver": driver(), "versions": versions()}


def _cmdline(pid: int) -> List[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
    except OSError:
        return []


def _ppid(pid: int) -> Optional[int]:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return None


def _is_launcher(argv: List[str]) -> bool:
    words = [os.path.basename(a) for a in argv[:3]]
    return any(w in _LAUNCHERS for w in words) or "torch.distributed.run" in argv[:4]


def command_line(launcher: str, size: int) -> str:
    """The command as launched: the launcher's own command line when an ancestor
    process is the launcher, else this process's arguments prefixed by a note."""
    pid: Optional[int] = os.getpid()
    for _ in range(4):  # mpirun -> (orted) -> python; torchrun -> python
        pid = _ppid(pid) if pid else None
        if not pid or pid <= 1:
            break
        argv = _cmdline(pid)
        if argv and _is_launcher(argv):
            return shlex.join(argv)
    own = shlex.join([sys.executable] + sys.argv)
    if launcher == "mpirun":
        return f"mpirun -np {size} {own}"
    if launcher == "torchrun":
        return f"torchrun --nproc-per-node {size} {own}"
    return own
