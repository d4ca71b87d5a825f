// Host scratch memory: two independent blocks, each grown on demand and kept
// across collectives. Host work is synchronous, so an old block can be freed
// as soon as a larger one is asked for.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdlib>
#include <new>

#include "reduce/workspace.h"

namespace rr {

class HostWorkspace : public Workspace {
 public:
  static constexpr size_t kAlign = 256;

  HostWorkspace() = default;
  ~HostWorkspace() override {
    std::free(first_.ptr);
    std::free(second_.ptr);
  }
  HostWorkspace(const HostWorkspace&) = delete;
  HostWorkspace& operator=(const HostWorkspace&) = delete;

  void* get(size_t bytes) override { return grow(first_, bytes); }
  void* getSecond(size_t bytes) override { return grow(second_, bytes); }
  void abandon() noexcept override {
    first_ = Block{};
    second_ = Block{};
  }
  size_t capacity() const { return first_.bytes; }
  size_t secondCapacity() const { return second_.bytes; }

 private:
  struct Block {
    void* ptr = nullptr;
    size_t bytes = 0;
  };

  static void* grow(Block& b, size_t bytes) {
    if (b.ptr && bytes <= b.bytes) return b.ptr;
    // aligned_alloc wants a multiple of the alignment; a zero-byte request
    // still gets a block, so callers may always use the pointer.
    const size_t want = (std::max<size_t>(bytes, 1) + kAlign - 1) / kAlign * kAlign;
    void* p = std::aligned_alloc(kAlign, want);
    if (!p) throw std::bad_alloc();
    std::free(b.ptr);
    b.ptr = p;
    b.bytes = want;
    return p;
  }

  Block first_;
  Block second_;
};

}  // namespace rr
