// Scratch memory for algorithms: receive slots, partial sums, gathered
// inputs. One per engine, cached across collectives and grown on demand.
// Kept apart from the Reducer, which only computes.
#pragma once

#include <cstddef>

namespace rr {

class Workspace {
 public:
  virtual ~Workspace() = default;
  // At least `bytes` bytes, 256-byte aligned, valid until the next call that
  // asks for more. Contents are not preserved when it grows. Device
  // workspaces make sure no earlier collective still uses the old block.
  virtual void* get(size_t bytes) = 0;
  // A second, independent block (e.g. staging beside receive slots), with
  // the same rules.
  virtual void* getSecond(size_t bytes) = 0;
  // Forget the blocks without freeing them: a transfer that could not be
  // cancelled may still write there. Later get()s allocate afresh.
  virtual void abandon() noexcept {}
};

}  // namespace rr
