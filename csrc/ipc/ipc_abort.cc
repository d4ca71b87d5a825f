// IpcAbortState: the pinned word through which CUDA-IPC kernels tell the
// host why they gave up, and the error each reason becomes.
#include <cuda_runtime.h>

#include <cstdio>
#include <cstring>
#include <string>

#include "common/cuda_check.h"
#include "common/errors.h"
#include "common/fingerprint.h"
#include "ipc/ipc_allreduce.h"

namespace rr {

IpcAbortState::IpcAbortState() {
  void* host = nullptr;
  RR_CUDA_CHECK(cudaHostAlloc(&host, sizeof(ipc::AbortInfo),
                              cudaHostAllocMapped | cudaHostAllocPortable));
  std::memset(host, 0, sizeof(ipc::AbortInfo));
  host_ = static_cast<volatile ipc::AbortInfo*>(host);
  void* dev = nullptr;
  const cudaError_t e = cudaHostGetDevicePointer(&dev, host, 0);
  if (e != cudaSuccess) {
    cudaFreeHost(host);
    host_ = nullptr;
    RR_CUDA_CHECK(e);
  }
  device_ = static_cast<ipc::AbortInfo*>(dev);
}

IpcAbortState::~IpcAbortState() {
  if (host_) cudaFreeHost(const_cast<ipc::AbortInfo*>(host_));
  cudaGetLastError();
}

void IpcAbortState::raiseIfFailed(int rank) const {
  const int code = this->code();
  if (code == ipc::kAbortNone) return;
  const std::string who = "CUDA-IPC kernels on rank " + std::to_string(rank);
  if (code == ipc::kAbortMismatch) {
    static const char* kinds[] = {"?", "ipc_one_shot", "ipc_two_shot", "gpu_ring"};
    auto kindName = [](int k) { return k >= 1 && k <= 3 ? kinds[k] : kinds[0]; };
    char hex[64];
    std::snprintf(hex, sizeof hex, "0x%016llx vs 0x%016llx",
                  static_cast<unsigned long long>(host_->mine),
                  static_cast<unsigned long long>(host_->theirs));
    std::string why = host_->mine != host_->theirs
                          ? fp::difference(host_->mine, host_->theirs, 64)
                          : std::string("the same call, but this rank runs ") +
                                kindName(host_->kindMine) + " and the peer " +
                                kindName(host_->kindTheirs) +
                                " (a forced algorithm differs between ranks)";
    throw MismatchError(who + ": rank " + std::to_string(host_->peer) +
                        " is in another call (found by block " + std::to_string(host_->block) +
                        " at the first barrier, before any data moved): " + why +
                        " (fingerprints " + hex + "; numbers count this communicator's calls)");
  }
  if (code == ipc::kAbortTimeout)
    throw TimeoutError(who + ": a kernel timed out waiting for a peer; the object cannot be "
                             "used again");
  throw Error(who + ": aborted; the object cannot be used again");
}

}  // namespace rr
