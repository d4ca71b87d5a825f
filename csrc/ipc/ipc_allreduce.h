// A single-host all-reduce over CUDA IPC: every rank maps every other rank's
// buffer and the GPUs move data with plain loads and stores over NVLink,
// synchronising through flags in that same memory. It is a fast path beside
// the ring, for ranks whose GPUs are peers of one another.
//
// Small messages run "one-shot": each rank pushes its whole input into every
// peer's staging slot, then reduces all N copies locally. Large messages run
// "two-shot": rank r receives segment r from every peer (reduce-scatter by
// pushing), reduces it, and pushes the result to every peer (all-gather by
// pushing), in rounds that fit the buffer. benchmarks/NOTES.md has the byte
// counts behind those choices.
//
// Every output element is the fold, in rank order 0..N-1, of the N inputs
// converted to float, divided by N for avg, rounded once to the element
// type. That function does not depend on the algorithm, the grid or the
// pointers' alignment, so every rank holds the same bits.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "common/dtypes.h"
#include "ipc/ipc_plan.h"

namespace rr {

// Knobs for benchmarking. Every rank must set the same values (they decide
// how elements are split between GPU blocks, and blocks pair up across ranks).
struct IpcTuning {
  enum Algo : int { kAuto = 0, kOneShot = 1, kTwoShot = 2 };
  int algo = kAuto;
  size_t oneShotMaxBytes = 0;     // 0: 1 MiB / (N-1)
  size_t roundBytes = 32 << 20;   // two-shot bytes per round (also bounded by the buffer)
  int maxBlocks = 0;              // 0: the smallest SM count among the ranks
};

class IpcAllreduce {
 public:
  // exchange(mine, bytes, all): an all-gather of `bytes` bytes per rank over
  // the host; every rank calls it together, the same number of times.
  using Exchange = std::function<void(const void* mine, size_t bytes, void* all)>;

  // Collective. `bufferBytes` is the data area per rank (two halves; each
  // half holds one call's staging). Throws rr::Error when a CUDA call fails
  // on any rank and MismatchError when ranks pass different sizes. When the
  // GPUs cannot reach each other (no P2P, IPC refused) it succeeds on every
  // rank with enabled() false and supports() false, so all ranks agree on
  // the path. `timeoutSec` bounds each wait inside a kernel for a peer.
  IpcAllreduce(int rank, int worldSize, int device, size_t bufferBytes, Exchange exchange,
               double timeoutSec = 600.0);
  ~IpcAllreduce();  // never throws
  IpcAllreduce(const IpcAllreduce&) = delete;
  IpcAllreduce& operator=(const IpcAllreduce&) = delete;

  // True when this path handles the call: enabled, dtype float16, bfloat16
  // or float32 (others go to the ring), any op, any count >= 0 (chunked).
  bool supports(int64_t count, DType dtype, ReduceOp op) const;

  // out = reduction over ranks of in (count elements), enqueued on `stream`;
  // in may equal out. Calls must be made in the same order with the same
  // count/dtype/op on every rank. Not capturable in a CUDA graph (each call
  // bakes a new flag epoch into the launch). Not thread-safe.
  // `algo` (IpcTuning::Algo) forces one-shot or two-shot; kAuto follows the
  // tuning. A forced one-shot that does not fit the buffer is an ArgumentError.
  void run(const void* in, void* out, int64_t count, DType dtype, ReduceOp op,
           cudaStream_t stream, int algo = IpcTuning::kAuto);
  // True when a one-shot of `count` elements fits one half of the buffer.
  bool oneShotFits(int64_t count, DType dtype) const;

  // Which algorithm run() picks for this size ("one_shot" or "two_shot").
  const char* algorithmFor(int64_t count, DType dtype) const;

  // Make kernels spinning on a peer give up (e.g. the communicator aborts).
  // The object is unusable afterwards.
  void abort() noexcept;
  // A kernel timed out waiting for a peer, or abort() was called.
  bool failed() const noexcept;

  void setTuning(const IpcTuning& t);
  const IpcTuning& tuning() const { return tuning_; }

  bool enabled() const { return enabled_; }
  const std::string& disabledReason() const { return disabledReason_; }
  int rank() const { return rank_; }
  int worldSize() const { return worldSize_; }
  size_t bufferBytes() const { return bufferBytes_; }

  // True when `device` can reach every peer GPU named by PCI bus id (the
  // peers' ids only, not the caller's): by P2P, or because the peer is this
  // very GPU (several ranks on one GPU). A GPU not visible in this process
  // counts as unreachable; `why` names the first failure.
  static bool peersReachable(int device, const std::vector<std::string>& busIds,
                             std::string* why = nullptr);

  static constexpr int kMaxRanks = 8;
  static constexpr int kMaxBlocks = 160;

 private:
  IpcPlan plan(int64_t count, DType dtype, int algo) const;
  int64_t oneShotLimit() const;
  void releaseAll() noexcept;

  int rank_;
  int worldSize_;
  int device_;
  size_t bufferBytes_;
  size_t halfBytes_ = 0;
  int64_t timeoutNs_;
  int minSmCount_ = 1;
  IpcTuning tuning_;

  bool enabled_ = false;
  std::string disabledReason_;

  char* mine_ = nullptr;                      // flags, then half 0, then half 1
  std::vector<char*> peers_;                  // [rank] == mine_
  volatile int* abortHost_ = nullptr;         // pinned, mapped: host and kernels both see it
  int* abortDevice_ = nullptr;
  uint64_t flagBase_ = 0;                     // last flag value used by any barrier
  uint64_t calls_ = 0;                        // launches so far; picks the half
  cudaStream_t lastStream_ = nullptr;
  bool haveLastStream_ = false;
  cudaEvent_t order_ = nullptr;               // orders a call after the previous on another stream
};

}  // namespace rr
