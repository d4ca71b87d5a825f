// Which process generation we are in: fork() bumps it in the child. A
// communicator remembers the generation it was made in, so a forked child
// that touches it gets an error instead of speaking on its parent's
// connections (which would desynchronise the parent).
#pragma once

#include <pthread.h>

#include <atomic>

namespace rr {

inline std::atomic<int>& forkGenerationCounter() {
  static std::atomic<int> generation{0};
  return generation;
}

// The current generation; the first call registers the fork handler.
inline int forkGeneration() {
  static const bool registered = [] {
    pthread_atfork(nullptr, nullptr, [] { forkGenerationCounter().fetch_add(1); });
    return true;
  }();
  (void)registered;
  return forkGenerationCounter().load(std::memory_order_relaxed);
}

}  // namespace rr
