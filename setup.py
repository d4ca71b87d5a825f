"""Builds ringreduce._C.

Switches (environment variables):
  MPICC=path            the MPI compiler wrapper to query (default: mpicc on PATH)
  RINGREDUCE_MPI=0      build without MPI even when mpicc is found
  RINGREDUCE_CUDA=auto  add the CUDA+NCCL sources when nvcc and nccl.h are found (default)
  RINGREDUCE_CUDA=1     require them (the build fails without them)
  RINGREDUCE_CUDA=0     never build them
  NCCL_HOME=dir         where include/nccl.h and lib/libnccl.so* live
  RINGREDUCE_UCX=auto   add the UCX transport when UCX is found (default; the libucx-cu13 wheel, UCX_HOME, /usr)
  RINGREDUCE_UCX=1      require it (the build fails without UCX)
  RINGREDUCE_UCX=0      never build it
  UCX_HOME=dir          where include/ucp/api/ucp.h and lib/libucp.so* live
  CUDA_ARCHS="90"       compute capabilities to build SASS for (PTX of the highest is added)
"""
import os
import shlex
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from pybind11.setup_helpers import Pybind11Extension
from setuptools import setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).resolve().parent
CSRC = ROOT / "csrc"

CORE_SOURCES = [
    "csrc/bindings.cc",
    "csrc/ring/schedule.cc",
    "csrc/ring/ring_allreduce.cc",
    "csrc/algo/select.cc",
    "csrc/algo/ring.cc",
    "csrc/algo/host_algorithms.cc",
    "csrc/algo/recursive_doubling.cc",
    "csrc/algo/halving.cc",
    "csrc/algo/binomial.cc",
    "csrc/algo/push_fold.cc",
    "csrc/algo/direct.cc",
    "csrc/algo/pairwise.cc",
    "csrc/algo/parameter_server.cc",
    "csrc/algo/shm.cc",
    "csrc/shm/shm_world.cc",
    "csrc/reduce/reduce_cpu.cc",
    "csrc/reduce/reduce_bindings.cc",
    "csrc/transport/loopback_transport.cc",
    "csrc/comm/communicator.cc",
    "csrc/comm/finalize.cc",
    "csrc/comm/setup.cc",
    "csrc/comm/engines.cc",
    "csrc/comm/identity.cc",
    "csrc/comm/inflight.cc",
    "csrc/comm/p2p.cc",
    "csrc/comm/verdicts.cc",
    "csrc/comm/watchdog.cc",
    "csrc/comm/factory.cc",
    "csrc/comm/preflight.cc",
    "csrc/comm/validate.cc",
    "csrc/comm/work.cc",
]
MPI_SOURCES = ["csrc/transport/mpi_transport.cc"]
CUDA_CXX_SOURCES = [
    "csrc/bindings_cuda.cc",
    "csrc/transport/nccl_transport.cc",
    "csrc/transport/staged_device_transport.cc",
    "csrc/comm/cuda_engine.cc",
    "csrc/algo/ipc_algorithms.cc",
    "csrc/ipc/ipc_bindings.cc",
    "csrc/reduce/workspace_cuda.cc",
    "csrc/ipc/ipc_abort.cc",
]
CUDA_CU_SOURCES = ["csrc/reduce/reduce_cuda.cu", "csrc/ipc/ipc_allreduce.cu",
                   "csrc/ipc/ipc_ring.cu"]
UCX_SOURCES = ["csrc/transport/ucx_transport.cc", "csrc/transport/ucx_setup.cc",
               "csrc/transport/ucx_control.cc"]


def log(msg):
    print(f"ringreduce setup: {msg}", file=sys.stderr)


def mpi_flags():
    """Compile and link flags from the MPI wrapper, or None without MPI."""
    if os.environ.get("RINGREDUCE_MPI", "auto") == "0":
        return None
    mpicc = os.environ.get("MPICC") or shutil.which("mpicc")
    if not mpicc:
        log("no mpicc found: building without the MPI transport")
        return None

    def ask(*args):
        try:
            return subprocess.check_output([mpicc, *args], text=True, stderr=subprocess.DEVNULL).strip()
        except (OSError, subprocess.CalledProcessError):
            return None

    compile_, link = ask("--showme:compile"), ask("--showme:link")  # Open MPI
    if compile_ is None or link is None:
        shown = ask("-show")  # MPICH and derivatives: "cc -I... -L... -lmpi"
        if shown is None:
            log(f"{mpicc} answered neither --showme nor -show: building without MPI")
            return None
        words = shlex.split(shown)[1:]
        compile_ = " ".join(w for w in words if w.startswith(("-I", "-D")))
        link = " ".join(w for w in words if w.startswith(("-L", "-l", "-Wl")))
    log(f"MPI from {mpicc}")
    return shlex.split(compile_), shlex.split(link)


def find_nccl():
    """Return (include_dir, lib_dir) for NCCL, or None."""
    candidates = []
    if os.environ.get("NCCL_HOME"):
        home = Path(os.environ["NCCL_HOME"])
        candidates.append((home / "include", home / "lib"))
    try:
        import nvidia.nccl  # the nvidia-nccl-cu13 wheel

        for base in nvidia.nccl.__path__:
            candidates.append((Path(base) / "include", Path(base) / "lib"))
    except ImportError:
        pass
    candidates += [(Path("/usr/include"), Path("/usr/lib/x86_64-linux-gnu")),
                   (Path("/usr/local/cuda/include"), Path("/usr/local/cuda/lib64"))]
    for inc, lib in candidates:
        if (inc / "nccl.h").exists() and any(lib.glob("libnccl.so*")):
            return inc, lib
    return None


def find_ucx():
    """Return (include_dir, lib_dir) for UCX, or None. The libucx wheel first
    (what scripts/setup.sh installs), so the module and its rpath agree."""
    candidates = []
    if os.environ.get("UCX_HOME"):
        home = Path(os.environ["UCX_HOME"])
        candidates.append((home / "include", home / "lib"))
    try:
        import libucx  # the libucx-cu13 wheel: include/, lib/ and bin/ucx_info

        base = Path(libucx.__file__).resolve().parent
        candidates.append((base / "include", base / "lib"))
    except ImportError:
        pass
    candidates += [(Path("/usr/include"), Path("/usr/lib/x86_64-linux-gnu")),
                   (Path("/usr/local/include"), Path("/usr/local/lib"))]
    for inc, lib in candidates:
        if (inc / "ucp" / "api" / "ucp.h").exists() and any(lib.glob("libucp.so*")):
            return inc, lib
    return None


def ucx_config():
    mode = os.environ.get("RINGREDUCE_UCX", "auto")
    if mode == "0":
        return None
    found = find_ucx()
    if not found:
        if mode == "1":
            sys.exit("ringreduce setup: RINGREDUCE_UCX=1 but no UCX (ucp/api/ucp.h, libucp.so) was found;"
                     " pip install libucx-cu13, or set UCX_HOME")
        log("no UCX found: building without the UCX transport")
        return None
    log(f"UCX from {found[0].parent}")
    return {"inc": found[0], "lib": found[1]}


def find_cuda_home(nvcc):
    """The toolkit root: CUDA_HOME, else where nvcc really lives (it may be a
    wrapper script elsewhere on PATH), else /usr/local/cuda."""
    candidates = [os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH")]
    if nvcc:
        candidates.append(Path(nvcc).resolve().parent.parent)
        try:  # ask nvcc itself: its dryrun names the toolkit's real top directory
            out = subprocess.run([nvcc, "--dryrun", "--version"], capture_output=True, text=True).stderr
            for line in out.splitlines():
                if "TOP=" in line:
                    candidates.append(line.split("TOP=", 1)[1].strip())
        except OSError:
            pass
    candidates.append("/usr/local/cuda")
    for c in candidates:
        if c and (Path(c) / "include" / "cuda_runtime.h").exists():
            return Path(c)
    return None


def cuda_config():
    mode = os.environ.get("RINGREDUCE_CUDA", "auto")
    if mode == "0":
        return None
    nvcc = shutil.which("nvcc") or (
        "/usr/local/cuda/bin/nvcc" if Path("/usr/local/cuda/bin/nvcc").exists() else None)
    home = find_cuda_home(nvcc) if nvcc else None
    nccl = find_nccl()
    if not nvcc or not home or not nccl:
        why = "nvcc" if not nvcc else "the CUDA toolkit (cuda_runtime.h)" if not home else "nccl.h"
        if mode == "1":
            sys.exit(f"ringreduce setup: RINGREDUCE_CUDA=1 but no {why} was found")
        log(f"no {why} found: building without CUDA")
        return None
    log(f"CUDA from {home}, NCCL from {nccl[0].parent}")
    return {"nvcc": nvcc, "home": home, "nccl_inc": nccl[0], "nccl_lib": nccl[1]}


MPI = mpi_flags()
CUDA = cuda_config()
UCX = ucx_config()

sources = list(CORE_SOURCES)
define_macros = []
extra_compile = ["-O3", "-fvisibility=hidden", "-Wall", "-Wno-unused-function"]
extra_link = []
include_dirs = [str(CSRC)]
library_dirs = []
libraries = []
if MPI:
    sources += MPI_SOURCES
    define_macros += [("RR_HAVE_MPI", "1"), ("OMPI_SKIP_MPICXX", "1"), ("MPICH_SKIP_MPICXX", "1")]
    extra_compile += MPI[0]
    extra_link += MPI[1]
if CUDA:
    sources += CUDA_CXX_SOURCES
    define_macros.append(("RR_HAVE_CUDA", "1"))
    include_dirs += [str(CUDA["home"] / "include"), str(CUDA["nccl_inc"])]
    cuda_lib = CUDA["home"] / "lib64"
    if not cuda_lib.exists():
        cuda_lib = CUDA["home"] / "lib"
    library_dirs += [str(cuda_lib), str(CUDA["nccl_lib"])]
    # cudart is linked statically so the module imports on machines without a
    # CUDA runtime installed; NCCL is found again at run time via the rpath.
    libraries += ["cudart_static", "dl", "rt"]
    # NVIDIA's wheel ships only libnccl.so.2, without the unversioned link.
    has_dev_link = (CUDA["nccl_lib"] / "libnccl.so").exists()
    extra_link += ["-lnccl" if has_dev_link else "-l:libnccl.so.2",
                   f"-Wl,-rpath,{CUDA['nccl_lib']}"]
if UCX:
    sources += UCX_SOURCES
    define_macros.append(("RR_HAVE_UCX", "1"))
    include_dirs.append(str(UCX["inc"]))
    # The wheel's libraries are found again at run time through the rpath (the
    # wheel's own loader, libucx.load_library(), is not needed then).
    extra_link += [f"-L{UCX['lib']}", "-lucp", "-lucs", "-ldl", f"-Wl,-rpath,{UCX['lib']}"]


class BuildExt(build_ext):
    """Compiles .cu files with nvcc, and C++ files in parallel."""

    def build_extension(self, ext):
        if CUDA:
            ext.extra_objects = list(ext.extra_objects or []) + self._nvcc(ext)
        super().build_extension(ext)

    def _nvcc(self, ext):
        archs = os.environ.get("CUDA_ARCHS", "90").split()
        gencode = []
        for a in archs:
            gencode += ["-gencode", f"arch=compute_{a},code=sm_{a}"]
        gencode += ["-gencode", f"arch=compute_{archs[-1]},code=compute_{archs[-1]}"]
        objs, todo = [], []
        tmp = Path(self.build_temp)
        tmp.mkdir(parents=True, exist_ok=True)
        newest_header = max(p.stat().st_mtime for ext in ("*.h", "*.cuh") for p in CSRC.rglob(ext))
        for src in CUDA_CU_SOURCES:
            obj = tmp / (Path(src).stem + ".o")
            cmd = [CUDA["nvcc"], "-c", str(ROOT / src), "-o", str(obj), "-O3", "-std=c++17",
                   "-Xcompiler", "-fPIC,-fvisibility=hidden", f"-I{CSRC}",
                   f"-I{CUDA['nccl_inc']}", "-DRR_HAVE_CUDA=1", *gencode]
            src_m = (ROOT / src).stat().st_mtime
            if not obj.exists() or obj.stat().st_mtime < max(src_m, newest_header):
                todo.append(cmd)
            objs.append(str(obj))
        # The .cu files are independent and each takes minutes: in parallel.
        def run(cmd):
            log(" ".join(cmd))
            subprocess.check_call(cmd)

        with ThreadPoolExecutor(max_workers=max(1, min(len(todo), os.cpu_count() or 1))) as pool:
            list(pool.map(run, todo))
        return objs


# Compile the C++ sources two at a time (the CI machine has 2 cores).
def _parallel_compile(self, sources, output_dir=None, macros=None, include_dirs=None, debug=0,
                      extra_preargs=None, extra_postargs=None, depends=None):
    macros, objects, extra_postargs, pp_opts, build = self._setup_compile(
        output_dir, macros, include_dirs, sources, depends, extra_postargs)
    cc_args = self._get_cc_args(pp_opts, debug, extra_preargs)

    def one(obj):
        src, ext = build[obj]
        self._compile(obj, src, ext, cc_args, extra_postargs, pp_opts)

    with ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2)) as pool:
        list(pool.map(one, objects))
    return objects


import distutils.ccompiler  # noqa: E402  (setuptools ships it)

distutils.ccompiler.CCompiler.compile = _parallel_compile

ext = Pybind11Extension(
    "ringreduce._C",
    sources=sources,
    include_dirs=include_dirs,
    define_macros=define_macros,
    extra_compile_args=extra_compile,
    extra_link_args=extra_link,
    library_dirs=library_dirs,
    libraries=libraries,
    cxx_std=17,
)

setup(ext_modules=[ext], cmdclass={"build_ext": BuildExt})
