// The CUDA-IPC one-shot and two-shot all-reduces (csrc/ipc/) as algorithms
// of a device engine: data moves through peer memory, not the transport.
#pragma once

#include <cuda_runtime.h>

#include "algo/algorithm.h"
#include "ipc/ipc_allreduce.h"

namespace rr {

class IpcAlgorithm : public Algorithm {
 public:
  // `ipc` and `stream` (the engine's reduction stream) outlive the algorithm.
  IpcAlgorithm(IpcAllreduce& ipc, int algo, cudaStream_t stream)
      : ipc_(ipc), algo_(algo), stream_(stream) {}
  const char* name() const override {
    return algo_ == IpcTuning::kOneShot ? "ipc_one_shot" : "ipc_two_shot";
  }
  std::string refusal(const Call& call, int worldSize) const override;
  void run(const Call& call, AlgoEnv& env) override;

 private:
  IpcAllreduce& ipc_;
  int algo_;
  cudaStream_t stream_;
};

}  // namespace rr
