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
//
// The GPU ring (runRing, ring_kernels.cuh) uses the same mapped memory, flags
// and call state: a chunked ring over peer memory for large messages and
// for the dtypes the two kernels above do not take. Its fold order is ring
// order (fixed per element), again the same bits on every rank.
//
// Every launch reads its flag values and call number from device memory, so
// all three kernels can be captured in a CUDA graph and replayed; and every
// launch's first barrier compares the call's fingerprint between ranks.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "common/dtypes.h"
#include "ipc/ipc_layout.h"
#include "ipc/ipc_plan.h"

namespace rr {
namespace ipc {
struct Args;
}

// Knobs for benchmarking. Every rank must set the same values (they decide
// how elements are split between GPU blocks, and blocks pair up across ranks).
struct IpcTuning {
  enum Algo : int { kAuto = 0, kOneShot = 1, kTwoShot = 2 };
  int algo = kAuto;
  size_t oneShotMaxBytes = 0;     // 0: 1 MiB / (N-1)
  size_t roundBytes = 32 << 20;   // two-shot bytes per round (also bounded by the buffer)
  int maxBlocks = 0;              // 0: the smallest SM count among the ranks
  // gpu_ring
  int ringChannels = 32;             // at most; also bounded by the SM count and kRingMaxChannels
  size_t ringChunkBytes = 256 << 10; // bytes per staging slot (bounded by the ring region)
  int ringSlots = 4;                 // slots per channel (>= 2): how far a sender may run ahead
  int ringOrders = 1;                // 2: odd channels run the ring backwards (4+ GPUs)
};

// The fingerprint a launch carries in its first barrier: the communicator's
// (host sequence number), or, when fromHost is false or the stream is being
// captured, the call's shape numbered by the device-side call counter.
struct IpcTag {
  uint64_t value = 0;
  bool fromHost = false;
  int64_t root = 0;               // broadcast
  Coll coll = Coll::kAllreduce;   // what the call runs (the ring takes four collectives)
  // The caller (an engine) already orders each launch after the previous
  // one; otherwise a launch on another stream than the last waits for it.
  bool ordered = false;
};

// Pinned, device-mapped memory where the kernels say why they gave up. The
// completions of device calls keep it alive and read it once the kernels
// are done, so a mismatch raises on the rank that found it.
class IpcAbortState {
 public:
  IpcAbortState();  // throws rr::Error when the pinned allocation fails
  ~IpcAbortState();  // never throws
  IpcAbortState(const IpcAbortState&) = delete;
  IpcAbortState& operator=(const IpcAbortState&) = delete;
  volatile ipc::AbortInfo* host() const { return host_; }
  ipc::AbortInfo* device() const { return device_; }
  int code() const noexcept { return host_ ? host_->code : ipc::kAbortNone; }
  void abort() noexcept {
    if (host_ && host_->code == ipc::kAbortNone) host_->code = ipc::kAbortHost;
  }
  // Throws MismatchError (with both fingerprints), TimeoutError or Error for
  // a launch that gave up; returns when none did. `rank`: this rank.
  void raiseIfFailed(int rank) const;

 private:
  volatile ipc::AbortInfo* host_ = nullptr;
  ipc::AbortInfo* device_ = nullptr;
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
  // count/dtype/op on every rank (the first barrier checks the fingerprint:
  // a difference aborts every rank's kernels, and abortState() says why).
  // Capturable in a CUDA graph; a graph's replays must be ordered after the
  // calls before them, like any other call. Count 0 still meets the peers.
  // Not thread-safe. `algo` (IpcTuning::Algo) forces one-shot or two-shot;
  // kAuto follows the tuning. A forced one-shot that does not fit the buffer
  // is an ArgumentError.
  void run(const void* in, void* out, int64_t count, DType dtype, ReduceOp op,
           cudaStream_t stream, int algo = IpcTuning::kAuto, const IpcTag& tag = IpcTag());
  // The GPU ring over the same memory, with the same rules as run(), for
  // tag.coll: allreduce; reduce_scatter (in: count elements in N blocks as
  // RingSchedule cuts them, out: this rank's block); allgather (count: one
  // rank's block, out: N blocks in rank order); broadcast from tag.root
  // (count elements; the root reads in, every rank writes out).
  void runRing(const void* in, void* out, int64_t count, DType dtype, ReduceOp op,
               cudaStream_t stream, const IpcTag& tag = IpcTag());
  // True when the ring kernels fold this dtype with this op (and the path is on).
  bool ringSupports(DType dtype, ReduceOp op) const;
  // True when the ring kernels move this dtype (allgather, broadcast): any
  // element of 1, 2, 4 or 8 bytes.
  bool ringMoves(DType dtype) const;
  // True when a one-shot of `count` elements fits one half of the buffer.
  bool oneShotFits(int64_t count, DType dtype) const;

  // Which algorithm run() picks for this size ("one_shot" or "two_shot").
  const char* algorithmFor(int64_t count, DType dtype) const;

  // Make kernels spinning on a peer give up (e.g. the communicator aborts).
  // The object is unusable afterwards.
  void abort() noexcept;
  // A kernel timed out waiting for a peer, found a fingerprint mismatch, or
  // abort() was called.
  bool failed() const noexcept;
  // Null with one rank or when the path is off.
  std::shared_ptr<IpcAbortState> abortState() const { return abort_; }

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
  // The ring's staging region of each rank, beside the two halves.
  static constexpr size_t kRingBytes = size_t(32) << 20;

 private:
  IpcPlan plan(int64_t count, DType dtype, int algo) const;
  int64_t oneShotLimit() const;
  void releaseAll() noexcept;
  // Shared by every launch: refuses a failed object, orders the launch after
  // the previous one (eagerly; a captured launch is ordered by its graph),
  // and returns whether `stream` is being captured.
  bool beforeLaunch(cudaStream_t stream, bool ordered);
  void afterLaunch(cudaStream_t stream, bool capturing, bool ordered, const char* kind,
                   DType dtype, ReduceOp op, int blocks, int64_t count);
  void fillTag(ipc::Args& a, int64_t count, DType dtype, ReduceOp op, const IpcTag& tag,
               bool capturing) const;

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

  char* mine_ = nullptr;                      // control (ipc_layout.h), half 0, half 1, ring
  std::vector<char*> peers_;                  // [rank] == mine_
  std::shared_ptr<IpcAbortState> abort_;      // kernels and host both see it
  cudaStream_t lastStream_ = nullptr;
  bool haveLastStream_ = false;
  cudaEvent_t order_ = nullptr;               // orders a call after the previous on another stream
};

}  // namespace rr
