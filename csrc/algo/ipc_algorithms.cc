#include "algo/ipc_algorithms.h"

namespace rr {

std::string IpcAlgorithm::refusal(const Call& call, int) const {
  if (call.coll != Coll::kAllreduce) return std::string(name()) + " runs allreduce only";
  if (!ipc_.enabled()) return "CUDA IPC is off here: " + ipc_.disabledReason();
  if (!ipc_.supports(call.count, call.dtype, call.op))
    return std::string("the IPC kernels take float32, float16 and bfloat16, not ") +
           dtypeName(call.dtype);
  if (algo_ == IpcTuning::kOneShot && !ipc_.oneShotFits(call.count, call.dtype))
    return "a one-shot of " + std::to_string(call.count) + " elements does not fit the IPC buffer";
  return std::string();
}

void IpcAlgorithm::run(const Call& c, AlgoEnv&) {
  ipc_.run(c.in, c.out, c.count, c.dtype, c.op, stream_, algo_);
}

}  // namespace rr
