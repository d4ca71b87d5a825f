#include "algo/ipc_algorithms.h"

namespace rr {
namespace {

IpcTag tagOf(const Call& c, const AlgoEnv& env) {
  IpcTag t;
  t.value = env.fingerprint;
  t.fromHost = !env.capturing;
  t.coll = c.coll;
  t.root = c.coll == Coll::kBroadcast ? c.root : 0;
  t.ordered = true;  // the engine keeps its calls in submission order (CudaEngineBase::begin)
  return t;
}

bool equalBlocks(const std::vector<int64_t>& counts) {
  for (int64_t n : counts)
    if (n != counts.front()) return false;
  return true;
}

}  // namespace

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

void IpcAlgorithm::run(const Call& c, AlgoEnv& env) {
  ipc_.run(c.in, c.out, c.count, c.dtype, c.op, reinterpret_cast<cudaStream_t>(c.stream), algo_,
           tagOf(c, env));
}

std::string GpuRingAlgorithm::refusal(const Call& call, int) const {
  const bool folds = call.coll == Coll::kAllreduce || call.coll == Coll::kReduceScatter;
  if (!folds && call.coll != Coll::kAllgather && call.coll != Coll::kBroadcast)
    return std::string("gpu_ring does not run ") + collName(call.coll);
  if (!ipc_.enabled()) return "CUDA IPC is off here: " + ipc_.disabledReason();
  if (folds && !ipc_.ringSupports(call.dtype, call.op))
    return std::string("the ring kernels fold float16, bfloat16, float32, float64, int8, uint8, "
                       "int32 and int64, not ") +
           dtypeName(call.dtype) + "/" + opName(call.op);
  if (!folds && !ipc_.ringMoves(call.dtype))
    return std::string("the ring kernels move elements of 1, 2, 4 or 8 bytes, not ") +
           dtypeName(call.dtype);
  if (call.coll == Coll::kAllgather && (call.counts.empty() || !equalBlocks(call.counts)))
    return "gpu_ring's all-gather takes blocks of one size";
  return std::string();
}

void GpuRingAlgorithm::run(const Call& c, AlgoEnv& env) {
  const int64_t count = c.coll == Coll::kAllgather ? c.counts.front() : c.count;
  ipc_.runRing(c.in, c.out, count, c.dtype, c.op, reinterpret_cast<cudaStream_t>(c.stream),
               tagOf(c, env));
}

}  // namespace rr
