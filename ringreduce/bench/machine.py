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


# -- the mpirun line for a run that was not launched ----------------------------------
def physical_cores() -> int:
    """Cores as Open MPI counts slots by default (not hardware threads)."""
    seen = set()
    try:
        phys = core = None
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("physical id"):
                    phys = line.split(":", 1)[1].strip()
                elif line.startswith("core id"):
                    core = line.split(":", 1)[1].strip()
                elif not line.strip():
                    if core is not None:
                        seen.add((phys, core))
                    phys = core = None
        if core is not None:
            seen.add((phys, core))
    except OSError:
        pass
    return len(seen) or (os.cpu_count() or 1)


def mpirun_flavor() -> Optional[str]:
    """'openmpi', 'mpich' (MPICH, Intel MPI: Hydra) or 'unknown'; None without mpirun."""
    exe = shutil.which("mpirun")
    if not exe:
        return None
    try:
        p = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    text = p.stdout + p.stderr
    if "Open MPI" in text or "OpenRTE" in text:
        return "openmpi"
    if "HYDRA" in text or "MPICH" in text or "Intel" in text:
        return "mpich"
    return "unknown"


def own_command(argv: Optional[List[str]] = None) -> List[str]:
    """This process's command, as another launcher would start it."""
    argv = list(sys.argv if argv is None else argv)
    if not argv or os.path.basename(argv[0]) in ("__main__.py", "-m", "-c"):
        return [sys.executable, "-m", "ringreduce.bench"] + argv[1:]
    return argv


def mpirun_line(command: List[str], nranks: int, flavor: Optional[str], is_root: bool,
                cores: int) -> str:
    """The mpirun command that runs `command` on nranks ranks here. Open MPI
    refuses root without --allow-run-as-root and more ranks than cores
    without --oversubscribe; MPICH's Hydra needs neither."""
    words = ["mpirun"]
    if flavor in ("openmpi", "unknown"):
        if is_root:
            words.append("--allow-run-as-root")
        if nranks > cores:
            words.append("--oversubscribe")
    return shlex.join(words + ["-np", str(nranks)] + command)


def launch_hint(nranks: int = 4, argv: Optional[List[str]] = None) -> List[str]:
    """Lines telling a user who ran the benchmark without a launcher how to run it on ranks."""
    flavor = mpirun_flavor()
    cmd = own_command(argv)
    lines = ["# not under a launcher: one process, so nothing crosses between ranks "
             "(useful for per-call overhead only)."]
    if flavor is None:
        lines.append("# mpirun is not on the PATH: install Open MPI (scripts/setup.sh does), "
                     f"or use: torchrun --nproc-per-node {nranks} -m ringreduce.bench "
                     + shlex.join(cmd[3:] if cmd[1:3] == ["-m", "ringreduce.bench"]
                                  else cmd[1:]))
        return lines
    line = mpirun_line(cmd, nranks, flavor, os.geteuid() == 0, physical_cores())
    lines.append(f"# to measure {nranks} ranks on this machine, run:")
    lines.append(f"#   {line}")
    return lines
