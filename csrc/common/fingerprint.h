// The fingerprint of one call: which collective, its sequence number, dtype,
// op, count and root, packed into 64 bits that travel on every message as
// its tag. Pure arithmetic, no I/O.
//
// Layout (low bits first, so a narrow wire keeps the most telling fields):
//   bits  0-15  sequence number mod 2^16
//   bits 16-20  collective
//   bits 21-25  dtype
//   bits 26-29  op; for broadcast, gather and scatter (which reduce
//               nothing) the root's low 4 bits instead
//   bits 30-63  a hash of the whole sequence number, count and root
// A wire of fewer than 64 bits keeps the low 30 bits exactly and folds the
// hash into what is left; below 30 bits it drops high sequence bits first.
#pragma once

#include <cstdint>
#include <string>

#include "common/dtypes.h"

// pack() also runs inside the CUDA-IPC kernels: a call captured in a CUDA
// graph numbers itself on the device (ipc/ipc_kernels.cuh).
#if defined(__CUDACC__)
#define RR_FP_HD __host__ __device__
#else
#define RR_FP_HD
#endif

namespace rr {

struct Fingerprint {
  uint64_t seq = 0;
  Coll coll = Coll::kAllreduce;
  DType dtype = DType::kUInt8;
  ReduceOp op = ReduceOp::kSum;
  int64_t count = 0;  // elements; for calls with per-rank sizes, a hash of the size list
  int64_t root = 0;   // root rank, or the peer pair for send/recv
};

namespace fp {

constexpr int kExactBits = 30;

RR_FP_HD inline uint64_t mix(uint64_t x) {  // splitmix64's finaliser: every input bit moves every output bit
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ull;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebull;
  x ^= x >> 31;
  return x;
}

RR_FP_HD inline uint64_t mask(int bits) { return bits >= 64 ? ~0ull : (1ull << bits) - 1; }

RR_FP_HD inline uint64_t pack(const Fingerprint& f) {
  uint64_t exact = (f.seq & 0xffffu) | (uint64_t(static_cast<int>(f.coll)) & 31u) << 16 |
                   (uint64_t(static_cast<int>(f.dtype)) & 31u) << 21 |
                   (uint64_t(static_cast<int>(f.op)) & 15u) << 26;
  uint64_t h = mix(f.seq ^ mix(static_cast<uint64_t>(f.count) ^ mix(static_cast<uint64_t>(f.root))));
  return exact | (h << kExactBits);
}

// A hash of a list of per-rank sizes, to stand in Fingerprint::count.
template <class It>
int64_t hashSizes(It begin, It end) {
  uint64_t h = 0x5252;
  for (It i = begin; i != end; ++i) h = mix(h ^ static_cast<uint64_t>(*i));
  return static_cast<int64_t>(h >> 1);
}

// The tag as a wire of `bits` bits carries it.
inline uint64_t fold(uint64_t tag, int bits) {
  if (bits >= 64) return tag;
  if (bits >= kExactBits) {
    uint64_t hash = mix(tag >> kExactBits) & mask(bits - kExactBits);
    return (tag & mask(kExactBits)) | hash << kExactBits;
  }
  const int seqBits = bits > 14 ? bits - 14 : 0;
  uint64_t kind = (tag >> 16) & mask(14);
  return ((kind << seqBits) | (tag & mask(seqBits))) & mask(bits);
}

// "allreduce #12 (float32, sum)" as far as a `bits`-bit folded tag tells.
inline std::string describe(uint64_t folded, int bits) {
  uint64_t seq, kind;
  int seqBits;
  if (bits >= kExactBits) {
    seqBits = 16;
    seq = folded & 0xffffu;
    kind = (folded >> 16) & mask(14);
  } else {
    seqBits = bits > 14 ? bits - 14 : 0;
    seq = folded & mask(seqBits);
    kind = (folded >> seqBits) & mask(14);
  }
  Coll c = static_cast<Coll>(kind & 31u);
  DType d = static_cast<DType>((kind >> 5) & 31u);
  ReduceOp o = static_cast<ReduceOp>((kind >> 10) & 15u);
  std::string s = std::string(collName(c)) + " #" + std::to_string(seq) +
                  (seqBits < 16 ? " (mod 2^" + std::to_string(seqBits) + ")" : std::string()) +
                  " (" + dtypeName(d);
  if (c == Coll::kAllreduce || c == Coll::kReduceScatter || c == Coll::kReduce)
    s += std::string(", ") + opName(o);
  else if (c == Coll::kBroadcast || c == Coll::kGather || c == Coll::kScatter)
    s += ", root " + std::to_string(static_cast<int>(o)) + " mod 16";
  else if (c == Coll::kSend)  // send or recv: the op field holds the tag's low bits
    s += ", tag " + std::to_string(static_cast<int>(o)) + " mod 16";
  return s + ")";
}

// Why two folded tags differ, in words: the fields that differ are named;
// when only the hash differs, the count, root or full sequence number does.
inline std::string difference(uint64_t mine, uint64_t theirs, int bits) {
  if (mine == theirs) return std::string();
  uint64_t low = bits >= kExactBits ? mask(kExactBits) : mask(bits);
  if ((mine & low) == (theirs & low)) return "the count, root or per-rank sizes differ";
  return "this rank is in " + describe(mine, bits) + ", the peer in " + describe(theirs, bits);
}

}  // namespace fp
}  // namespace rr
