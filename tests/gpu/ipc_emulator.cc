// CPU emulator for the IPC all-reduce kernels (csrc/ipc/ipc_kernels.cuh).
//
// Every CUDA thread of every block of every rank is a coroutine on one OS
// thread; a seeded random scheduler switches between them at __syncthreads,
// at every flag poll and at random data loads. Each rank has its own queue of
// launches (its stream): a rank starts its next call as soon as its previous
// kernel finished, whatever its peers are doing, exactly the freedom a GPU
// has. The emulator runs the real kernel code with the real plan
// (ipc_plan.h) and argument layout (makeArgs), then checks every output
// bitwise against a host fold in rank order and checks that ranks agree.
//
// What it catches: wrong offsets, tiles that overlap or leave gaps, flag
// values that do not line up (deadlock), a buffer reused while a peer still
// needs it (wrong bits under some interleaving). What it cannot catch:
// weak-memory reordering (the emulation is sequentially consistent) and
// timing; those need the GPU test (tests/gpu/ipc_worker.py).
//
// Usage: ipc_emulator [seed] [cases]   (exit 0 = all passed)
#define RR_IPC_EMULATE 1
#define RR_IPC_THREADS 32

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <ucontext.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <vector>

namespace emu {

struct Dim3 {
  unsigned x = 0, y = 0, z = 0;
};

struct Block;

struct Fiber {
  ucontext_t ctx;
  std::vector<char> stack;
  Dim3 tid, bid;
  Block* block = nullptr;
  bool done = false;
  std::function<void()> body;
};

struct Block {
  int threads = 0;
  int arrived = 0;
  uint64_t generation = 0;
};

ucontext_t schedulerCtx;
Fiber* current = nullptr;
std::mt19937_64 rng;
uint64_t idleYields = 0;  // yields since the last flag store or finished fiber
const uint64_t kDeadlockYields = 20'000'000;

void yield() {
  ++idleYields;
  swapcontext(&current->ctx, &schedulerCtx);
}
void maybeYield() {
  if ((rng() & 7) == 0) yield();
}
void progress() { idleYields = 0; }

void syncthreads() {
  Block* b = current->block;
  const uint64_t gen = b->generation;
  if (++b->arrived == b->threads) {
    b->arrived = 0;
    ++b->generation;
    yield();
    return;
  }
  while (b->generation == gen) yield();
}

void trampoline(unsigned lo, unsigned hi) {
  Fiber* f = reinterpret_cast<Fiber*>((uintptr_t(hi) << 32) | uintptr_t(lo));
  f->body();
  f->done = true;
  progress();
  swapcontext(&f->ctx, &schedulerCtx);
}

}  // namespace emu

// The CUDA built-ins the kernels use, on top of the emulator.
#undef __global__
#define __global__
#undef __shared__
#define __shared__ static  // one copy for everything; only the never-set fail flag uses it
#undef __launch_bounds__
#define __launch_bounds__(x)
#undef __grid_constant__
#define __grid_constant__
#define threadIdx (emu::current->tid)
#define blockIdx (emu::current->bid)
#define __syncthreads() emu::syncthreads()
inline void __threadfence_system() {}
template <class T>
T __ldcg(const T* p) {
  emu::maybeYield();
  return *p;
}

namespace rr {
namespace ipc {
inline void storeRelease(uint64_t* p, uint64_t v) {
  emu::maybeYield();
  *p = v;
  emu::progress();
}
inline uint64_t loadRelaxed(const uint64_t* p) {
  emu::yield();
  if (emu::idleYields > emu::kDeadlockYields) {
    std::fprintf(stderr, "DEADLOCK: a flag never reached its value (%llu idle yields)\n",
                 (unsigned long long)emu::idleYields);
    std::exit(3);
  }
  return *p;
}
inline void fenceAcqRel() {}
inline uint64_t globalTimer() { return 0; }
}  // namespace ipc
}  // namespace rr

#include "ipc/ipc_kernels.cuh"
#include "ipc/ipc_plan.h"

using namespace rr;
using namespace rr::ipc;

namespace {

using KernelFn = void (*)(Args);

struct Launch {
  KernelFn fn;
  Args args;
  int blocks;
};

// Runs every rank's queue of launches to completion under a random schedule.
void runAll(std::vector<std::deque<Launch>>& queues) {
  const int n = static_cast<int>(queues.size());
  std::vector<std::vector<std::unique_ptr<emu::Fiber>>> live(n);
  std::vector<std::vector<std::unique_ptr<emu::Block>>> blocks(n);
  std::vector<std::unique_ptr<Launch>> running(n);
  for (;;) {
    // Start a rank's next kernel once its previous one is over (stream order).
    for (int r = 0; r < n; ++r) {
      bool busy = false;
      for (auto& f : live[r]) busy |= !f->done;
      if (busy) continue;
      live[r].clear();
      blocks[r].clear();
      if (queues[r].empty()) continue;
      running[r] = std::make_unique<Launch>(queues[r].front());
      queues[r].pop_front();
      Launch* L = running[r].get();
      for (int b = 0; b < L->blocks; ++b) {
        blocks[r].push_back(std::make_unique<emu::Block>());
        emu::Block* blk = blocks[r].back().get();
        blk->threads = kThreads;
        for (int t = 0; t < kThreads; ++t) {
          auto f = std::make_unique<emu::Fiber>();
          f->tid.x = t;
          f->bid.x = b;
          f->block = blk;
          f->stack.resize(128 << 10);
          f->body = [L] { L->fn(L->args); };
          getcontext(&f->ctx);
          f->ctx.uc_stack.ss_sp = f->stack.data();
          f->ctx.uc_stack.ss_size = f->stack.size();
          f->ctx.uc_link = nullptr;
          const uintptr_t p = reinterpret_cast<uintptr_t>(f.get());
          makecontext(&f->ctx, reinterpret_cast<void (*)()>(emu::trampoline), 2,
                      unsigned(p & 0xffffffffu), unsigned(p >> 32));
          live[r].push_back(std::move(f));
        }
      }
    }
    std::vector<emu::Fiber*> ready;
    for (int r = 0; r < n; ++r)
      for (auto& f : live[r])
        if (!f->done) ready.push_back(f.get());
    if (ready.empty()) return;
    emu::current = ready[emu::rng() % ready.size()];
    swapcontext(&emu::schedulerCtx, &emu::current->ctx);
  }
}

float up(int dtype, const void* p, int64_t i) {
  if (dtype == 2) return static_cast<const float*>(p)[i];
  const unsigned short u = static_cast<const unsigned short*>(p)[i];
  return __bfloat162float(__ushort_as_bfloat16(u));
}

template <class Op>
KernelFn pickOp(int dtype, bool avg, bool oneShot, bool vec, int nranks) {
#define RR_EMU_PICK(Tr, K)                                                                 \
  if (nranks <= 2) return oneShot ? oneShotKernel<Tr, Op, false, K, 2> : twoShotKernel<Tr, Op, false, K, 2>; \
  if (nranks <= 4) return oneShot ? oneShotKernel<Tr, Op, false, K, 4> : twoShotKernel<Tr, Op, false, K, 4>; \
  return oneShot ? oneShotKernel<Tr, Op, false, K, 8> : twoShotKernel<Tr, Op, false, K, 8>;
  if (avg) {
    if (dtype == 2) return oneShot ? oneShotKernel<F32, OpSum, true, 4, 4> : twoShotKernel<F32, OpSum, true, 4, 4>;
    return oneShot ? oneShotKernel<BF16, OpSum, true, 1, 8> : twoShotKernel<BF16, OpSum, true, 1, 8>;
  }
  if (dtype == 2) {
    if (vec) { RR_EMU_PICK(F32, 4) }
    RR_EMU_PICK(F32, 1)
  }
  if (vec) { RR_EMU_PICK(BF16, 8) }
  RR_EMU_PICK(BF16, 1)
#undef RR_EMU_PICK
}

struct Case {
  int nranks;
  int64_t count;
  int dtype;     // 2 = float32, 1 = bfloat16 (DType codes)
  int op;        // 0 sum, 3 max, 4 avg
  int algo;      // 0 auto, 1 one-shot, 2 two-shot
  int maxBlocks;
  bool inPlace;
  bool misaligned;  // rank 1's pointers start one element past a 16-byte boundary
};

std::string describe(const Case& c) {
  char buf[200];
  std::snprintf(buf, sizeof(buf), "N=%d count=%lld dtype=%d op=%d algo=%d blocks<=%d inplace=%d misaligned=%d",
                c.nranks, (long long)c.count, c.dtype, c.op, c.algo, c.maxBlocks, c.inPlace,
                c.misaligned);
  return buf;
}

}  // namespace

int main(int argc, char** argv) {
  const uint64_t seed = argc > 1 ? std::strtoull(argv[1], nullptr, 10) : 1;
  const int nCases = argc > 2 ? std::atoi(argv[2]) : 40;
  emu::rng.seed(seed);
  std::mt19937_64 gen(seed * 7919 + 1);

  // Small halves force many two-shot rounds with few elements.
  const size_t halfBytes = 4096;
  const int maxN = 4;
  std::vector<std::vector<char>> mem(maxN);
  std::vector<char*> bases(maxN);
  for (int q = 0; q < maxN; ++q) {
    mem[q].assign(kFlagsBytes + 2 * halfBytes + 64, 0);
    bases[q] = reinterpret_cast<char*>((reinterpret_cast<uintptr_t>(mem[q].data()) + 63) & ~uintptr_t(63));
  }
  volatile int abortFlag = 0;

  // All cases run back to back per rank, like calls on one stream, so calls
  // of different shapes overlap across ranks. Flags persist, as on the GPU.
  int failures = 0;
  for (int nranks = 2; nranks <= maxN; ++nranks) {
    std::memset(bases[0], 0, 0);
    for (int q = 0; q < maxN; ++q) std::memset(bases[q], 0, kFlagsBytes);
    uint64_t flagBase = 0, calls = 0;
    std::vector<Case> cases;
    const int64_t counts[] = {1, 2, 3, 5, 8, 17, 31, 64, 100, 257, 1000, 1500, 3001};
    for (int i = 0; i < nCases; ++i) {
      Case c;
      c.nranks = nranks;
      c.count = counts[gen() % (sizeof(counts) / sizeof(counts[0]))];
      c.dtype = (gen() & 1) ? 2 : 1;
      const int ops[] = {0, 3, 4};
      c.op = ops[gen() % 3];
      c.algo = int(gen() % 3);
      c.maxBlocks = 1 + int(gen() % 3);
      c.inPlace = gen() & 1;
      c.misaligned = (gen() % 4) == 0;
      cases.push_back(c);
    }
    struct Data {
      std::vector<std::vector<char>> in, out;  // per rank, with slack for misalignment
      std::vector<char*> inPtr, outPtr;
    };
    std::vector<Data> data(cases.size());
    std::vector<std::deque<Launch>> queues(nranks);
    for (size_t i = 0; i < cases.size(); ++i) {
      const Case& c = cases[i];
      const int64_t es = c.dtype == 2 ? 4 : 2;
      const bool avg = c.op == 4;
      Data& d = data[i];
      d.in.resize(nranks);
      d.out.resize(nranks);
      d.inPtr.resize(nranks);
      d.outPtr.resize(nranks);
      IpcPlanInput pin;
      pin.count = c.count;
      pin.elemBytes = es;
      pin.nranks = nranks;
      pin.halfBytes = halfBytes;
      pin.maxBlocks = c.maxBlocks;
      pin.threads = kThreads;
      pin.algo = c.algo;
      pin.oneShotMaxBytes = 512;
      pin.roundBytes = 1 << 20;
      const IpcPlan g = planIpc(pin);
      for (int r = 0; r < nranks; ++r) {
        const bool mis = c.misaligned && r == 1;
        d.in[r].assign(c.count * es + 64, 0);
        d.out[r].assign(c.count * es + 64, 0);
        char* ib = reinterpret_cast<char*>((reinterpret_cast<uintptr_t>(d.in[r].data()) + 15) & ~uintptr_t(15));
        char* ob = reinterpret_cast<char*>((reinterpret_cast<uintptr_t>(d.out[r].data()) + 15) & ~uintptr_t(15));
        d.inPtr[r] = ib + (mis ? es : 0);
        d.outPtr[r] = c.inPlace ? d.inPtr[r] : ob + (mis ? es : 0);
        std::uniform_real_distribution<float> u(-4.f, 4.f);
        for (int64_t k = 0; k < c.count; ++k) {
          const float x = u(gen);
          if (es == 4) reinterpret_cast<float*>(d.inPtr[r])[k] = x;
          else reinterpret_cast<unsigned short*>(d.inPtr[r])[k] = __bfloat16_as_ushort(__float2bfloat16_rn(x));
        }
        const bool vec = reinterpret_cast<uintptr_t>(d.inPtr[r]) % 16 == 0 &&
                         reinterpret_cast<uintptr_t>(d.outPtr[r]) % 16 == 0;
        KernelFn fn = c.op == 3 ? pickOp<OpMax>(c.dtype, false, g.oneShot, vec, nranks)
                                : pickOp<OpSum>(c.dtype, avg, g.oneShot, vec, nranks);
        Launch L;
        L.fn = fn;
        L.blocks = g.blocks;
        L.args = makeArgs(g, d.inPtr[r], d.outPtr[r], c.count, r, nranks, flagBase, bases.data(),
                          halfBytes, calls, &abortFlag, ~uint64_t(0));
        queues[r].push_back(L);
      }
      flagBase += g.barriers;
      ++calls;
    }
    // Expected values before the run: in-place calls overwrite the inputs.
    std::vector<std::vector<float>> expect(cases.size());
    for (size_t i = 0; i < cases.size(); ++i) {
      const Case& c = cases[i];
      for (int64_t k = 0; k < c.count; ++k) {
        float acc = up(c.dtype, data[i].inPtr[0], k);
        for (int q = 1; q < nranks; ++q) {
          const float x = up(c.dtype, data[i].inPtr[q], k);
          acc = c.op == 3 ? (acc < x ? x : acc) : acc + x;
        }
        if (c.op == 4) acc = acc / float(nranks);
        if (c.dtype == 1) acc = __bfloat162float(__float2bfloat16_rn(acc));
        expect[i].push_back(acc);
      }
    }
    runAll(queues);
    for (size_t i = 0; i < cases.size(); ++i) {
      const Case& c = cases[i];
      int bad = 0;
      for (int r = 0; r < nranks && bad < 3; ++r) {
        for (int64_t k = 0; k < c.count && bad < 3; ++k) {
          const float got = up(c.dtype, data[i].outPtr[r], k);
          if (std::memcmp(&got, &expect[i][k], 4) != 0) {
            std::printf("FAIL %s: rank %d element %lld = %.9g, expected %.9g\n",
                        describe(c).c_str(), r, (long long)k, got, expect[i][k]);
            ++bad;
          }
        }
      }
      failures += bad != 0;
    }
    std::printf("N=%d: %zu calls checked\n", nranks, cases.size());
  }
  std::printf(failures ? "EMULATOR FAILED (%d calls)\n" : "EMULATOR OK\n", failures);
  return failures ? 1 : 0;
}
