// Helpers shared by the UCX self-test's scenario files.
#pragma once

#include <signal.h>

#include <atomic>
#include <cstring>
#include <iostream>
#include <memory>
#include <thread>

#include "common/errors.h"
#include "common/fingerprint.h"
#include "transport/ucx_transport.h"
#include "ucx_test_util.h"

using namespace rr;
using rrtest::seconds;
using SteadyClock = std::chrono::steady_clock;

namespace rrtest {

struct Env {
  int rank = 0, size = 1;
  std::map<std::string, std::string> args;
  std::unique_ptr<rrtest::FileExchange> fx;
  std::string arg(const std::string& k, const std::string& dflt = "") const {
    auto it = args.find(k);
    return it == args.end() ? dflt : it->second;
  }
};

[[noreturn]] inline void fail(const std::string& why) {
  std::cout << "FAIL " << why << std::endl;
  std::exit(1);
}
#define EXPECT(cond, why) \
  do {                    \
    if (!(cond)) fail(std::string(#cond) + ": " + (why)); \
  } while (0)

inline std::unique_ptr<UcxTransport> make(Env& e, UcxOptions o = {}) {
  if (!e.arg("tls").empty()) o.tls = e.arg("tls");
  if (!e.arg("net").empty()) o.netDevices = e.arg("net");
  rrtest::FileExchange* fx = e.fx.get();
  auto t = std::make_unique<UcxTransport>(e.rank, e.size,
                                          [fx](const std::string& m) { return (*fx)(m); }, o);
  if (e.rank == 0) std::cout << "SETTINGS " << t->settings() << std::endl;
  return t;
}

inline uint64_t tagFor(uint64_t seq, Coll c = Coll::kAllreduce, int64_t count = 0) {
  Fingerprint f;
  f.seq = seq;
  f.coll = c;
  f.dtype = DType::kFloat32;
  f.count = count;
  return fp::pack(f);
}

inline void deadlineIn(Transport& t, double s) {
  t.setDeadline(Clock::now() + std::chrono::duration_cast<Clock::duration>(
                                   std::chrono::duration<double>(s)));
}

// Word-wise pattern: cheap enough for GiBs, different per source and call.
inline uint64_t word(int src, uint64_t salt, size_t i) {
  return (i + salt * 0x10001) * 0x9E3779B97F4A7C15ull ^ (uint64_t(src + 1) << 56);
}
inline void fill(char* b, size_t n, int src, uint64_t salt) {
  for (size_t i = 0; i + 8 <= n; i += 8) {
    uint64_t w = word(src, salt, i);
    std::memcpy(b + i, &w, 8);
  }
  for (size_t i = n & ~size_t(7); i < n; ++i) b[i] = char(word(src, salt, i));
}
inline bool matches(const char* b, size_t n, int src, uint64_t salt) {
  for (size_t i = 0; i + 8 <= n; i += 8) {
    uint64_t w;
    std::memcpy(&w, b + i, 8);
    if (w != word(src, salt, i)) return false;
  }
  for (size_t i = n & ~size_t(7); i < n; ++i)
    if (b[i] != char(word(src, salt, i))) return false;
  return true;
}
inline void fill(std::vector<char>& b, int src, uint64_t salt) { fill(b.data(), b.size(), src, salt); }
inline bool matches(const std::vector<char>& b, int src, uint64_t salt) {
  return matches(b.data(), b.size(), src, salt);
}

}  // namespace rrtest

void mismatch(rrtest::Env& e);
void notices(rrtest::Env& e);
void faults(rrtest::Env& e);
void aborts(rrtest::Env& e);
void teardown(rrtest::Env& e);
void ringOnce(rr::UcxTransport& t, int rank, int size, size_t n, uint64_t seq, bool poll);
