#include "algo/select.h"

#include <cstring>

#include "common/errors.h"

namespace rr {
namespace {

// When a rule applies. Evaluated on every call, so no strings here: the
// reasons are written only when someone asks why (explain()).
enum class When { kAlways, kSmall, kOneShot, kGpuRingBySize, kMedium, kShmOneShot, kShm };

struct Rule {
  const char* algo;
  When when;
  const char* what;  // the rest of the reason
};

// The automatic preferences per collective, best first. A rule's algorithm
// is taken when it is offered, its condition holds and it does not refuse.
const Rule kAllreduce[] = {
    {"ipc_one_shot", When::kOneShot, "one write to every peer, one barrier"},
    {"gpu_ring", When::kGpuRingBySize, "one ring keeps every link busy"},
    {"ipc_two_shot", When::kAlways, "reduce-scatter and all-gather through peer memory"},
    {"gpu_ring", When::kAlways, "the ring over peer memory"},
    {"shm_one_shot", When::kShmOneShot, "every rank folds all inputs from shared memory: one wait"},
    {"shm_two_shot", When::kShm, "reduce-scatter and all-gather through shared memory"},
    {"recursive_doubling", When::kSmall, "log2(N) dependent steps"},
    {"gather_fold", When::kSmall, "N-1 steps of whole inputs"},
    {"rabenseifner", When::kMedium, "recursive halving and doubling: 2 log2(N) steps"},
    {"ring", When::kAlways, "the bandwidth-optimal chunked ring"},
};
// Device buffers whose GPUs map each other's memory take the ring kernel
// first: one launch, flags in peer memory, every link busy.
const Rule kReduceScatter[] = {{"gpu_ring", When::kAlways, "the ring over peer memory, one kernel"},
                               {"recursive_halving", When::kSmall, "log2(N) dependent steps"},
                               {"ring", When::kAlways, "the chunked ring"}};
const Rule kAllgather[] = {{"gpu_ring", When::kAlways, "the ring over peer memory, one kernel"},
                           {"recursive_doubling", When::kSmall, "log2(N) dependent steps"},
                           {"ring", When::kAlways, "the chunked ring"}};
const Rule kBroadcast[] = {{"gpu_ring", When::kAlways, "a chain over peer memory, one kernel"},
                           {"binomial", When::kSmall, "a tree of log2(N) steps"},
                           {"ring", When::kAlways, "a pipelined chain along the ring"}};
const Rule kBarrier[] = {{"recursive_doubling", When::kAlways, "dissemination: log2(N) steps"},
                         {"ring", When::kAlways, "an all-gather of one byte along the ring"}};
const Rule kReduce[] = {{"direct", When::kSmall, "every rank sends to the root"},
                        {"ring", When::kAlways, "a ring reduce-scatter, then segments to the root"},
                        {"direct", When::kAlways, "every rank sends to the root"}};
const Rule kAllToAll[] = {{"pairwise", When::kAlways, "N-1 pairwise exchanges"}};
const Rule kDirect[] = {{"direct", When::kAlways, "straight to or from the peers"}};

template <size_t N>
std::pair<const Rule*, size_t> span(const Rule (&r)[N]) {
  return {r, N};
}

std::pair<const Rule*, size_t> rulesFor(Coll c) {
  switch (c) {
    case Coll::kAllreduce: return span(kAllreduce);
    case Coll::kReduceScatter: return span(kReduceScatter);
    case Coll::kAllgather: return span(kAllgather);
    case Coll::kBroadcast: return span(kBroadcast);
    case Coll::kBarrier: return span(kBarrier);
    case Coll::kReduce: return span(kReduce);
    case Coll::kAllToAll: return span(kAllToAll);
    default: return span(kDirect);
  }
}

bool powerOfTwo(int n) { return n > 0 && (n & (n - 1)) == 0; }

int64_t payloadBytes(const Call& c) {
  switch (c.coll) {
    case Coll::kAllgather:
    case Coll::kGather:
    case Coll::kScatter:
    case Coll::kAllToAll: return bytesOf(c, sumOf(c.counts));
    default: return bytesOf(c, c.count);
  }
}

int64_t oneShotLimit(int n, const SelectPolicy& p) {
  return p.oneShotBytes > 0 ? p.oneShotBytes : (int64_t(1) << 20) / std::max(1, n - 1);
}

int64_t shmOneShotLimit(int n, const SelectPolicy& p) {
  // Measured on 4-16 ranks of one host: the one-shot reads N x the bytes, the
  // two-shot 2 x at one more wait; they cross near 4 KiB / (N - 1) (see
  // docs/benchmarks.md, shared memory).
  return p.shmOneShotBytes > 0 ? p.shmOneShotBytes : (int64_t(4) << 10) / std::max(1, n - 1);
}

bool holds(When w, int64_t b, int n, const SelectPolicy& p) {
  switch (w) {
    case When::kAlways: return true;
    case When::kSmall: return b <= p.smallBytes;
    case When::kOneShot: return b <= oneShotLimit(n, p);
    case When::kGpuRingBySize: return p.gpuRingBytes > 0 && b >= p.gpuRingBytes && n > 2;
    case When::kMedium: return p.mediumBytes > 0 && b <= p.mediumBytes && powerOfTwo(n);
    case When::kShmOneShot: return b <= shmOneShotLimit(n, p) && (p.shmBytes == 0 || b <= p.shmBytes);
    case When::kShm: return p.shmBytes == 0 || b <= p.shmBytes;
  }
  return false;
}

std::string bytesText(int64_t b) { return std::to_string(b) + " B"; }

std::string reason(const Rule& r, int64_t b, int n, const SelectPolicy& p) {
  const std::string size = bytesText(b);
  std::string why;
  switch (r.when) {
    case When::kAlways: why = size; break;
    case When::kSmall: why = size + " <= small_bytes (" + bytesText(p.smallBytes) + ")"; break;
    case When::kOneShot: why = size + " <= the one-shot limit (" + bytesText(oneShotLimit(n, p)) + ")"; break;
    case When::kGpuRingBySize:
      why = size + " >= gpu_ring_bytes (" + bytesText(p.gpuRingBytes) + ") on " +
            std::to_string(n) + " GPUs";
      break;
    case When::kMedium:
      why = size + " <= medium_bytes (" + bytesText(p.mediumBytes) + "), " + std::to_string(n) +
            " ranks (a power of two)";
      break;
    case When::kShmOneShot:
      why = size + " <= the shared-memory one-shot limit (" + bytesText(shmOneShotLimit(n, p)) + ")";
      break;
    case When::kShm:
      why = p.shmBytes == 0 ? size + ", every rank on this machine"
                            : size + " <= shm_bytes (" + bytesText(p.shmBytes) + ")";
      break;
  }
  return std::string(r.algo) + ": " + why + ", " + std::to_string(n) + " ranks: " + r.what;
}

Algorithm* findOffered(const std::vector<Algorithm*>& offered, const char* name) {
  for (Algorithm* a : offered)
    if (std::strcmp(name, a->name()) == 0) return a;
  return nullptr;
}

std::string offeredNames(const std::vector<Algorithm*>& offered) {
  std::string s;
  for (Algorithm* a : offered) s += std::string(s.empty() ? "" : ", ") + a->name();
  return s;
}

}  // namespace

Choice selectAlgorithm(const Call& call, int n, const std::vector<Algorithm*>& offered,
                       const SelectPolicy& policy, bool explain) {
  // A forced choice: the call's own, else the setting's when it serves this collective.
  const bool perCall = !call.algo.empty();
  const std::string& forced = perCall ? call.algo : policy.forced;
  if (!forced.empty()) {
    Algorithm* a = findOffered(offered, forced.c_str());
    if (a) {
      std::string no = a->refusal(call, n);
      if (no.empty())
        return {a, explain ? forced + ": forced by " + (perCall ? "the call" : "RINGREDUCE_ALGO")
                           : std::string()};
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
  const int64_t b = payloadBytes(call);
  auto rules = rulesFor(call.coll);
  for (size_t i = 0; i < rules.second; ++i) {
    const Rule& r = rules.first[i];
    if (!holds(r.when, b, n, policy)) continue;
    Algorithm* a = findOffered(offered, r.algo);
    if (a && a->refusal(call, n).empty())
      return {a, explain ? reason(r, b, n, policy) : std::string()};
  }
  std::string why;
  for (Algorithm* a : offered) {
    std::string no = a->refusal(call, n);
    if (!no.empty()) why += std::string(why.empty() ? "" : "; ") + a->name() + ": " + no;
  }
  RR_THROW(ArgumentError, std::string("no algorithm here can run this ") + collName(call.coll) +
                              (why.empty() ? std::string() : " (" + why + ")"));
}

Algorithm* ChoiceCache::choose(const Call& call, int n, const std::vector<Algorithm*>& offered,
                               const SelectPolicy& policy, uint64_t epoch) {
  const bool cacheable = call.algo.empty() && call.counts.empty() && call.recvCounts.empty();
  if (cacheable && algo_ && offered_ == &offered && coll_ == call.coll && dtype_ == call.dtype &&
      op_ == call.op && count_ == call.count && root_ == call.root && epoch_ == epoch)
    return algo_;
  Algorithm* a = selectAlgorithm(call, n, offered, policy).algo;
  if (cacheable) {
    algo_ = a;
    offered_ = &offered;
    coll_ = call.coll;
    dtype_ = call.dtype;
    op_ = call.op;
    count_ = call.count;
    root_ = call.root;
    epoch_ = epoch;
  }
  return a;
}

}  // namespace rr
