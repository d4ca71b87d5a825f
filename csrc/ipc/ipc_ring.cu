// The GPU ring's host side (allreduce, reduce_scatter, allgather,
// broadcast): plan, pick the instantiation, launch. The kernel
// and its flow-control argument are in ring_kernels.cuh, the schedule in
// ring_plan.h; the mapped memory and call state are IpcAllreduce's.
#include <cuda_runtime.h>

#include <algorithm>
#include <string>
#include <type_traits>

#include "common/cuda_check.h"
#include "common/errors.h"
#include "ipc/ipc_allreduce.h"
#include "ipc/ipc_kernels.cuh"
#include "ipc/ring_kernels.cuh"
#include "ipc/ring_plan.h"

namespace rr {
namespace {

using namespace ipc;
using KernelFn = void (*)(Args);

bool isInteger(DType t) {
  return t == DType::kInt8 || t == DType::kUInt8 || t == DType::kInt32 || t == DType::kInt64;
}

// Instantiations: 8 dtypes x (5 ops, + 3 bitwise for integers) x {16-byte
// vectors, scalar for misaligned pointers}.
template <class Tr, int K>
KernelFn pickOp(ReduceOp op) {
  switch (op) {
    case ReduceOp::kSum: return ringKernel<Tr, IpcSum, false, K>;
    case ReduceOp::kAvg: return ringKernel<Tr, IpcSum, true, K>;
    case ReduceOp::kProd: return ringKernel<Tr, IpcProd, false, K>;
    case ReduceOp::kMin: return ringKernel<Tr, IpcMin, false, K>;
    case ReduceOp::kMax: return ringKernel<Tr, IpcMax, false, K>;
    default: break;
  }
  if constexpr (std::is_integral<typename Tr::A>::value) {
    switch (op) {
      case ReduceOp::kBand: return ringKernel<Tr, IpcBand, false, K>;
      case ReduceOp::kBor: return ringKernel<Tr, IpcBor, false, K>;
      case ReduceOp::kBxor: return ringKernel<Tr, IpcBxor, false, K>;
      default: break;
    }
  }
  return nullptr;
}

KernelFn pickRingKernel(DType dtype, ReduceOp op, bool vec) {
  KernelFn fn = nullptr;
  withTraits(dtype, [&](auto tr) {
    using Tr = decltype(tr);
    constexpr int K = kRingVecBytes / int(sizeof(typename Tr::S));
    fn = vec ? pickOp<Tr, K>(op) : pickOp<Tr, 1>(op);
  });
  return fn;
}

// allgather and broadcast only move bytes: the sum kernel of a dtype of the
// element's size serves every dtype of that size (nothing is folded).
KernelFn pickMoveKernel(int64_t elemBytes, bool vec) {
  switch (elemBytes) {
    case 1: return pickRingKernel(DType::kUInt8, ReduceOp::kSum, vec);
    case 2: return pickRingKernel(DType::kBFloat16, ReduceOp::kSum, vec);
    case 4: return pickRingKernel(DType::kInt32, ReduceOp::kSum, vec);
    case 8: return pickRingKernel(DType::kInt64, ReduceOp::kSum, vec);
    default: return nullptr;
  }
}

bool ringColl(Coll c, RingColl* out) {
  switch (c) {
    case Coll::kAllreduce: *out = RingColl::kAllreduce; return true;
    case Coll::kReduceScatter: *out = RingColl::kReduceScatter; return true;
    case Coll::kAllgather: *out = RingColl::kAllgather; return true;
    case Coll::kBroadcast: *out = RingColl::kBroadcast; return true;
    default: return false;
  }
}

}  // namespace

bool IpcAllreduce::ringSupports(DType dtype, ReduceOp op) const {
  if (!enabled_) return false;
  if (isBitwise(op)) return isInteger(dtype);
  return dtype == DType::kFloat32 || dtype == DType::kFloat16 || dtype == DType::kBFloat16 ||
         dtype == DType::kFloat64 || isInteger(dtype);
}

bool IpcAllreduce::ringMoves(DType dtype) const {
  const size_t es = dtypeSize(dtype);
  return enabled_ && (es == 1 || es == 2 || es == 4 || es == 8);
}

void IpcAllreduce::runRing(const void* in, void* out, int64_t count, DType dtype, ReduceOp op,
                           cudaStream_t stream, const IpcTag& tag) {
  RR_CHECK_ARG(count >= 0, "gpu_ring: count must be >= 0, got " + std::to_string(count));
  RingColl coll;
  if (!ringColl(tag.coll, &coll))
    throw ArgumentError(std::string("gpu_ring does not run ") + collName(tag.coll));
  const bool folds = coll == RingColl::kAllreduce || coll == RingColl::kReduceScatter;
  if (folds ? !ringSupports(dtype, op) : !ringMoves(dtype))
    throw ArgumentError(std::string("gpu_ring does not handle ") + dtypeName(dtype) +
                        (folds ? std::string("/") + opName(op) : std::string()) +
                        (enabled_ ? "" : " (disabled: " + disabledReason_ + ")"));
  RR_CHECK_ARG(tag.root >= 0 && tag.root < worldSize_,
               "gpu_ring: root " + std::to_string(tag.root) + " is not a rank");
  const int64_t es = static_cast<int64_t>(dtypeSize(dtype));
  DeviceGuard guard(device_);
  if (worldSize_ == 1) {  // every collective is a copy of count elements (or none)
    if (in != out && count > 0)
      RR_CUDA_CHECK(cudaMemcpyAsync(out, in, count * es, cudaMemcpyDeviceToDevice, stream));
    return;
  }
  // Only the memory this rank touches must exist: a rank's block of a
  // reduce_scatter may be empty, and only the root of a broadcast reads in.
  const bool readsIn = count > 0 && (coll != RingColl::kBroadcast || tag.root == rank_);
  const int64_t outElems = coll == RingColl::kReduceScatter ? ringBlockElems(count, worldSize_, rank_)
                           : coll == RingColl::kAllgather ? count * worldSize_
                                                          : count;
  RR_CHECK_ARG((!readsIn || in != nullptr) && (outElems == 0 || out != nullptr),
               "gpu_ring: null buffer pointer");
  const bool capturing = beforeLaunch(stream, tag.ordered);
  RingPlanInput pin;
  pin.count = ringSplitElems(coll, count, worldSize_);
  pin.elemBytes = es;
  pin.nranks = worldSize_;
  pin.maxChannels = std::max(1, std::min({tuning_.ringChannels, minSmCount_, kRingMaxChannels}));
  pin.chunkBytes = static_cast<int64_t>(tuning_.ringChunkBytes);
  pin.slots = tuning_.ringSlots;
  pin.stagingBytes = static_cast<int64_t>(kRingBytes);
  pin.orders = tuning_.ringOrders;
  const RingPlan g = planRing(pin);
  Args a = makeArgs(in, out, count, rank_, worldSize_, peers_.data(),
                    static_cast<int64_t>(halfBytes_), reinterpret_cast<Ctl*>(mine_ + kCtlOffset),
                    abort_->device(), static_cast<uint64_t>(timeoutNs_));
  setRingPlan(a, g, static_cast<int64_t>(kControlBytes + 2 * halfBytes_), coll,
              static_cast<int>(tag.root));
  fillTag(a, count, dtype, op, tag, capturing);
  const bool vec = ringVectorOk(coll, reinterpret_cast<uintptr_t>(in), reinterpret_cast<uintptr_t>(out),
                                count, worldSize_, es);
  KernelFn fn = folds ? pickRingKernel(dtype, op, vec) : pickMoveKernel(es, vec);
  if (fn == nullptr)
    throw ArgumentError(std::string("gpu_ring has no kernel for ") + dtypeName(dtype) + "/" +
                        opName(op));
  fn<<<g.channels, kThreads, 0, stream>>>(a);
  afterLaunch(stream, capturing, tag.ordered, "gpu_ring", dtype, op, g.channels, count);
}

}  // namespace rr
