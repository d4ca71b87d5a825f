// The strict check (RINGREDUCE_CHECK / check=True) and the NaN check: every
// rank shares the fingerprint of the call it is about to make before any
// data moves, and every rank compares all of them, so all ranks raise the
// same error together and the communicator stays usable.
#pragma once

#include <exception>

#include "algo/call.h"
#include "comm/engine.h"
#include "common/fingerprint.h"

namespace rr {

// Null when the ranks agree (and, with nanCheck, no input holds NaN/Inf);
// otherwise the error every rank raises. `dataReducer` looks at the input
// where it lives; the fingerprints travel over `host`.
std::exception_ptr agreeBeforeMoving(const Call& call, const Fingerprint& mine, Reducer& dataReducer,
                                     bool nanCheck, Engine& host, int rank, int size);

}  // namespace rr
