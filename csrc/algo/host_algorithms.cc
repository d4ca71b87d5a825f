#include "algo/host_algorithms.h"

#include "algo/ring.h"

namespace rr {

std::vector<std::unique_ptr<Algorithm>> makeHostAlgorithms() {
  std::vector<std::unique_ptr<Algorithm>> v;
  v.push_back(std::make_unique<RingAlgorithm>());
  v.push_back(std::make_unique<GatherFoldAlgorithm>());
  return v;
}

}  // namespace rr
