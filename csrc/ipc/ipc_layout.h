// Layout of one rank's CUDA-IPC allocation, and the small structs the host,
// the kernels and the CPU emulator share. Pure: no CUDA, so all three agree.
//
// One cudaMalloc per rank, mapped by every peer:
//   flags    [kIpcMaxBlocks][kIpcMaxRanks] u64    written by peers (barriers)
//   fps      [kIpcMaxBlocks][kIpcMaxRanks][2] {fingerprint, kernel} u64  written by peers
//   ring     [kRingMaxChannels][2 orders] {ready, credit}   written by ring neighbours
//   ctl      Ctl                                  this rank's own kernels only
//   half 0 | half 1                               one-shot / two-shot staging
//   ring staging                                  gpu_ring slots
// Everything before the halves is zeroed once at setup and never reset.
#pragma once

#include <cstddef>
#include <cstdint>

namespace rr {
namespace ipc {

constexpr int kIpcMaxRanks = 8;
constexpr int kIpcMaxBlocks = 160;
constexpr int kRingMaxChannels = 64;
constexpr size_t kPageBytes = 4096;
constexpr size_t pageUp(size_t b) { return (b + kPageBytes - 1) / kPageBytes * kPageBytes; }

constexpr size_t kFlagsOffset = 0;
constexpr size_t kFlagsBytes = pageUp(size_t(kIpcMaxBlocks) * kIpcMaxRanks * 8);
constexpr size_t kFpOffset = kFlagsOffset + kFlagsBytes;
constexpr size_t kFpBytes = pageUp(size_t(kIpcMaxBlocks) * kIpcMaxRanks * 2 * 2 * 8);
// Each ring counter on its own 128-byte line: one is polled here while a
// neighbour stores into another.
constexpr size_t kRingFlagStride = 128;
constexpr size_t kRingFlagsOffset = kFpOffset + kFpBytes;
constexpr size_t kRingFlagsBytes = pageUp(size_t(kRingMaxChannels) * 2 * 2 * kRingFlagStride);
constexpr size_t kCtlOffset = kRingFlagsOffset + kRingFlagsBytes;

// The rank's device-side call state. Kernels read it at their start and the
// last block of each launch advances it, so a launch recorded once in a CUDA
// graph still gets fresh flag values on every replay.
struct Ctl {
  uint64_t flagBase;  // last barrier value used by any kernel
  uint64_t calls;     // launches so far: picks the half, and the device-side call number
  unsigned done;      // blocks of the current launch that have finished
  unsigned claim;     // 0 until one thread has described a mismatch
  // gpu_ring chunks so far per channel and ring order (a link: the
  // predecessor and successor of that order), sent and received: they
  // differ per rank (a broadcast's root only sends), and each equals the
  // neighbour's opposite count after every call.
  uint64_t ringSent[kRingMaxChannels][2];
  uint64_t ringRecvd[kRingMaxChannels][2];
};
constexpr size_t kCtlBytes = pageUp(sizeof(Ctl));
constexpr size_t kControlBytes = kCtlOffset + kCtlBytes;  // the halves start here

// Host-mapped pinned memory: how the kernels tell the host why they gave up.
enum AbortCode : int { kAbortNone = 0, kAbortHost = 1, kAbortTimeout = 2, kAbortMismatch = 3 };
enum KernelKind : int { kKernelOneShot = 1, kKernelTwoShot = 2, kKernelRing = 3 };
struct AbortInfo {
  int code;        // AbortCode; kernels poll it, the host sets kAbortHost
  int peer;        // kAbortMismatch: the rank whose call differed
  int block;       // and the block that saw it
  int kindMine;    // KernelKind here and there: ranks that forced different
  int kindTheirs;  // algorithms have equal fingerprints but different kernels
  int pad;
  uint64_t mine;    // this rank's fingerprint of the call
  uint64_t theirs;  // the peer's
};

}  // namespace ipc
}  // namespace rr
