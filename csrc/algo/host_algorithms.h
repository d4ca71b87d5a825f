// Every algorithm that runs over any transport with any reducer: the host
// engine offers all of them; device engines offer them beside their own.
#pragma once

#include <memory>
#include <vector>

#include "algo/algorithm.h"

namespace rr {

std::vector<std::unique_ptr<Algorithm>> makeHostAlgorithms();

}  // namespace rr
