// The CUDA/NCCL part of the module, added when the build has CUDA.
#pragma once

#include <pybind11/pybind11.h>

#include <cstdint>

void bindCuda(pybind11::module_& m);

namespace rr {
// True when `stream` (a raw cudaStream_t) is being captured into a CUDA graph.
bool streamCapturing(uintptr_t stream);
}  // namespace rr
