// The engine for host memory: any host transport plus the vectorised CPU loops.
#pragma once

#include <memory>

#include "comm/engine.h"
#include "reduce/reduce_cpu.h"

namespace rr {

class HostEngine : public Engine {
 public:
  explicit HostEngine(std::unique_ptr<Transport> transport) : transport_(std::move(transport)) {}
  Transport& transport() override { return *transport_; }
  Reducer& reducer() override { return reducer_; }

 private:
  std::unique_ptr<Transport> transport_;
  CpuReducer reducer_;
};

}  // namespace rr
