// Registers the reducers' test and benchmark hooks (_C.reduce_host, ...).
#pragma once

#include <pybind11/pybind11.h>

namespace rr {

void bindReducers(pybind11::module_& m);

}  // namespace rr
