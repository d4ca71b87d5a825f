#include "algo/select.h"

#include "common/errors.h"

namespace rr {
namespace {

struct Rule {
  const char* algo;
  bool applies;
  std::string reason;
};

std::string bytesText(int64_t b) { return std::to_string(b) + " B"; }

bool powerOfTwo(int n) { return n > 0 && (n & (n - 1)) == 0; }

int64_t payloadBytes(const Call& c) {
  switch (c.coll) {
    case Coll::kAllgather:
    case Coll::kGather:
    case Coll::kScatter: return bytesOf(c, sumOf(c.counts));
    case Coll::kAllToAll: return bytesOf(c, sumOf(c.counts));
    default: return bytesOf(c, c.count);
  }
}

// The automatic preferences for one call, best first. Each rule's
// algorithm is taken when it is offered, its condition holds and it does
// not refuse the call.
std::vector<Rule> rulesFor(const Call& c, int n, const SelectPolicy& p) {
  const int64_t b = payloadBytes(c);
  const std::string size = bytesText(b);
  const bool small = b <= p.smallBytes;
  const std::string smallWhy = size + (small ? " <= " : " > ") + "small_bytes (" +
                               bytesText(p.smallBytes) + ")";
  switch (c.coll) {
    case Coll::kAllreduce: {
      const int64_t oneShot = p.oneShotBytes > 0 ? p.oneShotBytes : (int64_t(1) << 20) / std::max(1, n - 1);
      return {
          {"ipc_one_shot", b <= oneShot, size + " <= the one-shot limit (" + bytesText(oneShot) + ")"},
          {"gpu_ring", p.gpuRingBytes > 0 && b >= p.gpuRingBytes && n > 2,
           size + " >= gpu_ring_bytes (" + bytesText(p.gpuRingBytes) + ") on " + std::to_string(n) +
               " GPUs: one ring keeps every link busy"},
          {"ipc_two_shot", true, size + " > the one-shot limit; two-shot over peer memory"},
          {"gpu_ring", true, "peer memory, and the two-shot is not offered"},
          {"recursive_doubling", small, smallWhy + ": log2(N) dependent steps"},
          {"gather_fold", small, smallWhy + ": N-1 steps of whole inputs"},
          {"rabenseifner", p.mediumBytes > 0 && b <= p.mediumBytes && powerOfTwo(n),
           size + " <= medium_bytes (" + bytesText(p.mediumBytes) + ") and " + std::to_string(n) +
               " ranks (a power of two)"},
          {"ring", true, smallWhy + ": the bandwidth-optimal chunked ring"},
      };
    }
    case Coll::kReduceScatter:
      return {{"recursive_halving", small, smallWhy + ": log2(N) dependent steps"},
              {"ring", true, "the chunked ring"}};
    case Coll::kAllgather:
      return {{"recursive_doubling", small, smallWhy + ": log2(N) dependent steps"},
              {"ring", true, "the chunked ring"}};
    case Coll::kBroadcast:
      return {{"binomial", small, smallWhy + ": a tree of log2(N) steps"},
              {"ring", true, "a pipelined chain along the ring"}};
    case Coll::kBarrier:
      return {{"recursive_doubling", true, "dissemination: log2(N) steps"},
              {"ring", true, "an all-gather of one byte along the ring"}};
    case Coll::kReduce:
      return {{"direct", small, smallWhy + ": every rank sends to the root"},
              {"ring", true, "a ring reduce-scatter, then the segments go to the root"},
              {"direct", true, "every rank sends to the root"}};
    case Coll::kAllToAll:
      return {{"pairwise", true, "N-1 pairwise exchanges"}};
    case Coll::kGather:
    case Coll::kScatter:
    case Coll::kSend:
    case Coll::kRecv:
    case Coll::kBootstrap:
      return {{"direct", true, "straight to or from the peers"}};
  }
  return {};
}

Algorithm* findOffered(const std::vector<Algorithm*>& offered, const std::string& name) {
  for (Algorithm* a : offered)
    if (name == a->name()) return a;
  return nullptr;
}

std::string offeredNames(const std::vector<Algorithm*>& offered) {
  std::string s;
  for (Algorithm* a : offered) s += std::string(s.empty() ? "" : ", ") + a->name();
  return s;
}

}  // namespace

Choice selectAlgorithm(const Call& call, int n, const std::vector<Algorithm*>& offered,
                       const SelectPolicy& policy) {
  // A forced choice: the call's own, else the setting's when it serves this collective.
  const bool perCall = !call.algo.empty();
  const std::string forced = perCall ? call.algo : policy.forced;
  if (!forced.empty()) {
    Algorithm* a = findOffered(offered, forced);
    if (a) {
      std::string no = a->refusal(call, n);
      if (no.empty()) return {a, forced + ": forced by " + (perCall ? "the call" : "RINGREDUCE_ALGO")};
      if (perCall)
        RR_THROW(ArgumentError, "algorithm '" + forced + "' cannot run this " + collName(call.coll) +
                                    ": " + no);
      // The setting names an algorithm for the collectives it serves; this
      // is not one of them, and the automatic choice is made below.
    } else if (perCall) {
      RR_THROW(ArgumentError, "unknown algorithm '" + forced + "' for " + collName(call.coll) +
                                  " here; this engine offers: " + offeredNames(offered));
    }
  }
  for (const Rule& r : rulesFor(call, n, policy)) {
    if (!r.applies) continue;
    Algorithm* a = findOffered(offered, r.algo);
    if (a && a->refusal(call, n).empty()) return {a, std::string(r.algo) + ": " + r.reason};
  }
  std::string why;
  for (Algorithm* a : offered) {
    std::string no = a->refusal(call, n);
    if (!no.empty()) why += std::string(why.empty() ? "" : "; ") + a->name() + ": " + no;
  }
  RR_THROW(ArgumentError, std::string("no algorithm here can run this ") + collName(call.coll) +
                              (why.empty() ? std::string() : " (" + why + ")"));
}

}  // namespace rr
