// Measures UcxTransport as N plain processes (files bootstrap them; see
// ucx_bench.sh): a ping-pong, a bidirectional exchange loop, and a simple
// chunked ring all-reduce of float32 written against the transport, to set
// beside mpi_bench.c's MPI_Allreduce. Not part of the module.
//   ucx_bench --mode pingpong|exchange|allreduce --rank R --size N --dir D
//             [--chunk BYTES] [--max BYTES | --sizes B1,B2,..] [--tls ..] [--thresh ..] [--scheme ..]
// Prints one line per size: bytes, time (us, median and min of 5 timed loops), GB/s
// (one direction for pingpong/exchange; algbw and busbw for allreduce).
#include <algorithm>
#include <cstring>
#include <iostream>
#include <memory>

#include "common/fingerprint.h"
#include "transport/ucx_transport.h"
#include "ucx_test_util.h"

using namespace rr;
using SteadyClock = std::chrono::steady_clock;

namespace {

size_t segStart(size_t count, int n, int i) {
  size_t base = count / n, extra = count % n;
  return i * base + std::min<size_t>(i, extra);
}
size_t segLen(size_t count, int n, int i) { return count / n + (size_t(i) < count % n ? 1 : 0); }

// Reduce-scatter in chunks, two in flight (the transfer of chunk k+1
// overlaps the reduction of chunk k), then all-gather a segment per step.
void ringAllreduce(Transport& t, float* data, size_t count, size_t chunkElems, float* tmp) {
  const int n = t.size(), r = t.rank();
  if (n == 1) return;
  for (int s = 0; s < n - 1; ++s) {
    const int sendSeg = ((r - s) % n + n) % n, recvSeg = ((r - s - 1) % n + n) % n;
    const size_t sLen = segLen(count, n, sendSeg), rLen = segLen(count, n, recvSeg);
    float* sBase = data + segStart(count, n, sendSeg);
    float* rBase = data + segStart(count, n, recvSeg);
    const size_t chunks = std::max<size_t>(1, (std::max(sLen, rLen) + chunkElems - 1) / chunkElems);
    auto post = [&](size_t k) {
      size_t so = std::min(sLen, k * chunkElems), sl = std::min(chunkElems, sLen - so);
      size_t ro = std::min(rLen, k * chunkElems), rl = std::min(chunkElems, rLen - ro);
      return t.startRing(sBase + so, sl * 4, tmp + (k % 2) * chunkElems, rl * 4);
    };
    Transport::ExchangeId ids[2];
    ids[0] = post(0);
    for (size_t k = 0; k < chunks; ++k) {
      if (k + 1 < chunks) ids[(k + 1) % 2] = post(k + 1);
      t.wait(ids[k % 2]);
      size_t ro = std::min(rLen, k * chunkElems), rl = std::min(chunkElems, rLen - ro);
      float* dst = rBase + ro;
      const float* src = tmp + (k % 2) * chunkElems;
      for (size_t i = 0; i < rl; ++i) dst[i] += src[i];
    }
  }
  for (int s = 0; s < n - 1; ++s) {
    const int sendSeg = ((r - s + 1) % n + n) % n, recvSeg = ((r - s) % n + n) % n;
    t.wait(t.startRing(data + segStart(count, n, sendSeg), segLen(count, n, sendSeg) * 4,
                       data + segStart(count, n, recvSeg), segLen(count, n, recvSeg) * 4));
  }
}

}  // namespace

int main(int argc, char** argv) {
  auto a = rrtest::parseArgs(argc, argv);
  auto arg = [&](const char* k, const char* d) { return a.count(k) ? a[k] : std::string(d); };
  const int rank = std::stoi(arg("rank", "0")), size = std::stoi(arg("size", "1"));
  const std::string mode = arg("mode", "pingpong");
  const size_t maxBytes = std::stoull(arg("max", "268435456"));
  const size_t chunk = std::stoull(arg("chunk", "1048576"));
  rrtest::FileExchange fx(arg("dir", "."), rank, size);
  UcxOptions o;
  o.tls = arg("tls", "");
  o.rndvThresh = arg("thresh", "");
  o.rndvScheme = arg("scheme", "");
  if (a.count("extra")) {  // NAME=VALUE[,NAME=VALUE]
    std::string e = a["extra"];
    for (size_t p = 0; p < e.size();) {
      size_t c = e.find(',', p), q = e.find('=', p);
      if (c == std::string::npos) c = e.size();
      o.extra.push_back({e.substr(p, q - p), e.substr(q + 1, c - q - 1)});
      p = c + 1;
    }
  }
  UcxTransport t(rank, size, [&](const std::string& m) { return fx(m); }, o);
  t.setDeadline(Clock::time_point::max());
  if (rank == 0) std::cout << "# " << mode << ", " << size << " ranks; " << t.settings() << std::endl;

  std::vector<size_t> sizes;
  if (a.count("sizes")) {  // an explicit list: --sizes 4096,8192,...
    std::string l = a["sizes"];
    for (size_t p = 0; p < l.size();) {
      size_t c = l.find(',', p);
      if (c == std::string::npos) c = l.size();
      sizes.push_back(std::stoull(l.substr(p, c - p)));
      p = c + 1;
    }
  } else {
    for (size_t s = 8; s <= maxBytes; s *= (s < 65536 ? 8 : 4)) sizes.push_back(s);
    if (std::find(sizes.begin(), sizes.end(), size_t(65536)) == sizes.end()) sizes.push_back(65536);
  }
  std::sort(sizes.begin(), sizes.end());
  const size_t cap = std::max(sizes.back(), chunk) + 64;
  std::unique_ptr<char[]> b1(new char[cap]), b2(new char[cap]);
  std::memset(b1.get(), 1, cap);
  std::memset(b2.get(), 0, cap);
  const int peer = 1 - rank;

  for (size_t bytes : sizes) {
    auto once = [&] {
      if (mode == "pingpong") {
        Xfer x{peer, b1.get(), bytes};
        if (rank == 0) {
          t.wait(t.start(&x, 1, nullptr, 0));
          t.wait(t.start(nullptr, 0, &x, 1));
        } else {
          t.wait(t.start(nullptr, 0, &x, 1));
          t.wait(t.start(&x, 1, nullptr, 0));
        }
      } else if (mode == "exchange") {
        Xfer s{peer, b1.get(), bytes}, v{peer, b2.get(), bytes};
        t.wait(t.start(&s, 1, &v, 1));
      } else {
        ringAllreduce(t, reinterpret_cast<float*>(b1.get()), bytes / 4, chunk / 4,
                      reinterpret_cast<float*>(b2.get()));
      }
    };
    // Iterations per timed loop: about 50 ms worth, at least 2.
    auto w0 = SteadyClock::now();
    for (int i = 0; i < 3; ++i) once();
    double per = rrtest::seconds(w0) / 3;
    int iters = std::max(2, std::min(20000, int(0.05 / std::max(per, 1e-7))));
    // Every rank must run the same count: take rank 0's.
    std::string mine = std::to_string(iters);
    iters = std::stoi(fx(mine)[0]);
    std::vector<double> loops;
    for (int rep = 0; rep < 5; ++rep) {
      auto t0 = SteadyClock::now();
      for (int i = 0; i < iters; ++i) once();
      loops.push_back(rrtest::seconds(t0) / iters);
    }
    std::sort(loops.begin(), loops.end());
    // The median, and the fastest loop (what a shared machine lets through).
    double tm = loops[2], best = loops[0];
    if (mode == "pingpong") tm /= 2, best /= 2;  // one way
    if (rank == 0) {
      std::printf("%12zu  %12.2f us (min %10.2f)", bytes, tm * 1e6, best * 1e6);
      if (mode == "allreduce")
        std::printf("  algbw %7.3f GB/s  busbw %7.3f GB/s\n", bytes / tm / 1e9,
                    bytes / tm / 1e9 * 2 * (size - 1) / size);
      else
        std::printf("  %7.3f GB/s\n", bytes / tm / 1e9);
      std::fflush(stdout);
    }
  }
  fx.barrier();
  return 0;
}
