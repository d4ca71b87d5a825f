// Test and benchmark hooks: the reducers called directly on raw pointers, so
// numerics can be checked against NumPy and kernels timed without a
// communicator. Glue only; the arithmetic is in common/numerics.h.
#include "reduce/reduce_bindings.h"

#include <pybind11/pybind11.h>

#include <cstdint>
#include <initializer_list>
#include <tuple>
#include <string>

#include "common/dtypes.h"
#include "common/errors.h"
#include "reduce/reduce_cpu.h"
#ifdef RR_HAVE_CUDA
#include <cuda_runtime.h>

#include <map>
#include <mutex>
#include <utility>

#include "reduce/reduce_cuda.h"
#endif

namespace py = pybind11;

namespace rr {
namespace {

DType dtypeOf(int code) {
  RR_CHECK_ARG(validDType(code), "unknown dtype code " + std::to_string(code));
  return static_cast<DType>(code);
}

ReduceOp opOf(int code) {
  RR_CHECK_ARG(validOp(code), "unknown reduce op code " + std::to_string(code));
  return static_cast<ReduceOp>(code);
}

void checkSpan(int64_t count, std::initializer_list<uintptr_t> ptrs) {
  RR_CHECK_ARG(count >= 0, "count must be >= 0, got " + std::to_string(count));
  if (count == 0) return;
  for (uintptr_t p : ptrs) RR_CHECK_ARG(p != 0, "null pointer for " + std::to_string(count) + " elements");
}

template <class T>
T* ptr(uintptr_t p) {
  return reinterpret_cast<T*>(p);
}

#ifdef RR_HAVE_CUDA
// One reducer per (device, stream), made on first use and never destroyed:
// its destructor would synchronise a stream that may be gone at exit.
CudaReducer& deviceReducer(int device, uintptr_t stream) {
  static std::mutex mu;
  static auto* cache = new std::map<std::pair<int, uintptr_t>, CudaReducer*>();
  std::lock_guard<std::mutex> lock(mu);
  CudaReducer*& r = (*cache)[{device, stream}];
  if (!r) r = new CudaReducer(device, reinterpret_cast<cudaStream_t>(stream));
  return *r;
}
#endif

}  // namespace

void bindReducers(py::module_& m) {
  using Release = py::call_guard<py::gil_scoped_release>;
  // The codes as dtypes.h defines them, so tests never copy them.
  m.def("dtype_codes", [] {
    py::dict d;
    for (int c = 0; c < kNumDTypes; ++c) d[dtypeName(static_cast<DType>(c))] = c;
    return d;
  });
  m.def("op_codes", [] {
    py::dict d;
    for (int c = 0; c < kNumOps; ++c) d[opName(static_cast<ReduceOp>(c))] = c;
    return d;
  });
  m.def(
      "op_refusal",
      [](int dtype, int op) { return opRefusal(dtypeOf(dtype), opOf(op)); },
      py::arg("dtype"), py::arg("op"), "Why op cannot reduce dtype; empty when it can.");
  m.def(
      "reduce_host",
      [](uintptr_t dst, uintptr_t a, uintptr_t b, int64_t count, int dtype, int op) {
        checkSpan(count, {dst, a, b});
        CpuReducer().reduce(ptr<void>(dst), ptr<const void>(a), ptr<const void>(b), count,
                            dtypeOf(dtype), opOf(op));
      },
      py::arg("dst"), py::arg("a"), py::arg("b"), py::arg("count"), py::arg("dtype"), py::arg("op"),
      Release(), "dst[i] = a[i] op b[i] on the host for count elements (avg reduces as sum).");
  m.def(
      "finalize_host",
      [](uintptr_t dst, int64_t count, int dtype, int op, int world) {
        checkSpan(count, {dst});
        CpuReducer().finalize(ptr<void>(dst), count, dtypeOf(dtype), opOf(op), world);
      },
      py::arg("dst"), py::arg("count"), py::arg("dtype"), py::arg("op"), py::arg("world"),
      Release(), "avg's division by the world size, in place, on the host (other ops: no-op).");
  m.def(
      "any_non_finite_host",
      [](uintptr_t data, int64_t count, int dtype) {
        checkSpan(count, {data});
        return CpuReducer().anyNonFinite(ptr<const void>(data), count, dtypeOf(dtype));
      },
      py::arg("data"), py::arg("count"), py::arg("dtype"), Release());
#ifdef RR_HAVE_CUDA
  m.def(
      "reduce_device",
      [](int device, uintptr_t stream, uintptr_t dst, uintptr_t a, uintptr_t b, int64_t count,
         int dtype, int op) {
        checkSpan(count, {dst, a, b});
        deviceReducer(device, stream)
            .reduce(ptr<void>(dst), ptr<const void>(a), ptr<const void>(b), count, dtypeOf(dtype),
                    opOf(op));
      },
      py::arg("device"), py::arg("stream"), py::arg("dst"), py::arg("a"), py::arg("b"),
      py::arg("count"), py::arg("dtype"), py::arg("op"), Release(),
      "Enqueues dst[i] = a[i] op b[i] on `stream` (a cudaStream_t as an int) of `device`.");
  m.def(
      "finalize_device",
      [](int device, uintptr_t stream, uintptr_t dst, int64_t count, int dtype, int op, int world) {
        checkSpan(count, {dst});
        deviceReducer(device, stream).finalize(ptr<void>(dst), count, dtypeOf(dtype), opOf(op), world);
      },
      py::arg("device"), py::arg("stream"), py::arg("dst"), py::arg("count"), py::arg("dtype"),
      py::arg("op"), py::arg("world"), Release());
  m.def(
      "any_non_finite_device",
      [](int device, uintptr_t stream, uintptr_t data, int64_t count, int dtype) {
        checkSpan(count, {data});
        return deviceReducer(device, stream).anyNonFinite(ptr<const void>(data), count, dtypeOf(dtype));
      },
      py::arg("device"), py::arg("stream"), py::arg("data"), py::arg("count"), py::arg("dtype"),
      Release());
  m.def(
      "device_conversion_mismatches",
      [](int device) {
        const auto r = deviceConversionMismatches(device);
        return std::make_tuple(r[0], r[1], r[2]);
      },
      py::arg("device"), Release(),
      "(float->half, float->bf16, half->float) inputs where the device's conversions differ from "
      "the host's bit tricks, over all 2^32 floats and 2^16 halves.");
#endif
}

}  // namespace rr
