// pybind11 glue for the device engines: argument conversion and GIL release.
#include "bindings_cuda.h"

#include <cuda_runtime.h>
#include <nccl.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>

#include "comm/communicator.h"
#include "comm/cuda_engine.h"
#include "common/cuda_check.h"
#include "common/errors.h"
#ifdef RR_HAVE_MPI
#include "transport/mpi_transport.h"
#endif

namespace py = pybind11;
using namespace rr;

namespace {

std::string hexPointer(uintptr_t p) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "0x%llx", static_cast<unsigned long long>(p));
  return buf;
}

NcclEngine& ncclEngineOf(Communicator& comm, int device) {
  auto* e = dynamic_cast<NcclEngine*>(comm.findEngine(device));
  if (!e)
    throw ArgumentError("this communicator has no NCCL engine for cuda:" + std::to_string(device) +
                        " (run a ringreduce collective on a buffer there first, with backend "
                        "'nccl' or None)");
  return *e;
}

}  // namespace

void bindCuda(py::module_& m) {
  m.attr("nccl_version") = py::make_tuple(NCCL_MAJOR, NCCL_MINOR, NCCL_PATCH);

  m.def(
      "cuda_device_count",
      [] {
        int n = 0;
        if (cudaGetDeviceCount(&n) != cudaSuccess) {
          cudaGetLastError();  // no driver or no GPU: not an error for the caller
          return 0;
        }
        return n;
      },
      "GPUs this process can see; 0 without a GPU or driver.");

  m.def(
      "device_of_pointer",
      [](uintptr_t ptr) {
        cudaPointerAttributes a{};
        cudaError_t rc = cudaPointerGetAttributes(&a, reinterpret_cast<void*>(ptr));
        if (rc != cudaSuccess) {
          cudaGetLastError();
          throw ArgumentError("cannot tell where pointer " + hexPointer(ptr) + " lives: " +
                              cudaGetErrorString(rc));
        }
        if (a.type != cudaMemoryTypeDevice && a.type != cudaMemoryTypeManaged)
          throw ArgumentError("pointer " + hexPointer(ptr) + " is not device memory");
        return a.device;
      },
      py::arg("ptr"), "CUDA device ordinal of a device pointer.");

  m.def("nccl_unique_id", [] {
    ncclUniqueId id;
    RR_NCCL_CHECK(ncclGetUniqueId(&id));
    return py::bytes(id.internal, sizeof id.internal);
  }, "A fresh NCCL unique id (bytes) for add_nccl_engine.");

  m.def(
      "add_nccl_engine",
      [](Communicator& comm, int device, const std::string& uid) {
        if (uid.size() != sizeof(ncclUniqueId))
          throw ArgumentError("an NCCL unique id has " + std::to_string(sizeof(ncclUniqueId)) +
                              " bytes, got " + std::to_string(uid.size()));
        if (comm.findEngine(device))
          throw ArgumentError("this communicator already has an engine for cuda:" +
                              std::to_string(device));
        ncclUniqueId id;
        std::memcpy(id.internal, uid.data(), sizeof id.internal);
        comm.addEngine(std::make_unique<NcclEngine>(device, comm.rank(), comm.size(), id,
                                                     comm.options().timeoutSec));
      },
      py::arg("comm"), py::arg("device"), py::arg("unique_id"),
      py::call_guard<py::gil_scoped_release>(),
      "Collective: create the NCCL engine for `device` on every rank with the same id.");

  m.def(
      "mpi_device_path",
      [](bool cudaAware) {
        return std::string(mpiDevicePath(cudaAware, std::getenv("RINGREDUCE_MPI_DEVICE_PATH")));
      },
      py::arg("cuda_aware"),
      "'direct' or 'staged': how device buffers travel over MPI (RINGREDUCE_MPI_DEVICE_PATH "
      "overrides).");

  m.def(
      "add_mpi_device_engine",
      [](Communicator& comm, int device) {
#ifdef RR_HAVE_MPI
        if (comm.findEngine(device))
          throw ArgumentError("this communicator already has an engine for cuda:" +
                              std::to_string(device));
        const char* path =
            mpiDevicePath(MpiTransport::cudaAware(), std::getenv("RINGREDUCE_MPI_DEVICE_PATH"));
        int inited = 0;
        MPI_Initialized(&inited);
        if (!inited)
          throw ArgumentError("MPI is not initialised; device buffers over MPI need "
                              "init(backend='mpi') under mpirun");
        comm.addEngine(
            std::make_unique<MpiDeviceEngine>(device, std::strcmp(path, "staged") == 0));
        return std::string(path);
#else
        (void)comm;
        (void)device;
        throw ArgumentError("ringreduce was built without MPI: no device engine over MPI");
#endif
      },
      py::arg("comm"), py::arg("device"), py::call_guard<py::gil_scoped_release>(),
      "Collective: add the engine that moves device buffers over MPI; returns its path.");

  m.def(
      "nccl_native_allreduce",
      [](Communicator& comm, uintptr_t in, uintptr_t out, int64_t count, int dtype, int op,
         int device, uintptr_t stream) {
        if (dtype < 0 || dtype >= kNumDTypes)
          throw ArgumentError("unknown dtype code " + std::to_string(dtype));
        if (op < 0 || op >= kNumOps) throw ArgumentError("unknown op code " + std::to_string(op));
        ncclEngineOf(comm, device).nativeAllreduce(reinterpret_cast<const void*>(in),
                                                   reinterpret_cast<void*>(out), count,
                                                   static_cast<DType>(dtype),
                                                   static_cast<ReduceOp>(op), stream);
      },
      py::arg("comm"), py::arg("inp"), py::arg("out"), py::arg("count"), py::arg("dtype"),
      py::arg("op"), py::arg("device"), py::arg("stream"),
      py::call_guard<py::gil_scoped_release>(),
      "ncclAllReduce on the engine's communicator, enqueued on `stream` (baseline).");
}
