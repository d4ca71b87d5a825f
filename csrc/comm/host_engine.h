// The engine for host memory: any host transport, the vectorised CPU loops,
// and every host algorithm.
#pragma once

#include <memory>
#include <vector>

#include "algo/host_algorithms.h"
#include "comm/engine.h"
#include "reduce/reduce_cpu.h"
#include "reduce/workspace_host.h"

namespace rr {

class HostEngine : public Engine {
 public:
  explicit HostEngine(std::unique_ptr<Transport> transport)
      : transport_(std::move(transport)), algorithms_(makeHostAlgorithms(&shm_)) {
    for (auto& a : algorithms_) offered_.push_back(a.get());
  }
  Transport& transport() override { return *transport_; }
  Reducer& reducer() override { return reducer_; }
  Workspace& workspace() override { return workspace_; }
  const std::vector<Algorithm*>& algorithms() override { return offered_; }
  // The ranks' shared memory on one machine (comm: attachSharedMemory), or null.
  void setSharedMemory(std::shared_ptr<ShmWorld> w) { shm_ = std::move(w); }


 private:
  std::unique_ptr<Transport> transport_;
  std::shared_ptr<ShmWorld> shm_;  // before algorithms_, which point at it
  CpuReducer reducer_;
  HostWorkspace workspace_;
  std::vector<std::unique_ptr<Algorithm>> algorithms_;
  std::vector<Algorithm*> offered_;
};

}  // namespace rr
