// Checks a call before anything moves. Only what this rank can see alone is
// checked here; what ranks must agree on travels in the call's fingerprint.
#pragma once

#include "algo/call.h"

namespace rr {

// Throws ArgumentError (ValueError in Python) or TypeArgError (TypeError)
// naming the value that is wrong.
void validateCall(const Call& call, int rank, int size);

}  // namespace rr
