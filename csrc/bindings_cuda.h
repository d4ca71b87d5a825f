// The CUDA/NCCL part of the module, added when the build has CUDA.
#pragma once

#include <pybind11/pybind11.h>

void bindCuda(pybind11::module_& m);
