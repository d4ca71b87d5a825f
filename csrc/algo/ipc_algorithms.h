// The CUDA-IPC algorithms (csrc/ipc/) of a device engine: the one-shot and
// two-shot all-reduces and the GPU ring. Data moves through peer memory, not
// the transport; each call's fingerprint travels in the kernels' flags, and
// each launch goes straight onto the caller's stream.
#pragma once

#include <cuda_runtime.h>

#include "algo/algorithm.h"
#include "ipc/ipc_allreduce.h"

namespace rr {

class IpcAlgorithm : public Algorithm {
 public:
  // `ipc` outlives the algorithm.
  IpcAlgorithm(IpcAllreduce& ipc, int algo) : ipc_(ipc), algo_(algo) {}
  const char* name() const override {
    return algo_ == IpcTuning::kOneShot ? "ipc_one_shot" : "ipc_two_shot";
  }
  std::string refusal(const Call& call, int worldSize) const override;
  void run(const Call& call, AlgoEnv& env) override;
  bool fingerprintInFlags() const override { return true; }
  bool runsOnCallerStream() const override { return true; }

 private:
  IpcAllreduce& ipc_;
  int algo_;
};

// The chunked ring as one kernel over peer memory (ipc/ring_kernels.cuh):
// allreduce, reduce_scatter, allgather (blocks of one size) and broadcast.
class GpuRingAlgorithm : public Algorithm {
 public:
  explicit GpuRingAlgorithm(IpcAllreduce& ipc) : ipc_(ipc) {}
  const char* name() const override { return "gpu_ring"; }
  std::string refusal(const Call& call, int worldSize) const override;
  void run(const Call& call, AlgoEnv& env) override;
  bool fingerprintInFlags() const override { return true; }
  bool runsOnCallerStream() const override { return true; }

 private:
  IpcAllreduce& ipc_;
};

}  // namespace rr
