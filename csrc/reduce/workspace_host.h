// Host scratch memory: aligned blocks that grow on demand.
#pragma once

#include <cstdlib>
#include <new>

#include "reduce/workspace.h"

namespace rr {

class HostWorkspace : public Workspace {
 public:
  HostWorkspace() = default;
  ~HostWorkspace() override {
    std::free(blocks_[0].p);
    std::free(blocks_[1].p);
  }
  HostWorkspace(const HostWorkspace&) = delete;
  HostWorkspace& operator=(const HostWorkspace&) = delete;
  void* get(size_t bytes) override { return grow(blocks_[0], bytes); }
  void* getSecond(size_t bytes) override { return grow(blocks_[1], bytes); }

 private:
  struct Block {
    void* p = nullptr;
    size_t bytes = 0;
  };
  static void* grow(Block& b, size_t bytes) {
    if (b.p && bytes <= b.bytes) return b.p;
    size_t want = ((bytes < 256 ? 256 : bytes) + 255) / 256 * 256;
    void* p = std::aligned_alloc(256, want);
    if (!p) throw std::bad_alloc();
    std::free(b.p);
    b.p = p;
    b.bytes = want;
    return p;
  }
  Block blocks_[2];
};

}  // namespace rr
