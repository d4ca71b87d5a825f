// Every algorithm that runs over any transport with any reducer: the host
// engine offers all of them; device engines offer them beside their own.
#pragma once

#include <memory>
#include <vector>

#include "algo/algorithm.h"
#include "shm/shm_world.h"

namespace rr {

// `shm`: where the engine keeps its shared memory (null while none is
// attached); the shared-memory algorithms read it when they run.
std::vector<std::unique_ptr<Algorithm>> makeHostAlgorithms(const std::shared_ptr<ShmWorld>* shm = nullptr);

}  // namespace rr
