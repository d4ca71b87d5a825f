// Standalone self-test of UcxTransport, run as N plain processes that
// bootstrap through files (tests/test_ucx_native.py builds and launches it):
//   ucx_transport_selftest --scenario NAME --rank R --size N --dir DIR [--tls T] [--net D] ...
// Prints "OK <scenario>" or "EXPECTED <what>: <message>" lines; exits 1 on a failure.
// Scenarios of errors and faults are in ucx_selftest_errors.cc.
#include <set>

#include "ucx_selftest.h"

using namespace rr;
using namespace rrtest;

// One exchange of `n` bytes around the ring, zero-byte messages included.
void ringOnce(UcxTransport& t, int rank, int size, size_t n, uint64_t seq, bool poll) {
  std::vector<char> out(n), in(n, char(0xEE));
  fill(out, rank, seq);
  t.setTag(tagFor(seq));
  Xfer s{(rank + 1) % size, out.data(), n}, r{(rank - 1 + size) % size, in.data(), n};
  auto id = t.start(&s, 1, &r, 1);
  if (poll)
    while (!t.test(id)) {
    }
  else
    t.wait(id);
  EXPECT(matches(in, (rank - 1 + size) % size, seq), "ring of " + std::to_string(n) + " bytes");
}

namespace {

// ---- scenarios ----

void sizes(Env& e) {
  auto t = make(e);
  deadlineIn(*t, 60);
  const int r = e.rank, n = e.size;
  uint64_t seq = 0;
  const size_t list[] = {0, 1, 7, 4096, 6031, 65535, 65536, 65537, 1 << 20, (8 << 20) + 3,
                         (64 << 20) + 5};
  for (size_t bytes : list) ringOnce(*t, r, n, bytes, ++seq, false);
  for (size_t bytes : {size_t(0), size_t(100), size_t(300000)}) ringOnce(*t, r, n, bytes, ++seq, true);

  // Eight exchanges in flight, each its own tag, waited in reverse: they pair
  // by posting order, and each checks its own fingerprint.
  const size_t window[] = {0, 8, 4096, 1 << 20, 1, 70000, 0, 3 << 20};
  std::vector<std::vector<char>> outs(8), ins(8);
  std::vector<Transport::ExchangeId> ids(8);
  for (int k = 0; k < 8; ++k) {
    outs[k].resize(window[k]);
    ins[k].assign(window[k], 0);
    fill(outs[k], r, seq + k);
    t->setTag(tagFor(seq + k));
    Xfer s{(r + 1) % n, outs[k].data(), window[k]}, v{(r - 1 + n) % n, ins[k].data(), window[k]};
    ids[k] = t->start(&s, 1, &v, 1);
  }
  for (int k = 7; k >= 0; --k) t->wait(ids[k]);
  for (int k = 0; k < 8; ++k) EXPECT(matches(ins[k], (r - 1 + n) % n, seq + k), "window " + std::to_string(k));
  t->wait(ids[3]);  // a finished id waits at once
  seq += 8;

  // All pairs in one exchange, a different size for every ordered pair.
  auto pairBytes = [](int from, int to) { return size_t(1000 * (from + 1) + 100 * to) + (from == 0 && to == 1 ? (2 << 20) : 0); };
  std::vector<std::vector<char>> po(n), pi(n);
  std::vector<Xfer> ss, rs;
  ++seq;
  t->setTag(tagFor(seq, Coll::kAllToAll));
  for (int p = 0; p < n; ++p) {
    if (p == r) continue;
    po[p].resize(pairBytes(r, p));
    fill(po[p], r, seq * 100 + p);
    pi[p].assign(pairBytes(p, r), 0);
    ss.push_back({p, po[p].data(), po[p].size()});
    rs.push_back({p, pi[p].data(), pi[p].size()});
  }
  t->wait(t->start(ss.data(), int(ss.size()), rs.data(), int(rs.size())));
  for (int p = 0; p < n; ++p)
    if (p != r) EXPECT(matches(pi[p], p, seq * 100 + r), "all pairs from rank " + std::to_string(p));

  // Thousands of small exchanges, four in flight, on both channels.
  std::vector<uint64_t> ring(4, 0);
  std::vector<Transport::ExchangeId> q;
  std::vector<uint64_t> outv(2000), inv(2000);
  for (int k = 0; k < 2000; ++k) {
    outv[k] = uint64_t(r) << 32 | k;
    t->setTag(tagFor(++seq), k % 2 ? Channel::kPointToPoint : Channel::kCollective);
    Xfer s{(r + 1) % n, &outv[k], 8}, v{(r - 1 + n) % n, &inv[k], 8};
    q.push_back(t->start(&s, 1, &v, 1));
    if (q.size() == 4) {
      t->wait(q.front());
      q.erase(q.begin());
    }
  }
  for (auto id : q) t->wait(id);
  for (int k = 0; k < 2000; ++k) EXPECT(inv[k] == (uint64_t((r - 1 + n) % n) << 32 | k), "small " + std::to_string(k));
  e.fx->barrier();
  std::cout << "OK sizes" << std::endl;
}

// --bytes B from rank 0 to rank 1 (and back with --both); raw memory, so
// only the bytes we write are touched.
void huge(Env& e) {
  auto t = make(e);
  deadlineIn(*t, 300);
  const size_t n = std::stoull(e.arg("bytes", "1073741825"));
  const bool both = e.arg("both") == "1";
  auto t0 = SteadyClock::now();
  std::unique_ptr<char[]> buf(new char[n]);
  if (e.rank == 0) fill(buf.get(), n, 0, 9);
  else std::memset(buf.get(), 0, n);  // fault the pages in outside the timed part
  e.fx->barrier();
  auto t1 = SteadyClock::now();
  Xfer x{1 - e.rank, buf.get(), n};
  if (e.rank == 0) t->wait(t->start(&x, 1, nullptr, 0));
  else t->wait(t->start(nullptr, 0, &x, 1));
  const double dt = seconds(t1);
  if (e.rank == 1) EXPECT(matches(buf.get(), n, 0, 9), "huge message");
  if (both) {
    if (e.rank == 1) {
      fill(buf.get(), n, 1, 10);
      t->wait(t->start(&x, 1, nullptr, 0));
    } else {
      t->wait(t->start(nullptr, 0, &x, 1));
      EXPECT(matches(buf.get(), n, 1, 10), "huge message back");
    }
  }
  e.fx->barrier();
  std::cout << "OK huge " << n << " bytes in " << dt << " s (" << n / dt / 1e9 << " GB/s), total "
            << seconds(t0) << " s" << std::endl;
}

// One process: the tag layout, argument checks, and what this UCX supports.
void basics(Env& e) {
  using namespace ucxtag;
  static_assert(data(5, Channel::kCollective, 0) >> kRankShift == 5, "rank bits");
  EXPECT(source(data(1048575, Channel::kPointToPoint, ~0ull)) == 1048575, "source of the top rank");
  EXPECT((data(3, Channel::kCollective, ~0ull) & kDataMask) == data(3, Channel::kCollective, 0),
         "the fingerprint stays out of the matched bits");
  EXPECT((data(3, Channel::kCollective, 7) & kDataMask) !=
             (data(3, Channel::kPointToPoint, 7) & kDataMask),
         "channels never pair");
  EXPECT((data(3, Channel::kCollective, 7) & kNoticeMask) == 0 &&
             (notice(3) & kNoticeMask) == kNoticeMask,
         "data and notices never pair");
  EXPECT(source(notice(77)) == 77, "a notice names its source");
  UcxOptions none;
  auto t = std::make_unique<UcxTransport>(0, 1, AddressExchange(), none);
  std::cout << "SETTINGS " << t->settings() << std::endl;
  std::cout << "CUDA " << (t->cudaSupported() ? "yes" : "no") << std::endl;
  EXPECT(t->tagBits() == 42 && t->name() == "ucx", "identity");
  t->wait(t->start(nullptr, 0, nullptr, 0));
  char b = 0;
  Xfer self{0, &b, 1};
  bool threw = false;
  try {
    t->start(&self, 1, nullptr, 0);
  } catch (const ArgumentError& ex) {
    threw = true;
    std::cout << "EXPECTED self: " << ex.what() << std::endl;
  }
  EXPECT(threw, "a send to ourselves is refused");
  threw = false;
  try {
    t->wait(12345);
  } catch (const ArgumentError& ex) {
    threw = true;
    std::cout << "EXPECTED unknown id: " << ex.what() << std::endl;
  }
  EXPECT(threw, "an id never started is refused");
  const bool cuda = t->cudaSupported();
  t.reset();
  if (!cuda) {
    UcxOptions dev;
    dev.deviceBuffers = true;
    threw = false;
    try {
      UcxTransport d(0, 1, AddressExchange(), dev);
    } catch (const ArgumentError& ex) {
      threw = true;
      std::cout << "EXPECTED device: " << ex.what() << std::endl;
    }
    EXPECT(threw, "device buffers without CUDA transports are refused");
  }
  threw = false;
  try {
    UcxTransport two(0, 2, AddressExchange(), none);
  } catch (const ArgumentError&) {
    threw = true;
  }
  EXPECT(threw, "two ranks without an exchange");
  std::cout << "OK basics" << std::endl;
}

// Our listening TCP sockets, from /proc: UCX must listen only where told.
void security(Env& e) {
  auto t = make(e);
  deadlineIn(*t, 20);
  ringOnce(*t, e.rank, e.size, 1 << 20, 1, false);
  std::set<std::string> inodes;
  for (int fd = 0; fd < 4096; ++fd) {
    char link[128] = {};
    std::string path = "/proc/self/fd/" + std::to_string(fd);
    ssize_t n = readlink(path.c_str(), link, sizeof(link) - 1);
    if (n > 8 && std::strncmp(link, "socket:[", 8) == 0)
      inodes.insert(std::string(link + 8, link + n - 1));
  }
  for (const char* table : {"/proc/net/tcp", "/proc/net/tcp6"}) {
    std::ifstream f(table);
    std::string line;
    std::getline(f, line);
    while (std::getline(f, line)) {
      std::istringstream in(line);
      std::string sl, local, remote, state, q, tr, retr, uid, timeout, inode;
      in >> sl >> local >> remote >> state >> q >> tr >> retr >> uid >> timeout >> inode;
      if (state == "0A" && inodes.count(inode)) std::cout << "LISTEN " << table << " " << local << std::endl;
    }
  }
  e.fx->barrier();
  std::cout << "OK security" << std::endl;
}

}  // namespace

int main(int argc, char** argv) {
  Env e;
  try {
    e.args = rrtest::parseArgs(argc, argv);
    e.rank = std::stoi(e.arg("rank", "0"));
    e.size = std::stoi(e.arg("size", "1"));
    e.fx = std::make_unique<rrtest::FileExchange>(e.arg("dir", "."), e.rank, e.size);
    const std::string s = e.arg("scenario");
    if (s == "sizes") sizes(e);
    else if (s == "huge") huge(e);
    else if (s == "mismatch") mismatch(e);
    else if (s == "notice") notices(e);
    else if (s == "kill" || s == "stop") faults(e);
    else if (s == "abort") aborts(e);
    else if (s == "teardown") teardown(e);
    else if (s == "basics") basics(e);
    else if (s == "security") security(e);
    else fail("unknown scenario '" + s + "'");
  } catch (const std::exception& ex) {
    fail(std::string("uncaught: ") + ex.what());
  }
  return 0;
}
