// CPU emulator for the CUDA-IPC kernels: one-shot and two-shot
// (csrc/ipc/ipc_kernels.cuh) and the GPU ring (csrc/ipc/ring_kernels.cuh),
// with the flag protocol, the device-side call state and the fingerprint
// check they share (csrc/ipc/ipc_device.cuh).
//
// Every CUDA thread of every block of every rank is a coroutine on one OS
// thread; a seeded random scheduler switches between them at __syncthreads,
// at every flag poll and at random data loads. Each rank has its own queue of
// launches (its stream): a rank starts its next call as soon as its previous
// kernel finished, whatever its peers are doing, exactly the freedom a GPU
// has. The emulator runs the real kernel code with the real plans (ipc_plan.h,
// ring_plan.h) and argument packing, then checks every output bitwise
// against a host fold in the documented order (rank order for one-/two-shot,
// ring order for the ring) and checks that ranks agree.
//
// The calls of one world mix all three kernels back to back (the ring for
// allreduce, reduce_scatter, allgather and broadcast), in and out of
// place, aligned and not, with host-numbered fingerprints (eager calls) and
// device-numbered ones (a "graph": the same launch queued several times, its
// flag values and half coming from the device alone). Then worlds that end
// in a mismatch (different counts, hence different block counts, or
// different kernels) must end on every rank with the mismatch code and no
// deadlock.
//
// What it catches: wrong offsets, tiles or segments that overlap or leave
// gaps, flag values that do not line up (deadlock), a buffer or slot reused
// while a peer still needs it (wrong bits under some interleaving), a replay
// that reuses a flag value, a mismatch that leaves a block waiting. What it
// cannot catch: weak-memory reordering (the emulation is sequentially
// consistent) and timing; those need the GPU tests (tests/gpu/).
//
// Usage: ipc_emulator [seed] [calls]   (exit 0 = all passed)
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
  Dim3 tid, bid, grid;
  Block* block = nullptr;
  bool done = false;
  std::function<void()> body;
};

struct Block {
  int threads = 0;
  int arrived = 0;
  uint64_t generation = 0;
  alignas(16) unsigned char shared[256];  // the block's __shared__ state
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
#undef __launch_bounds__
#define __launch_bounds__(x)
#undef __grid_constant__
#define __grid_constant__
#define threadIdx (emu::current->tid)
#define blockIdx (emu::current->bid)
#define gridDim (emu::current->grid)
#define __syncthreads() emu::syncthreads()
inline void __threadfence_system() {}
inline void __threadfence() {}
template <class T>
T __ldcg(const T* p) {
  emu::maybeYield();
  return *p;
}
inline unsigned atomicAdd(unsigned* p, unsigned v) {
  const unsigned old = *p;
  *p = old + v;
  return old;
}
inline unsigned atomicCAS(unsigned* p, unsigned expect, unsigned v) {
  const unsigned old = *p;
  if (old == expect) *p = v;
  return old;
}
template <class T>
T* emuBlockState() {
  static_assert(sizeof(T) <= sizeof(emu::Block::shared), "block state fits");
  return reinterpret_cast<T*>(emu::current->block->shared);
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
// Widens the windows between seeing a flag and acting on it, where a peer
// that ran ahead could overwrite what is about to be read.
inline void fenceAcqRel() {
  if ((emu::rng() & 3) == 0)
    for (unsigned i = emu::rng() % 24; i > 0; --i) emu::yield();
}
inline uint64_t globalTimer() { return 0; }
}  // namespace ipc
}  // namespace rr

#include "ipc/ipc_kernels.cuh"
#include "ipc/ring_kernels.cuh"

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
          f->grid.x = L->blocks;
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

enum Kind : int { kOneShot = 1, kTwoShot = 2, kRing = 3 };
// DType codes: 2 float32, 1 bfloat16, 6 int32, 4 int8; ops: 0 sum, 1 prod, 3 max, 4 avg, 5 band.
struct Case {
  int kind;
  int dtype;
  int op;
  int64_t count;
  bool inPlace;
  bool misaligned;  // rank 1's pointers start one element past a 16-byte boundary
  int replays;      // > 1: a "graph": the same launch queued again, numbered on the device
  int maxBlocks;
  RingPlanInput ring;
  RingColl coll = RingColl::kAllreduce;  // the ring's collective (kind kRing)
  int root = 0;                          // broadcast
};

bool folds(const Case& c) { return c.coll == RingColl::kAllreduce || c.coll == RingColl::kReduceScatter; }

std::string describe(const Case& c) {
  char buf[240];
  std::snprintf(buf, sizeof(buf),
                "kind=%d coll=%d root=%d count=%lld dtype=%d op=%d blocks<=%d inplace=%d "
                "misaligned=%d replays=%d ring(ch<=%d chunk=%lld slots=%d orders=%d)",
                c.kind, int(c.coll), c.root, (long long)c.count, c.dtype, c.op, c.maxBlocks, c.inPlace, c.misaligned,
                c.replays, c.ring.maxChannels, (long long)c.ring.chunkBytes, c.ring.slots,
                c.ring.orders);
  return buf;
}

int64_t elemBytes(int dtype) { return dtype == 2 || dtype == 6 ? 4 : dtype == 1 ? 2 : 1; }

// Calls f(Tr{}, Op{}, std::integral_constant<bool, avg>) for the case's dtype and op.
template <class F>
void withTypes(int dtype, int op, F&& f) {
  auto ops = [&](auto tr) {
    using Tr = decltype(tr);
    switch (op) {
      case 0: f(tr, IpcSum{}, std::false_type{}); break;
      case 1: f(tr, IpcProd{}, std::false_type{}); break;
      case 3: f(tr, IpcMax{}, std::false_type{}); break;
      case 4: f(tr, IpcSum{}, std::true_type{}); break;
      default:
        if constexpr (std::is_integral<typename Tr::A>::value) f(tr, IpcBand{}, std::false_type{});
        break;
    }
  };
  switch (dtype) {
    case 2: ops(F32{}); break;
    case 1: ops(BF16{}); break;
    case 6: ops(I32{}); break;
    default: ops(I8{}); break;
  }
}

// `kind`: the kernel the plan chose (a one-shot that does not fit runs two-shot).
KernelFn pick(const Case& c, int kind, int nranks, bool vec) {
  KernelFn fn = nullptr;
  withTypes(c.dtype, c.op, [&](auto tr, auto op, auto avg) {
    using Tr = decltype(tr);
    using Op = decltype(op);
    constexpr bool kAvg = decltype(avg)::value;
    constexpr int KV = 16 / int(sizeof(typename Tr::S));
    if (kind == kKernelRing && !folds(c)) {  // bytes only, as ipc_ring.cu picks them
      using M = std::conditional_t<sizeof(typename Tr::S) == 4, I32,
                                   std::conditional_t<sizeof(typename Tr::S) == 2, BF16, U8>>;
      fn = vec ? ringKernel<M, IpcSum, false, KV> : ringKernel<M, IpcSum, false, 1>;
      return;
    }
    if (kind == kKernelRing) {
      fn = vec ? ringKernel<Tr, Op, kAvg, KV> : ringKernel<Tr, Op, kAvg, 1>;
      return;
    }
    const bool one = kind == kKernelOneShot;
    if (!vec) {
      fn = one ? oneShotKernel<Tr, Op, kAvg, 1, 8> : twoShotKernel<Tr, Op, kAvg, 1, 8>;
    } else if (nranks <= 2) {
      fn = one ? oneShotKernel<Tr, Op, kAvg, KV, 2> : twoShotKernel<Tr, Op, kAvg, KV, 2>;
    } else {
      fn = one ? oneShotKernel<Tr, Op, kAvg, KV, 4> : twoShotKernel<Tr, Op, kAvg, KV, 4>;
    }
  });
  return fn;
}

// Elements of in and of rank r's out.
int64_t inCount(const Case& c) { return c.count; }
int64_t outCount(const Case& c, int nranks, int r) {
  if (c.kind != kRing) return c.count;
  switch (c.coll) {
    case RingColl::kReduceScatter: return ringBlockElems(c.count, nranks, r);
    case RingColl::kAllgather: return c.count * nranks;
    default: return c.count;
  }
}

RingPlan ringPlanOf(const Case& c, int nranks, int64_t stagingBytes) {
  RingPlanInput pin = c.ring;
  pin.count = ringSplitElems(c.coll, c.count, nranks);
  pin.elemBytes = elemBytes(c.dtype);
  pin.nranks = nranks;
  if (stagingBytes > 0) pin.stagingBytes = stagingBytes;
  return planRing(pin);
}

// The documented results, rank r's. One-/two-shot: fold in rank order in A,
// avg divides, round once. Ring: per element, fold from the ring position
// after the owner of its segment (allreduce) or block (reduce_scatter),
// rounding to S at every hop, avg dividing at the last; allgather and
// broadcast copy.
std::vector<char> expected(const Case& c, int nranks, const std::vector<char*>& in, int r,
                           int64_t stagingBytes) {
  const int64_t es = elemBytes(c.dtype);
  std::vector<char> out(outCount(c, nranks, r) * es);
  if (c.kind == kRing && c.coll == RingColl::kAllgather) {
    for (int q = 0; q < nranks; ++q) std::memcpy(out.data() + q * c.count * es, in[q], c.count * es);
    return out;
  }
  if (c.kind == kRing && c.coll == RingColl::kBroadcast) {
    std::memcpy(out.data(), in[c.root], c.count * es);
    return out;
  }
  withTypes(c.dtype, c.op, [&](auto tr, auto op, auto avg) {
    using Tr = decltype(tr);
    using Op = decltype(op);
    using S = typename Tr::S;
    using A = typename Tr::A;
    constexpr bool kAvg = decltype(avg)::value;
    auto x = [&](int q, int64_t i) { return reinterpret_cast<const S*>(in[q])[i]; };
    S* o = reinterpret_cast<S*>(out.data());
    if (c.kind != kRing) {
      for (int64_t i = 0; i < c.count; ++i) {
        A acc = Tr::up(x(0, i));
        for (int q = 1; q < nranks; ++q) acc = Op::f(acc, Tr::up(x(q, i)));
        if (kAvg) acc = acc / A(nranks);
        o[i] = Tr::down(acc);
      }
      return;
    }
    // Element i of in folded along ring order `order` from position p0.
    auto fold = [&](int64_t i, int order, int p0) {
      S acc = x(ringRankAt(p0, order, nranks), i);
      for (int h = 1; h < nranks; ++h) {
        A v = Op::f(Tr::up(acc), Tr::up(x(ringRankAt(p0 + h, order, nranks), i)));
        if (kAvg && h == nranks - 1) v = v / A(nranks);
        acc = Tr::down(v);
      }
      return acc;
    };
    const RingPlan g = ringPlanOf(c, nranks, stagingBytes);
    if (c.coll == RingColl::kReduceScatter) {
      const int64_t off = ringBlockOffset(c.count, nranks, r);
      for (int64_t j = 0; j < outCount(c, nranks, r); ++j) {
        const int order = ringOrderOf(g.orders, int(j / g.chanElems));
        o[j] = fold(off + j, order, ringPosition(r, order, nranks) + 1);
      }
      return;
    }
    const int64_t pack = 16 / es;
    for (int ch = 0; ch < g.channels; ++ch) {
      const int order = ringOrderOf(g.orders, ch);
      const int64_t lo = int64_t(ch) * g.chanElems;
      const int64_t m = ringChannelElems(g.chanElems, c.count, ch);
      for (int64_t k = 0; k < ringRounds(g.chunkElems, m, nranks); ++k) {
        const RingRound rd = ringRound(g.chunkElems, m, nranks, k, pack);
        for (int seg = 0; seg < nranks; ++seg) {
          const int64_t sLo = seg * rd.segElems;
          const int64_t sHi = std::min(rd.n, sLo + rd.segElems);
          for (int64_t j = sLo; j < sHi; ++j) o[lo + rd.base + j] = fold(lo + rd.base + j, order, seg);
        }
      }
    }
  });
  return out;
}

// One world: N ranks' memory (flags, call state, halves, ring region).
struct World {
  int nranks;
  int64_t halfBytes, ringBytes;
  std::vector<std::vector<char>> mem;
  std::vector<char*> bases;
  std::vector<AbortInfo> info;
  World(int n, int64_t half, int64_t ring) : nranks(n), halfBytes(half), ringBytes(ring) {
    mem.resize(n);
    bases.resize(n);
    info.assign(n, AbortInfo{});
    for (int q = 0; q < n; ++q) {
      mem[q].assign(kControlBytes + 2 * half + ring + 64, 0);
      bases[q] = reinterpret_cast<char*>((reinterpret_cast<uintptr_t>(mem[q].data()) + 63) & ~uintptr_t(63));
    }
  }
  Args args(int r, const Case& c, char* in, char* out, int* blocks) {
    Args a = makeArgs(in, out, c.count, r, nranks, bases.data(), halfBytes,
                      reinterpret_cast<Ctl*>(bases[r] + kCtlOffset), &info[r], ~uint64_t(0));
    const int64_t es = elemBytes(c.dtype);
    if (c.kind == kRing) {
      const RingPlan g = ringPlanOf(c, nranks, ringBytes);
      setRingPlan(a, g, int64_t(kControlBytes) + 2 * halfBytes, c.coll, c.root);
      *blocks = g.channels;
    } else {
      IpcPlanInput pin;
      pin.count = c.count;
      pin.elemBytes = es;
      pin.nranks = nranks;
      pin.halfBytes = halfBytes;
      pin.maxBlocks = c.maxBlocks;
      pin.threads = kThreads;
      pin.algo = c.kind;
      pin.oneShotMaxBytes = 512;
      pin.roundBytes = 1 << 20;
      const IpcPlan g = planIpc(pin);
      setPlan(a, g);
      *blocks = g.blocks;
    }
    return a;
  }
};

Case randomCase(std::mt19937_64& gen, int nranks) {
  static const int64_t counts[] = {0, 1, 2, 3, 5, 8, 17, 31, 64, 100, 257, 1000, 1500, 3001};
  Case c{};
  c.count = counts[gen() % (sizeof(counts) / sizeof(counts[0]))];
  if (c.count < nranks && (gen() & 1)) c.count = nranks - 1;
  c.kind = 1 + int(gen() % 3);
  const int floats[] = {2, 1}, ints[] = {6, 4};
  const bool integer = c.kind == kRing && (gen() % 3) == 0;
  c.dtype = integer ? ints[gen() & 1] : floats[gen() & 1];
  const int ops[] = {0, 3, 4, 1, 5};
  c.op = ops[gen() % (integer ? 5 : 4)];
  c.inPlace = gen() & 1;
  c.misaligned = (gen() % 4) == 0 && elemBytes(c.dtype) > 1;
  c.replays = (gen() % 4) == 0 ? 2 + int(gen() % 2) : 1;
  if (c.replays > 1) c.inPlace = false;  // each replay then has the same expected result
  c.maxBlocks = 1 + int(gen() % 3);
  c.ring.maxChannels = 1 + int(gen() % 3);
  c.ring.chunkBytes = int64_t(16) << (gen() % 4);  // 16 .. 128 bytes: many rounds and slots
  c.ring.slots = 2 + int(gen() % 3);
  c.ring.minChannelBytes = 64;
  c.ring.orders = 1 + int(gen() & 1);
  if (c.kind == kRing) {
    const RingColl colls[] = {RingColl::kAllreduce, RingColl::kAllreduce, RingColl::kReduceScatter,
                              RingColl::kAllgather, RingColl::kBroadcast};
    c.coll = colls[gen() % 5];
    c.root = int(gen() % nranks);
    if (c.coll == RingColl::kReduceScatter) c.inPlace = false;
  }
  return c;
}

struct Buffers {
  std::vector<std::vector<char>> in, out;
  std::vector<char*> inPtr, outPtr;
};

void fill(std::mt19937_64& gen, const Case& c, char* p) {
  std::uniform_real_distribution<float> u(c.op == 1 ? 0.5f : -4.f, c.op == 1 ? 1.5f : 4.f);
  for (int64_t k = 0; k < c.count; ++k) {
    const float x = u(gen);
    switch (c.dtype) {
      case 2: reinterpret_cast<float*>(p)[k] = x; break;
      case 1: reinterpret_cast<unsigned short*>(p)[k] = __bfloat16_as_ushort(__float2bfloat16_rn(x)); break;
      case 6: reinterpret_cast<int32_t*>(p)[k] = int32_t(gen() % 201) - 100; break;
      default: reinterpret_cast<int8_t*>(p)[k] = int8_t(int(gen() % 21) - 10); break;
    }
  }
}

Buffers buffers(std::mt19937_64& gen, const Case& c, int nranks) {
  Buffers d;
  const int64_t es = elemBytes(c.dtype);
  d.in.resize(nranks);
  d.out.resize(nranks);
  for (int r = 0; r < nranks; ++r) {
    const bool mis = c.misaligned && r == 1;
    d.in[r].assign(inCount(c) * es + 64, 0);
    d.out[r].assign(outCount(c, nranks, r) * es + 64, 0x5a);  // poisoned: an unwritten element shows
    char* ib = reinterpret_cast<char*>((reinterpret_cast<uintptr_t>(d.in[r].data()) + 15) & ~uintptr_t(15));
    char* ob = reinterpret_cast<char*>((reinterpret_cast<uintptr_t>(d.out[r].data()) + 15) & ~uintptr_t(15));
    d.outPtr.push_back(ob + (mis ? es : 0));
    d.inPtr.push_back(ib + (mis ? es : 0));
    if (c.inPlace && c.kind == kRing && c.coll == RingColl::kAllgather)
      d.inPtr[r] = d.outPtr[r] + int64_t(r) * c.count * es;  // this rank's block of out
    else if (c.inPlace)
      d.outPtr[r] = d.inPtr[r];
    fill(gen, c, d.inPtr[r]);
  }
  return d;
}

void queueCase(World& w, const Case& c, Buffers& d, uint64_t hostSeq,
               std::vector<std::deque<Launch>>& queues) {
  for (int r = 0; r < w.nranks; ++r) {
    Launch L;
    L.args = w.args(r, c, d.inPtr[r], d.outPtr[r], &L.blocks);
    const uintptr_t in = reinterpret_cast<uintptr_t>(d.inPtr[r]), out = reinterpret_cast<uintptr_t>(d.outPtr[r]);
    const bool vec = L.args.kind == kKernelRing
                         ? ringVectorOk(c.coll, in, out, c.count, w.nranks, elemBytes(c.dtype))
                         : in % 16 == 0 && out % 16 == 0;
    L.fn = pick(c, L.args.kind, w.nranks, vec);
    Fingerprint shape;
    const Coll colls[] = {Coll::kAllreduce, Coll::kReduceScatter, Coll::kAllgather, Coll::kBroadcast};
    shape.coll = c.kind == kRing ? colls[int(c.coll)] : Coll::kAllreduce;
    shape.root = c.coll == RingColl::kBroadcast ? c.root : 0;
    shape.dtype = static_cast<DType>(c.dtype);
    shape.op = static_cast<ReduceOp>(c.op);
    shape.count = c.count;
    Fingerprint host = shape;
    host.seq = hostSeq;
    setTag(L.args, shape, fp::pack(host), c.replays > 1);
    for (int k = 0; k < c.replays; ++k) queues[r].push_back(L);
  }
}

// Back-to-back calls of every kind on one world; every output checked.
int runWorld(uint64_t seed, int nranks, int nCalls) {
  std::mt19937_64 gen(seed * 7919 + nranks);
  World w(nranks, 4096, 8192);
  std::vector<Case> cases;
  std::vector<Buffers> data;
  std::vector<std::vector<std::vector<char>>> expect;  // [call][rank]
  std::vector<std::deque<Launch>> queues(nranks);
  for (int i = 0; i < nCalls; ++i) {
    cases.push_back(randomCase(gen, nranks));
    data.push_back(buffers(gen, cases.back(), nranks));
    // Expected values before the run: in-place calls overwrite the inputs.
    expect.emplace_back();
    for (int r = 0; r < nranks; ++r)
      expect.back().push_back(expected(cases.back(), nranks, data.back().inPtr, r, w.ringBytes));
    queueCase(w, cases.back(), data.back(), i, queues);
  }
  runAll(queues);
  int failures = 0;
  for (size_t i = 0; i < cases.size(); ++i) {
    const Case& c = cases[i];
    const int64_t es = elemBytes(c.dtype);
    int bad = 0;
    for (int r = 0; r < nranks && bad < 3; ++r) {
      for (int64_t k = 0; k < outCount(c, nranks, r) && bad < 3; ++k) {
        if (std::memcmp(data[i].outPtr[r] + k * es, expect[i][r].data() + k * es, es) != 0) {
          std::printf("FAIL N=%d %s: rank %d element %lld differs from the documented fold\n",
                      nranks, describe(c).c_str(), r, (long long)k);
          ++bad;
        }
      }
    }
    failures += bad != 0;
  }
  for (int r = 0; r < nranks; ++r)
    if (w.info[r].code != kAbortNone) {
      std::printf("FAIL N=%d: rank %d gave up (code %d) in a run without faults\n", nranks, r,
                  w.info[r].code);
      ++failures;
    }
  std::printf("N=%d: %zu calls checked\n", nranks, cases.size());
  return failures;
}

// A few good calls, then one where rank 0's call differs: every rank must
// end with the mismatch code (no block left waiting), naming both fingerprints.
int runMismatch(uint64_t seed, int nranks, int variant) {
  std::mt19937_64 gen(seed * 104729 + nranks * 10 + variant);
  World w(nranks, 4096, 8192);
  std::vector<std::deque<Launch>> queues(nranks);
  std::vector<Buffers> keep;
  for (int i = 0; i < 2; ++i) {
    Case c = randomCase(gen, nranks);
    keep.push_back(buffers(gen, c, nranks));
    queueCase(w, c, keep.back(), i, queues);
  }
  Case c = randomCase(gen, nranks);
  c.replays = 1;
  c.count = 3001;
  Case odd = c;
  if (variant == 0) {
    odd.count = 17;  // fewer blocks / channels on rank 0
    c.kind = odd.kind = kRing;
    c.ring.maxChannels = odd.ring.maxChannels = 3;
  } else if (variant == 2) {
    odd.count = 2900;  // more blocks on the others
    c.kind = odd.kind = kTwoShot;
    c.dtype = odd.dtype = 2;
    c.op = odd.op = 0;
    c.maxBlocks = odd.maxBlocks = 3;
  } else if (variant == 1) {
    c.kind = kRing;  // a different kernel on rank 0, same count
    c.coll = RingColl::kAllreduce;
    odd.kind = kOneShot;
    odd.dtype = c.dtype = 2;
    odd.op = c.op = 0;
  } else if (variant == 3) {
    c.kind = odd.kind = kRing;  // allgather here, broadcast on rank 0: one kernel, one plan
    c.coll = RingColl::kAllgather;
    odd.coll = RingColl::kBroadcast;
    c.inPlace = odd.inPlace = false;
  } else if (variant == 4) {
    c.kind = odd.kind = kRing;  // broadcasts from different roots
    c.coll = odd.coll = RingColl::kBroadcast;
    c.root = 1;
    odd.root = 0;
  }
  Buffers a = buffers(gen, c, nranks), b = buffers(gen, odd, nranks);
  for (int r = 0; r < nranks; ++r) {
    std::vector<std::deque<Launch>> one(nranks);
    queueCase(w, r == 0 ? odd : c, r == 0 ? b : a, 2, one);
    queues[r].push_back(one[r].front());
  }
  runAll(queues);
  int failures = 0;
  for (int r = 0; r < nranks; ++r) {
    const AbortInfo& in = w.info[r];
    const bool described = in.mine != in.theirs || in.kindMine != in.kindTheirs;
    if (in.code != kAbortMismatch || !described || (r == 0 && in.peer == 0) ||
        (r != 0 && in.peer != 0)) {
      std::printf("FAIL mismatch variant %d N=%d: rank %d code %d peer %d\n", variant, nranks, r,
                  in.code, in.peer);
      ++failures;
    }
  }
  return failures;
}

}  // namespace

int main(int argc, char** argv) {
  const uint64_t seed = argc > 1 ? std::strtoull(argv[1], nullptr, 10) : 1;
  const int nCalls = argc > 2 ? std::atoi(argv[2]) : 40;
  emu::rng.seed(seed);
  int failures = 0;
  for (int nranks = 2; nranks <= 4; ++nranks) failures += runWorld(seed, nranks, nCalls);
  for (int nranks = 2; nranks <= 4; ++nranks)
    for (int v = 0; v < 5; ++v) failures += runMismatch(seed, nranks, v);
  std::printf("mismatch worlds checked\n");
  std::printf(failures ? "EMULATOR FAILED (%d)\n" : "EMULATOR OK\n", failures);
  return failures ? 1 : 0;
}
