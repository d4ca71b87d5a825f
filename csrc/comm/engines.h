// The engines of one communicator: [0] moves host memory, the others one GPU
// each. Answers which engine serves a call, and with which chunk size.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "algo/call.h"
#include "comm/engine.h"

namespace rr {

class EngineSet {
 public:
  EngineSet(std::unique_ptr<Engine> host, int worldSize);

  Engine& host() { return *engines_[0]; }
  // True when the host engine spans the world (else device buffers only).
  bool hostSpansWorld() const { return engines_[0]->transport().size() == size_; }
  void add(std::unique_ptr<Engine> engine);
  Engine* find(int device) const;
  // The engine for the call's buffers, or an ArgumentError saying why none.
  Engine& forCall(const Call& call) const;
  std::vector<std::string> names() const;
  template <class F>
  void each(F f) const {
    for (auto& e : engines_) f(*e);
  }
  // From any thread: frees device work stuck on a peer (IPC abort flag,
  // ncclCommAbort). The owner thread aborts the rest.
  void interruptDevices() noexcept;
  void abortAll() noexcept;
  // Device engines go first: they may lean on the host one.
  void clear() noexcept;
  // Leaks every engine (a forked child must not touch its parent's).
  void abandon() noexcept;

 private:
  int size_;
  std::vector<std::unique_ptr<Engine>> engines_;
};

}  // namespace rr
