// pybind11 glue for the device engines: argument conversion and GIL release.
#include "bindings_cuda.h"

#include <cuda_runtime.h>
#include <nccl.h>

#include <cstdio>
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
#ifdef RR_HAVE_UCX
#include "transport/ucx_transport.h"
#endif

namespace py = pybind11;
using namespace rr;

namespace {

std::string hexPointer(uintptr_t p) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "0x%llx", static_cast<unsigned long long>(p));
  return buf;
}

// The IPC setup's all-gather, over the communicator's host transport.
IpcAllreduce::Exchange hostExchange(Communicator& comm) {
  if (!comm.hasHostTransport()) return nullptr;
  return [&comm](const void* mine, size_t bytes, void* all) {
    std::vector<std::string> got = comm.allgatherBytes(std::string(static_cast<const char*>(mine), bytes));
    for (size_t q = 0; q < got.size(); ++q) {
      if (got[q].size() != bytes)
        RR_THROW(MismatchError, "IPC setup: rank " + std::to_string(q) + " sent " +
                                    std::to_string(got[q].size()) + " bytes, expected " +
                                    std::to_string(bytes));
      std::memcpy(static_cast<char*>(all) + q * bytes, got[q].data(), bytes);
    }
  };
}

NcclEngine& ncclEngineOf(Communicator& comm, int device) {
  auto* e = dynamic_cast<NcclEngine*>(comm.findEngine(device));
  if (!e)
    throw ArgumentError("this communicator has no NCCL engine for cuda:" + std::to_string(device) +
                        " (run a ringreduce collective on a buffer there first, with backend "
                        "'nccl' or None)");
  return *e;
}

void refuseSecondEngine(Communicator& comm, int device) {
  if (comm.findEngine(device))
    throw ArgumentError("this communicator already has an engine for cuda:" + std::to_string(device));
}

}  // namespace

namespace rr {

bool streamCapturing(uintptr_t stream) {
  cudaStreamCaptureStatus st = cudaStreamCaptureStatusNone;
  const cudaError_t e = cudaStreamIsCapturing(reinterpret_cast<cudaStream_t>(stream), &st);
  if (e != cudaSuccess) {
    cudaGetLastError();  // a bad stream handle fails later, where the call names it
    return false;
  }
  return st != cudaStreamCaptureStatusNone;
}

}  // namespace rr

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

  m.def(
      "device_bus_id",
      [](int device) {
        char id[32] = {};
        RR_CUDA_CHECK(cudaDeviceGetPCIBusId(id, sizeof id, device));
        return std::string(id);
      },
      py::arg("device"), "PCI bus id of a GPU (ranks on one GPU share it).");

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
        refuseSecondEngine(comm, device);
        ncclUniqueId id;
        std::memcpy(id.internal, uid.data(), sizeof id.internal);
        comm.addEngine(std::make_unique<NcclEngine>(device, comm.rank(), comm.size(), id,
                                                     comm.options().timeoutSec, hostExchange(comm)));
      },
      py::arg("comm"), py::arg("device"), py::arg("unique_id"),
      py::call_guard<py::gil_scoped_release>(),
      "Collective: create the NCCL engine for `device` on every rank with the same id.");

  m.def(
      "device_host_path",
      [](bool cudaAware, const std::string& setting) {
        return std::string(deviceHostPath(cudaAware, setting));
      },
      py::arg("cuda_aware"), py::arg("setting"),
      "'direct' or 'staged': how device buffers travel over a host transport.");

  m.def(
      "add_host_path_engine",
      [](Communicator& comm, int device, const std::string& setting) {
        refuseSecondEngine(comm, device);
        if (!comm.hasHostTransport())
          throw ArgumentError("device buffers over the host transport need one (backend 'mpi' "
                              "under mpirun, 'ucx' elsewhere)");
        bool cudaAware = false;
#ifdef RR_HAVE_MPI
        cudaAware = comm.hostTransport().name() == "mpi" && MpiTransport::cudaAware();
#endif
        const char* path = deviceHostPath(cudaAware, setting);
        if (std::strcmp(path, "direct") == 0 && !cudaAware)
          throw ArgumentError("the direct device path needs a CUDA-aware MPI, and this one is "
                              "not; unset RINGREDUCE_MPI_DEVICE_PATH or set it to 'staged'");
        comm.addEngine(std::make_unique<HostPathEngine>(device, comm.hostTransport(),
                                                         std::strcmp(path, "staged") == 0,
                                                         comm.options().timeoutSec,
                                                         hostExchange(comm)));
        return std::string(path);
      },
      py::arg("comm"), py::arg("device"), py::arg("setting") = "",
      py::call_guard<py::gil_scoped_release>(),
      "Collective: the engine that moves device buffers over the host transport (with the IPC "
      "algorithms beside it); returns its path.");

#ifdef RR_HAVE_UCX
  m.def(
      "add_ucx_device_engine",
      [](Communicator& comm, int device) {
        refuseSecondEngine(comm, device);
        auto* host = comm.hasHostTransport() ? dynamic_cast<UcxTransport*>(&comm.hostTransport())
                                             : nullptr;
        if (!host) throw ArgumentError("the UCX device path needs backend 'ucx'");
        // Every rank answers, so all take the same path.
        std::string why;
        const bool mine = UcxTransport::cudaMemoryAvailable(&why);
        std::vector<std::string> all = comm.allgatherBytes(mine ? "" : why);
        for (size_t q = 0; q < all.size(); ++q)
          if (!all[q].empty()) return "rank " + std::to_string(q) + ": " + all[q];
        UcxOptions opts = host->options();
        opts.deviceBuffers = true;
        if (!opts.tls.empty() && opts.tls.find("cuda") == std::string::npos) opts.tls += ",cuda";
        AddressExchange ex = [&comm](const std::string& m) { return comm.allgatherBytes(m); };
        auto t = std::make_unique<UcxTransport>(host->rank(), host->size(), std::move(ex), opts);
        comm.addEngine(std::make_unique<HostPathEngine>(device, std::move(t),
                                                         comm.options().timeoutSec,
                                                         hostExchange(comm)));
        return std::string();
      },
      py::arg("comm"), py::arg("device"), py::call_guard<py::gil_scoped_release>(),
      "Collective: the engine that moves device buffers over a second UCX transport with UCX's "
      "CUDA transports (device pointers straight to UCX), the IPC algorithms beside it. '' "
      "when made; else why not (the same on every rank), and nothing is made.");
#endif

  m.def(
      "nccl_native_allreduce",
      [](Communicator& comm, uintptr_t in, uintptr_t out, int64_t count, DType dtype, ReduceOp op,
         int device, uintptr_t stream) {
        ncclEngineOf(comm, device).nativeAllreduce(reinterpret_cast<const void*>(in),
                                                   reinterpret_cast<void*>(out), count, dtype, op,
                                                   stream);
      },
      py::arg("comm"), py::arg("inp"), py::arg("out"), py::arg("count"), py::arg("dtype"),
      py::arg("op"), py::arg("device"), py::arg("stream"),
      py::call_guard<py::gil_scoped_release>(),
      "ncclAllReduce on the engine's communicator, enqueued on `stream` (a benchmark baseline).");
}
