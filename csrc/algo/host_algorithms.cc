#include "algo/host_algorithms.h"

#include "algo/binomial.h"
#include "algo/direct.h"
#include "algo/halving.h"
#include "algo/pairwise.h"
#include "algo/parameter_server.h"
#include "algo/recursive_doubling.h"
#include "algo/shm.h"
#include "algo/ring.h"

namespace rr {

std::vector<std::unique_ptr<Algorithm>> makeHostAlgorithms(const std::shared_ptr<ShmWorld>* shm) {
  std::vector<std::unique_ptr<Algorithm>> v;
  if (shm) {
    v.push_back(std::make_unique<ShmAllreduceAlgorithm>(false, shm));
    v.push_back(std::make_unique<ShmAllreduceAlgorithm>(true, shm));
  }
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
