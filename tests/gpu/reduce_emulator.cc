// CPU emulator for the device reduction kernels (csrc/reduce/reduce_kernels.cuh).
//
// Runs every thread of every block of a launch, one after another (the
// kernels have no barriers and no thread reads what another writes), through
// the real dispatch (dispatch.h), the real split into head, 16-byte vectors and
// tail, and the real grid sizing, for every reducible dtype x legal op and the
// avg division; then compares the bytes with CpuReducer's and checks that no
// byte outside the span changed. What it catches: wrong heads, tails, block
// shares and bounds, and dispatch that picks the wrong traits or functor.
// What it cannot: the device's own arithmetic (tests/gpu/test_reduce_gpu.py
// compares that on a GPU) and timing.
//
// Usage: reduce_emulator [seed]   (exit 0 = all passed)
#define RR_REDUCE_EMULATE 1

#include <cuda_runtime.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

namespace emu {
struct Dim3 {
  unsigned x = 0, y = 0, z = 0;
};
Dim3 thread, block, grid;
}  // namespace emu

#undef __global__
#define __global__
#undef __launch_bounds__
#define __launch_bounds__(...)
#define threadIdx (emu::thread)
#define blockIdx (emu::block)
#define gridDim (emu::grid)
#include "common/dispatch.h"
#include "reduce/reduce_cpu.h"
#include "reduce/reduce_kernels.cuh"

using namespace rr;
using namespace rr::reduce;

namespace {

// Runs one launch of `grid` blocks the way CudaReducer would.
template <class Map>
void launch(int grid, typename Map::S* dst, const typename Map::S* a, const typename Map::S* b,
            int64_t n, Split s, Map map) {
  emu::grid.x = grid;
  for (int blk = 0; blk < grid; ++blk)
    for (int t = 0; t < kThreads; ++t) {
      emu::block.x = blk;
      emu::thread.x = t;
      mapKernel<Map>(dst, a, b, n, s.head, s.nvec, map);
    }
}

// CudaReducer::gridFor, with the cap as a parameter (1 and 3 blocks make
// every block walk many steps; 528 is an H200's 132 SMs x kBlocksPerSm).
int gridFor(int64_t threads, int maxBlocks) {
  const int64_t blocks = (threads + kThreads - 1) / kThreads;
  return static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(blocks, maxBlocks)));
}

struct Buffers {
  std::vector<char> a, b, dst, want;
  char *pa, *pb, *pd;
};

// n elements of es bytes at `off` elements past a 16-byte boundary, 64 poison
// bytes on each side of dst.
char* place(std::vector<char>& v, int64_t bytes, int off, size_t es) {
  v.assign(bytes + 256, 0x5a);
  const uintptr_t base = (reinterpret_cast<uintptr_t>(v.data()) + 64 + 15) & ~uintptr_t(15);
  return reinterpret_cast<char*>(base) + off * es;
}

int checkOne(DType dt, ReduceOp op, bool avg, int64_t n, const int (&off)[3], int maxBlocks,
             std::mt19937_64& gen) {
  const size_t es = dtypeSize(dt);
  Buffers B;
  B.pa = place(B.a, n * es, off[0], es);
  B.pb = place(B.b, n * es, off[1], es);
  B.pd = place(B.dst, n * es, off[2], es);
  for (int64_t i = 0; i < static_cast<int64_t>(n * es); ++i) {
    B.pa[i] = static_cast<char>(gen());
    B.pb[i] = static_cast<char>(gen());
  }
  B.want = B.dst;
  char* pw = B.want.data() + (B.pd - B.dst.data());
  CpuReducer cpu;
  if (avg) {
    std::memcpy(B.pd, B.pa, n * es);
    std::memcpy(pw, B.pa, n * es);
    cpu.finalize(pw, n, dt, ReduceOp::kAvg, 3);
    dispatchReducible(dt, [&](auto tr) {
      using Tr = decltype(tr);
      using S = typename Tr::Storage;
      if constexpr (Tr::kKind != Kind::kBool) {
        S* d = reinterpret_cast<S*>(B.pd);
        const Split s = splitFor(d, d, d, n, sizeof(S));
        launch(gridFor(threadsWanted<Tr>(n, s), maxBlocks), d, d, d, n, s, AvgMap<Tr>{3});
      }
    });
  } else {
    cpu.reduce(pw, B.pa, B.pb, n, dt, op);
    dispatchReduction(dt, op, [&](auto tr, auto fn) {
      using Tr = decltype(tr);
      using S = typename Tr::Storage;
      S* d = reinterpret_cast<S*>(B.pd);
      const S* a = reinterpret_cast<const S*>(B.pa);
      const S* b = reinterpret_cast<const S*>(B.pb);
      const Split s = splitFor(d, a, b, n, sizeof(S));
      launch(gridFor(threadsWanted<Tr>(n, s), maxBlocks), d, a, b, n, s,
             CombineMap<Tr, decltype(fn)>{fn});
    });
  }
  if (B.dst != B.want) {
    size_t i = 0;
    while (B.dst[i] == B.want[i]) ++i;
    const long long at = static_cast<long long>(i) - (B.pd - B.dst.data());
    std::printf("FAIL %s %s n=%lld offsets=%d,%d,%d maxBlocks=%d: byte %lld (element %lld)%s\n",
                dtypeName(dt), avg ? "avg-finalize" : opName(op), (long long)n, off[0], off[1],
                off[2], maxBlocks, at, at >= 0 ? at / (long long)es : -1,
                at < 0 || at >= (long long)(n * es) ? " outside the span" : "");
    return 1;
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  std::mt19937_64 gen(argc > 1 ? std::strtoull(argv[1], nullptr, 10) : 1);
  const int64_t counts[] = {0, 1, 2, 7, 17, 33, 1000, 4099, 20011};
  const int offsets[][3] = {{0, 0, 0}, {1, 1, 1}, {3, 3, 3}, {7, 7, 7}, {0, 1, 2}, {1, 0, 0}};
  const int caps[] = {1, 3, 528};
  int cases = 0, failures = 0;
  for (int c = 0; c < kNumDTypes; ++c) {
    const DType dt = static_cast<DType>(c);
    for (int o = 0; o <= kNumOps; ++o) {  // o == kNumOps: the avg division
      const bool avg = o == kNumOps;
      const ReduceOp op = avg ? ReduceOp::kAvg : static_cast<ReduceOp>(o);
      if (!opRefusal(dt, op).empty()) continue;
      for (int64_t n : counts)
        for (const auto& off : offsets)
          for (int cap : caps) {
            failures += checkOne(dt, op, avg, n, off, cap, gen);
            ++cases;
          }
    }
  }
  std::printf("%d cases, %d failed\n%s\n", cases, failures,
              failures ? "REDUCE EMULATOR FAILED" : "REDUCE EMULATOR OK");
  return failures ? 1 : 0;
}
