// Test and benchmark hook: the CUDA-IPC all-reduce as a Python class, so it
// can be checked and timed on its own, beside NCCL, without a communicator.
#include "ipc/ipc_bindings.h"

#include <pybind11/pybind11.h>

#include <cstring>
#include <memory>
#include <string>

#include "common/errors.h"
#include "ipc/ipc_allreduce.h"

namespace py = pybind11;

namespace rr {
namespace {

// The Python callable gets `bytes` and returns either the concatenation of
// every rank's bytes or a sequence of them in rank order (mpi4py's
// comm.allgather returns a list).
IpcAllreduce::Exchange wrapExchange(py::object fn, int size) {
  return [fn, size](const void* mine, size_t bytes, void* all) {
    py::gil_scoped_acquire gil;
    py::object res = fn(py::bytes(static_cast<const char*>(mine), bytes));
    char* dst = static_cast<char*>(all);
    if (py::isinstance<py::bytes>(res) || py::isinstance<py::bytearray>(res)) {
      const std::string s = res.cast<std::string>();
      if (s.size() != bytes * size)
        throw ArgumentError("exchange returned " + std::to_string(s.size()) + " bytes, expected " +
                            std::to_string(bytes * size) + " (" + std::to_string(size) +
                            " ranks x " + std::to_string(bytes) + ")");
      std::memcpy(dst, s.data(), s.size());
      return;
    }
    py::sequence seq = res.cast<py::sequence>();
    if (static_cast<int>(seq.size()) != size)
      throw ArgumentError("exchange returned " + std::to_string(seq.size()) + " items, expected " +
                          std::to_string(size));
    for (int q = 0; q < size; ++q) {
      const std::string s = seq[q].cast<std::string>();
      if (s.size() != bytes)
        throw ArgumentError("exchange item " + std::to_string(q) + " has " +
                            std::to_string(s.size()) + " bytes, expected " + std::to_string(bytes));
      std::memcpy(dst + q * bytes, s.data(), bytes);
    }
  };
}

DType toDType(int v) {
  if (v < 0 || v >= kNumDTypes) throw ArgumentError("unknown dtype code " + std::to_string(v));
  return static_cast<DType>(v);
}

ReduceOp toOp(int v) {
  if (v < 0 || v >= kNumOps) throw ArgumentError("unknown op code " + std::to_string(v));
  return static_cast<ReduceOp>(v);
}

int toAlgo(const std::string& s) {
  if (s == "auto") return IpcTuning::kAuto;
  if (s == "one_shot") return IpcTuning::kOneShot;
  if (s == "two_shot") return IpcTuning::kTwoShot;
  throw ArgumentError("algo must be 'auto', 'one_shot' or 'two_shot', got '" + s + "'");
}

}  // namespace

void bindIpc(py::module_& m) {
  py::class_<IpcAllreduce>(
      m, "IpcAllreduce",
      "CUDA-IPC all-reduce for ranks on one host (test/benchmark hook). Collective "
      "constructor; exchange(bytes) -> all ranks' bytes (a list or their concatenation). "
      "dtype and op are the integer codes of DType/ReduceOp; pointers and stream are ints.")
      .def(py::init([](int rank, int size, int device, size_t bufferBytes, py::object exchange,
                       double timeout) {
             if (!PyCallable_Check(exchange.ptr()))
               throw ArgumentError("exchange must be callable");
             return std::make_unique<IpcAllreduce>(rank, size, device, bufferBytes,
                                                   wrapExchange(exchange, size), timeout);
           }),
           py::arg("rank"), py::arg("size"), py::arg("device"), py::arg("buffer_bytes"),
           py::arg("exchange"), py::arg("timeout") = 600.0)
      .def(
          "run",
          [](IpcAllreduce& self, uintptr_t in, uintptr_t out, int64_t count, int dtype, int op,
             uintptr_t stream) {
            self.run(reinterpret_cast<const void*>(in), reinterpret_cast<void*>(out), count,
                     toDType(dtype), toOp(op), reinterpret_cast<cudaStream_t>(stream));
          },
          py::arg("inp"), py::arg("out"), py::arg("count"), py::arg("dtype"), py::arg("op"),
          py::arg("stream") = 0, "Enqueue out = allreduce(inp); count in elements.")
      .def(
          "run_ring",
          [](IpcAllreduce& self, uintptr_t in, uintptr_t out, int64_t count, int dtype, int op,
             uintptr_t stream) {
            self.runRing(reinterpret_cast<const void*>(in), reinterpret_cast<void*>(out), count,
                         toDType(dtype), toOp(op), reinterpret_cast<cudaStream_t>(stream));
          },
          py::arg("inp"), py::arg("out"), py::arg("count"), py::arg("dtype"), py::arg("op"),
          py::arg("stream") = 0, "Enqueue out = allreduce(inp) with the GPU ring kernel.")
      .def(
          "ring_supports",
          [](const IpcAllreduce& self, int dtype, int op) {
            return self.ringSupports(toDType(dtype), toOp(op));
          },
          py::arg("dtype"), py::arg("op"))
      .def("raise_if_failed", [](const IpcAllreduce& self) {
        if (auto st = self.abortState()) st->raiseIfFailed(self.rank());
      }, "Raise the error a kernel gave up with (mismatch, timeout, abort), if any.")
      .def(
          "supports",
          [](const IpcAllreduce& self, int64_t count, int dtype, int op) {
            if (dtype < 0 || dtype >= kNumDTypes || op < 0 || op >= kNumOps) return false;
            return self.supports(count, static_cast<DType>(dtype), static_cast<ReduceOp>(op));
          },
          py::arg("count"), py::arg("dtype"), py::arg("op"))
      .def(
          "algorithm",
          [](const IpcAllreduce& self, int64_t count, int dtype) {
            return std::string(self.algorithmFor(count, toDType(dtype)));
          },
          py::arg("count"), py::arg("dtype"),
          "'one_shot', 'two_shot', 'copy' (one rank) or 'none' for count elements.")
      .def(
          "set_tuning",
          [](IpcAllreduce& self, const std::string& algo, size_t oneShotMaxBytes,
             size_t roundBytes, int maxBlocks, int ringChannels, size_t ringChunkBytes,
             int ringSlots, int ringOrders) {
            IpcTuning t;
            t.algo = toAlgo(algo);
            t.oneShotMaxBytes = oneShotMaxBytes;
            t.roundBytes = roundBytes;
            t.maxBlocks = maxBlocks;
            t.ringChannels = ringChannels;
            t.ringChunkBytes = ringChunkBytes;
            t.ringSlots = ringSlots;
            t.ringOrders = ringOrders;
            self.setTuning(t);
          },
          py::arg("algo") = "auto", py::arg("one_shot_max_bytes") = 0,
          py::arg("round_bytes") = IpcTuning().roundBytes, py::arg("max_blocks") = 0,
          py::arg("ring_channels") = IpcTuning().ringChannels,
          py::arg("ring_chunk_bytes") = IpcTuning().ringChunkBytes,
          py::arg("ring_slots") = IpcTuning().ringSlots,
          py::arg("ring_orders") = IpcTuning().ringOrders,
          "Every rank must pass the same values. Bytes; 0 means the default.")
      .def("abort", &IpcAllreduce::abort)
      .def_property_readonly("failed", &IpcAllreduce::failed)
      .def_property_readonly("enabled", &IpcAllreduce::enabled)
      .def_property_readonly("disabled_reason", &IpcAllreduce::disabledReason)
      .def_property_readonly("rank", &IpcAllreduce::rank)
      .def_property_readonly("size", &IpcAllreduce::worldSize)
      .def_property_readonly("buffer_bytes", &IpcAllreduce::bufferBytes);
}

}  // namespace rr
