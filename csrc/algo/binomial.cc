#include "algo/binomial.h"

namespace rr {

std::string BinomialAlgorithm::refusal(const Call& call, int) const {
  if (call.coll != Coll::kBroadcast)
    return std::string("binomial runs broadcast only, not ") + collName(call.coll);
  return std::string();
}

void BinomialAlgorithm::run(const Call& c, AlgoEnv& env) {
  Transport& t = env.transport;
  const int n = t.size(), r = t.rank();
  const int64_t bytes = bytesOf(c, c.count);
  trace_ = StepTrace();
  trace_.algo = "binomial";
  char* buf = static_cast<char*>(c.out);
  if (r == c.root && c.in != c.out && bytes > 0) env.reducer.copy(buf, c.in, static_cast<size_t>(bytes));
  if (n == 1 || bytes == 0) return;

  const int v = (r - c.root + n) % n;
  auto real = [&](int rel) { return (rel + c.root) % n; };
  // The parent is v without its lowest set bit; the root's "lowest bit" is
  // the first power of two >= N, so it has every child.
  int low = 1;
  while (low < n && !(v & low)) low <<= 1;
  const int parent = v == 0 ? -1 : real(v - low);
  sends_.clear();
  const int64_t chunks = std::max<int64_t>(1, ceilDiv64(bytes, std::max<int64_t>(1, env.chunkBytes)));
  auto piece = [&](int64_t i) { return cutPiece(0, bytes, chunks, i); };
  auto children = [&](int64_t i) {
    sends_.clear();
    const Cut p = piece(i);
    for (int m = low >> 1; m >= 1; m >>= 1)
      if (v + m < n) sends_.add(real(v + m), buf + p.offset, p.count);
  };
  bool leaf = true;
  for (int m = low >> 1; m >= 1; m >>= 1) leaf = leaf && v + m >= n;

  traced(trace_, [&] {
    // Exchange i receives chunk i and forwards chunk i-1, so a rank with a
    // parent and children needs one exchange more than there are chunks.
    const int64_t total = (parent >= 0 && !leaf) ? chunks + 1 : chunks;
    for (int64_t i = 0; i < total; ++i) {
      const int64_t fwd = parent >= 0 ? i - 1 : i;
      if (!leaf && fwd >= 0 && fwd < chunks) children(fwd);
      else sends_.clear();
      Xfer in{parent, nullptr, 0};
      const bool receives = parent >= 0 && i < chunks;
      if (receives) {
        const Cut p = piece(i);
        in.data = buf + p.offset;
        in.bytes = static_cast<size_t>(p.count);
      }
      trace_.at("broadcast", static_cast<int>(i), static_cast<int>(total),
                sends_.size() ? sends_.data()[0].peer : -1, receives ? parent : -1);
      t.wait(t.start(sends_.data(), sends_.size(), &in, receives ? 1 : 0));
    }
  });
}

}  // namespace rr
