// CUDA-IPC all-reduce, host side: mapping peers' buffers, planning a call,
// picking the kernel instantiation and launching it. The synchronisation
// argument is in ipc_device.cuh, the one-/two-shot kernels in
// ipc_kernels.cuh, their layout arithmetic in ipc_plan.h; the GPU ring's
// host side is ipc_ring.cu.
#include "ipc/ipc_allreduce.h"

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "common/cuda_check.h"
#include "common/errors.h"
#include "common/fingerprint.h"
#include "ipc/ipc_kernels.cuh"
#include "ipc/ipc_plan.h"

namespace rr {
namespace {

using namespace ipc;
constexpr int kVecBytes = kIpcVecBytes;
constexpr size_t kMinBufferBytes = 256 << 10;
static_assert(IpcAllreduce::kMaxRanks == kIpcMaxRanks && IpcAllreduce::kMaxBlocks == kIpcMaxBlocks,
              "the class and the kernels agree on the flag layout");

// ---- dispatch -----------------------------------------------------------------

using KernelFn = void (*)(Args);

// Instantiations: 3 dtypes x 5 ops x 2 algorithms x {16-byte vectors for at
// most 2, 4 or 8 ranks (the bound sizes the register arrays), scalar for 8}.
template <class Tr, class Op, bool kAvg, int K, int NR>
KernelFn pickAlgo(bool oneShot) {
  return oneShot ? oneShotKernel<Tr, Op, kAvg, K, NR> : twoShotKernel<Tr, Op, kAvg, K, NR>;
}

template <class Tr, int K, int NR>
KernelFn pickOp(ReduceOp op, bool oneShot) {
  switch (op) {
    case ReduceOp::kSum: return pickAlgo<Tr, IpcSum, false, K, NR>(oneShot);
    case ReduceOp::kAvg: return pickAlgo<Tr, IpcSum, true, K, NR>(oneShot);
    case ReduceOp::kProd: return pickAlgo<Tr, IpcProd, false, K, NR>(oneShot);
    case ReduceOp::kMin: return pickAlgo<Tr, IpcMin, false, K, NR>(oneShot);
    case ReduceOp::kMax: return pickAlgo<Tr, IpcMax, false, K, NR>(oneShot);
  }
  return nullptr;
}

template <class Tr>
KernelFn pickShape(int nranks, bool vec, ReduceOp op, bool oneShot) {
  constexpr int K = kVecBytes / int(sizeof(typename Tr::S));
  if (!vec) return pickOp<Tr, 1, kMaxRanks>(op, oneShot);
  if (nranks <= 2) return pickOp<Tr, K, 2>(op, oneShot);
  if (nranks <= 4) return pickOp<Tr, K, 4>(op, oneShot);
  return pickOp<Tr, K, kMaxRanks>(op, oneShot);
}

KernelFn pickKernel(DType dtype, int nranks, ReduceOp op, bool vec, bool oneShot) {
  switch (dtype) {
    case DType::kFloat32: return pickShape<F32>(nranks, vec, op, oneShot);
    case DType::kFloat16: return pickShape<F16>(nranks, vec, op, oneShot);
    case DType::kBFloat16: return pickShape<BF16>(nranks, vec, op, oneShot);
    default: return nullptr;
  }
}

bool dtypeSupported(DType t) {
  return t == DType::kFloat32 || t == DType::kFloat16 || t == DType::kBFloat16;
}

std::string cudaWhy(const char* call, cudaError_t e) {
  return std::string(call) + ": " + cudaGetErrorString(e);
}

// A collective step where each rank may fail locally: the failure travels in
// the exchange, so every rank learns it and no rank is left waiting alone.
struct Status {
  int32_t ok = 1;
  char why[124] = {};
  void set(const std::string& s) {
    ok = 0;
    std::snprintf(why, sizeof(why), "%s", s.c_str());
  }
};

}  // namespace

// ---- host side ------------------------------------------------------------------

IpcAllreduce::IpcAllreduce(int rank, int worldSize, int device, size_t bufferBytes,
                           Exchange exchange, double timeoutSec)
    : rank_(rank),
      worldSize_(worldSize),
      device_(device),
      bufferBytes_(bufferBytes),
      timeoutNs_(static_cast<int64_t>(timeoutSec * 1e9)) {
  RR_CHECK_ARG(worldSize >= 1, "IpcAllreduce: worldSize must be >= 1, got " +
                                   std::to_string(worldSize));
  RR_CHECK_ARG(rank >= 0 && rank < worldSize, "IpcAllreduce: rank " + std::to_string(rank) +
                                                  " is outside [0, " +
                                                  std::to_string(worldSize) + ")");
  RR_CHECK_ARG(timeoutSec > 0, "IpcAllreduce: timeout must be > 0 s, got " +
                                   std::to_string(timeoutSec));
  RR_CHECK_ARG(static_cast<bool>(exchange), "IpcAllreduce: exchange must be callable");
  if (worldSize == 1) {
    enabled_ = true;
    return;
  }
  if (worldSize > kMaxRanks) {
    disabledReason_ = "IpcAllreduce handles at most " + std::to_string(kMaxRanks) +
                      " ranks, got " + std::to_string(worldSize);
    return;
  }
  const int n = worldSize;
  try {
    // 1. Who is where, and does everyone agree on the sizes.
    struct Hello {
      Status st;
      int32_t rank;
      int32_t worldSize;
      int32_t smCount;
      int32_t pad;
      uint64_t bufferBytes;
      char busId[32];
    };
    Hello me{};
    me.rank = rank;
    me.worldSize = worldSize;
    me.bufferBytes = bufferBytes;
    {
      cudaError_t e = cudaDeviceGetAttribute(&me.smCount, cudaDevAttrMultiProcessorCount, device);
      if (e == cudaSuccess) e = cudaDeviceGetPCIBusId(me.busId, sizeof(me.busId), device);
      if (e != cudaSuccess) me.st.set(cudaWhy("cudaDeviceGetAttribute/GetPCIBusId", e));
    }
    std::vector<Hello> hello(n);
    exchange(&me, sizeof(me), hello.data());
    for (int q = 0; q < n; ++q)
      if (!hello[q].st.ok)
        throw Error("IpcAllreduce setup failed on rank " + std::to_string(q) + ": " +
                    hello[q].st.why);
    for (int q = 0; q < n; ++q) {
      if (hello[q].rank != q || hello[q].worldSize != n || hello[q].bufferBytes != bufferBytes)
        throw MismatchError("IpcAllreduce: rank " + std::to_string(q) + " says rank " +
                            std::to_string(hello[q].rank) + " of " +
                            std::to_string(hello[q].worldSize) + " with " +
                            std::to_string(hello[q].bufferBytes) + " buffer bytes; rank " +
                            std::to_string(rank) + " says " + std::to_string(n) + " ranks and " +
                            std::to_string(bufferBytes) + " bytes");
    }
    if (bufferBytes < kMinBufferBytes)
      throw ArgumentError("IpcAllreduce: bufferBytes must be >= " +
                          std::to_string(kMinBufferBytes) + ", got " +
                          std::to_string(bufferBytes));
    halfBytes_ = (bufferBytes / 2) / 4096 * 4096;
    minSmCount_ = hello[0].smCount;
    for (int q = 1; q < n; ++q) minSmCount_ = std::min(minSmCount_, int(hello[q].smCount));
    minSmCount_ = std::max(minSmCount_, 1);

    // 2. Can every GPU reach every other one by P2P.
    std::vector<std::string> peerIds;
    for (int q = 0; q < n; ++q)
      if (q != rank) peerIds.emplace_back(hello[q].busId);
    Status reach;
    {
      std::string why;
      if (!peersReachable(device, peerIds, &why)) reach.set(why);
    }
    std::vector<Status> reaches(n);
    exchange(&reach, sizeof(reach), reaches.data());
    for (int q = 0; q < n; ++q) {
      if (!reaches[q].ok) {
        disabledReason_ = "rank " + std::to_string(q) + ": " + reaches[q].why;
        return;
      }
    }

    // 3. Allocate and export. The flags are zeroed before anyone can see them.
    struct Share {
      Status st;
      cudaIpcMemHandle_t handle;
    };
    Share share{};
    {
      DeviceGuard guard(device);
      auto step = [&](const char* call, cudaError_t e) {
        if (e != cudaSuccess && share.st.ok) share.st.set(cudaWhy(call, e));
        return share.st.ok != 0;
      };
      void* base = nullptr;
      if (step("cudaMalloc", cudaMalloc(&base, kControlBytes + 2 * halfBytes_ + kRingBytes)))
        mine_ = static_cast<char*>(base);
      if (share.st.ok) step("cudaMemset", cudaMemset(mine_, 0, kControlBytes));
      if (share.st.ok) step("cudaDeviceSynchronize", cudaDeviceSynchronize());
      if (share.st.ok) step("cudaIpcGetMemHandle", cudaIpcGetMemHandle(&share.handle, mine_));
      if (share.st.ok) {
        try {
          abort_ = std::make_shared<IpcAbortState>();
        } catch (const Error& e) {
          share.st.set(e.what());
        }
      }
      if (share.st.ok)
        step("cudaEventCreateWithFlags", cudaEventCreateWithFlags(&order_, cudaEventDisableTiming));
    }
    std::vector<Share> shares(n);
    exchange(&share, sizeof(share), shares.data());
    for (int q = 0; q < n; ++q)
      if (!shares[q].st.ok)
        throw Error("IpcAllreduce setup failed on rank " + std::to_string(q) + ": " +
                    shares[q].st.why);

    // 4. Map every peer's buffer. A refusal (e.g. a container without a
    // shared IPC namespace) disables the path on every rank.
    Status opened;
    peers_.assign(n, nullptr);
    peers_[rank] = mine_;
    {
      DeviceGuard guard(device);
      for (int q = 0; q < n && opened.ok; ++q) {
        if (q == rank) continue;
        void* p = nullptr;
        cudaError_t e = cudaIpcOpenMemHandle(&p, shares[q].handle, cudaIpcMemLazyEnablePeerAccess);
        if (e != cudaSuccess) {
          cudaGetLastError();
          opened.set("cudaIpcOpenMemHandle(rank " + std::to_string(q) +
                     "): " + cudaGetErrorString(e));
        } else {
          peers_[q] = static_cast<char*>(p);
        }
      }
    }
    std::vector<Status> opens(n);
    exchange(&opened, sizeof(opened), opens.data());
    for (int q = 0; q < n; ++q) {
      if (!opens[q].ok) {
        disabledReason_ = "rank " + std::to_string(q) + ": " + opens[q].why;
        releaseAll();
        return;
      }
    }
    enabled_ = true;
  } catch (...) {
    releaseAll();
    throw;
  }
}

void IpcAllreduce::releaseAll() noexcept {
  enabled_ = false;
  if (!mine_ && !order_) return;
  DeviceGuard::noThrow(device_, [&] {
    // Our kernels are the only writers into peers' memory and the last
    // readers of ours; after they finish, closing and freeing is safe.
    cudaDeviceSynchronize();
    for (size_t q = 0; q < peers_.size(); ++q)
      if (static_cast<int>(q) != rank_ && peers_[q]) cudaIpcCloseMemHandle(peers_[q]);
    peers_.clear();
    if (mine_) cudaFree(mine_);
    mine_ = nullptr;
    if (order_) cudaEventDestroy(order_);
    order_ = nullptr;
    cudaGetLastError();
  });
}

IpcAllreduce::~IpcAllreduce() { releaseAll(); }

bool IpcAllreduce::peersReachable(int device, const std::vector<std::string>& busIds,
                                  std::string* why) {
  auto no = [&](const std::string& s) {
    if (why) *why = s;
    return false;
  };
  for (const std::string& id : busIds) {
    int other = -1;
    cudaError_t e = cudaDeviceGetByPCIBusId(&other, id.c_str());
    if (e != cudaSuccess) {
      cudaGetLastError();
      return no("GPU " + id + " is not visible in this process (CUDA_VISIBLE_DEVICES?): " +
                cudaGetErrorString(e));
    }
    // Two ranks on one GPU map each other's memory within the device: no
    // peer access is needed (this is how one-GPU machines test the path).
    if (other == device) continue;
    int ok = 0;
    e = cudaDeviceCanAccessPeer(&ok, device, other);
    if (e != cudaSuccess) {
      cudaGetLastError();
      return no(cudaWhy("cudaDeviceCanAccessPeer", e));
    }
    if (!ok)
      return no("GPU " + std::to_string(device) + " cannot access GPU " + id + " peer-to-peer");
  }
  return true;
}

bool IpcAllreduce::supports(int64_t count, DType dtype, ReduceOp op) const {
  const int o = static_cast<int>(op);
  return enabled_ && count >= 0 && dtypeSupported(dtype) && o >= 0 && o < kNumOps;
}

int64_t IpcAllreduce::oneShotLimit() const {
  int64_t limit = tuning_.oneShotMaxBytes > 0
                      ? static_cast<int64_t>(tuning_.oneShotMaxBytes)
                      : (int64_t(1) << 20) / std::max(1, worldSize_ - 1);
  return std::min<int64_t>(limit, static_cast<int64_t>(halfBytes_) / std::max(1, worldSize_));
}

bool IpcAllreduce::oneShotFits(int64_t count, DType dtype) const {
  const int64_t es = static_cast<int64_t>(dtypeSize(dtype));
  const int64_t pack = kIpcVecBytes / es;
  return worldSize_ * ipcRoundUp(count, pack) * es <= static_cast<int64_t>(halfBytes_);
}

IpcPlan IpcAllreduce::plan(int64_t count, DType dtype, int algo) const {
  IpcPlanInput in;
  in.count = count;
  in.elemBytes = static_cast<int64_t>(dtypeSize(dtype));
  in.nranks = worldSize_;
  in.halfBytes = static_cast<int64_t>(halfBytes_);
  in.maxBlocks =
      std::max(1, std::min(kMaxBlocks, tuning_.maxBlocks > 0 ? tuning_.maxBlocks : minSmCount_));
  in.threads = kThreads;
  in.algo = algo != IpcTuning::kAuto ? algo : tuning_.algo;
  in.oneShotMaxBytes = oneShotLimit();
  in.roundBytes = static_cast<int64_t>(tuning_.roundBytes);
  return planIpc(in);
}

const char* IpcAllreduce::algorithmFor(int64_t count, DType dtype) const {
  if (worldSize_ == 1) return "copy";
  if (!enabled_ || !dtypeSupported(dtype) || count <= 0) return "none";
  return plan(count, dtype, IpcTuning::kAuto).oneShot ? "one_shot" : "two_shot";
}

void IpcAllreduce::setTuning(const IpcTuning& t) {
  RR_CHECK_ARG(t.algo >= IpcTuning::kAuto && t.algo <= IpcTuning::kTwoShot,
               "IpcAllreduce: algo must be 0 (auto), 1 (one-shot) or 2 (two-shot), got " +
                   std::to_string(t.algo));
  RR_CHECK_ARG(t.roundBytes >= kVecBytes * static_cast<size_t>(worldSize_),
               "IpcAllreduce: roundBytes must be >= 16 * worldSize, got " +
                   std::to_string(t.roundBytes));
  RR_CHECK_ARG(t.maxBlocks >= 0, "IpcAllreduce: maxBlocks must be >= 0, got " +
                                     std::to_string(t.maxBlocks));
  RR_CHECK_ARG(t.ringChannels >= 1 && t.ringChannels <= kRingMaxChannels,
               "IpcAllreduce: ringChannels must be in [1, " + std::to_string(kRingMaxChannels) +
                   "], got " + std::to_string(t.ringChannels));
  RR_CHECK_ARG(t.ringSlots >= 2 && t.ringSlots <= 64,
               "IpcAllreduce: ringSlots must be in [2, 64], got " + std::to_string(t.ringSlots));
  RR_CHECK_ARG(t.ringChunkBytes >= 1024, "IpcAllreduce: ringChunkBytes must be >= 1024, got " +
                                             std::to_string(t.ringChunkBytes));
  RR_CHECK_ARG(t.ringOrders == 1 || t.ringOrders == 2,
               "IpcAllreduce: ringOrders must be 1 or 2, got " + std::to_string(t.ringOrders));
  tuning_ = t;
}

void IpcAllreduce::abort() noexcept {
  if (abort_) abort_->abort();
}

bool IpcAllreduce::failed() const noexcept { return abort_ && abort_->code() != kAbortNone; }

bool IpcAllreduce::beforeLaunch(cudaStream_t stream, bool ordered) {
  if (failed()) abort_->raiseIfFailed(rank_);
  cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
  RR_CUDA_CHECK(cudaStreamIsCapturing(stream, &capture));
  if (capture != cudaStreamCaptureStatusNone) return true;
  // The halves, the ring slots and the device call state assume each launch
  // starts after the previous one ended; on a new stream, make that explicit.
  if (!ordered && haveLastStream_ && stream != lastStream_) {
    RR_CUDA_CHECK(cudaEventRecord(order_, lastStream_));
    RR_CUDA_CHECK(cudaStreamWaitEvent(stream, order_, 0));
  }
  return false;
}

void IpcAllreduce::afterLaunch(cudaStream_t stream, bool capturing, bool ordered,
                               const char* kind, DType dtype, ReduceOp op, int blocks,
                               int64_t count) {
  const cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess)
    throw Error(std::string("IpcAllreduce launch (") + kind + ", " + dtypeName(dtype) + " " +
                opName(op) + ", " + std::to_string(blocks) + " blocks, count " +
                std::to_string(count) + ") on rank " + std::to_string(rank_) + ": " +
                cudaGetErrorString(e));
  if (capturing || ordered) return;  // the graph's launch stream is not known here
  lastStream_ = stream;
  haveLastStream_ = true;
}

void IpcAllreduce::fillTag(Args& a, int64_t count, DType dtype, ReduceOp op, const IpcTag& tag,
                           bool capturing) const {
  Fingerprint shape;
  shape.coll = tag.coll;
  shape.dtype = dtype;
  shape.op = op;
  shape.count = count;
  shape.root = tag.root;
  // A captured launch is replayed without the host: it numbers itself.
  setTag(a, shape, tag.value, capturing || !tag.fromHost);
}

void IpcAllreduce::run(const void* in, void* out, int64_t count, DType dtype, ReduceOp op,
                       cudaStream_t stream, int algo, const IpcTag& tag) {
  RR_CHECK_ARG(count >= 0, "IpcAllreduce: count must be >= 0, got " + std::to_string(count));
  if (!supports(count, dtype, op))
    throw ArgumentError(std::string("IpcAllreduce does not handle ") + dtypeName(dtype) + "/" +
                        opName(op) +
                        (enabled_ ? "" : " (disabled: " + disabledReason_ + ")"));
  const int64_t es = static_cast<int64_t>(dtypeSize(dtype));
  DeviceGuard guard(device_);
  if (worldSize_ == 1) {
    if (in != out && count > 0)
      RR_CUDA_CHECK(cudaMemcpyAsync(out, in, count * es, cudaMemcpyDeviceToDevice, stream));
    return;
  }
  RR_CHECK_ARG(count == 0 || (in != nullptr && out != nullptr), "IpcAllreduce: null buffer pointer");
  if (algo == IpcTuning::kOneShot && !oneShotFits(count, dtype))
    throw ArgumentError("IpcAllreduce: a one-shot of " + std::to_string(count) + " " +
                        dtypeName(dtype) + " does not fit the IPC buffer");
  const bool capturing = beforeLaunch(stream, tag.ordered);
  const IpcPlan g = plan(count, dtype, algo);
  Args a = makeArgs(in, out, count, rank_, worldSize_, peers_.data(), static_cast<int64_t>(halfBytes_),
                    reinterpret_cast<Ctl*>(mine_ + kCtlOffset), abort_->device(),
                    static_cast<uint64_t>(timeoutNs_));
  setPlan(a, g);
  fillTag(a, count, dtype, op, tag, capturing);
  const bool vec = (reinterpret_cast<uintptr_t>(in) % kVecBytes) == 0 &&
                   (reinterpret_cast<uintptr_t>(out) % kVecBytes) == 0;
  KernelFn fn = pickKernel(dtype, worldSize_, op, vec, g.oneShot);
  fn<<<g.blocks, kThreads, 0, stream>>>(a);
  afterLaunch(stream, capturing, tag.ordered, g.oneShot ? "one-shot" : "two-shot", dtype, op,
              g.blocks, count);
}

}  // namespace rr
