// Registers the test-only Python class _C.IpcAllreduce (CUDA builds only).
#pragma once

#include <pybind11/pybind11.h>

namespace rr {

void bindIpc(pybind11::module_& m);

}  // namespace rr
