#include "algo/host_algorithms.h"

#include "algo/binomial.h"
#include "algo/direct.h"
#include "algo/halving.h"
#include "algo/pairwise.h"
#include "algo/parameter_server.h"
#include "algo/recursive_doubling.h"
#include "algo/ring.h"

namespace rr {

std::vector<std::unique_ptr<Algorithm>> makeHostAlgorithms() {
  std::vector<std::unique_ptr<Algorithm>> v;
  v.push_back(std::make_unique<RingAlgorithm>());
  v.push_back(std::make_unique<GatherFoldAlgorithm>());
  v.push_back(std::make_unique<RecursiveDoublingAlgorithm>());
  v.push_back(std::make_unique<RecursiveHalvingAlgorithm>());
  v.push_back(std::make_unique<RabenseifnerAlgorithm>());
  v.push_back(std::make_unique<BinomialAlgorithm>());
  v.push_back(std::make_unique<DirectAlgorithm>());
  v.push_back(std::make_unique<PairwiseAlgorithm>());
  v.push_back(std::make_unique<ParameterServerAlgorithm>());
  v.push_back(std::make_unique<ShardedPsAlgorithm>());
  return v;
}

}  // namespace rr
