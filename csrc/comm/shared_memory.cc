// Attaching the host shared memory of one machine's ranks (shm/shm_world.h).
#include "comm/communicator.h"
#include "comm/host_engine.h"

namespace rr {

std::string Communicator::attachSharedMemory(int64_t roundBytes) {
  if (size_ == 1) return "a world of one rank needs no shared memory";
  if (!hasHostTransport()) return "no host transport to agree on a segment over";
  auto* host = dynamic_cast<HostEngine*>(&engines_.host());
  if (!host) return "the host engine keeps no shared memory";
  if (board_) return std::string();
  std::string why;
  std::shared_ptr<ShmWorld> w = ShmWorld::attach(
      rank_, size_, roundBytes, [this](const std::string& mine) { return allgatherBytes(mine, true); },
      &why);
  if (!w) return why;
  runExclusive([&] {
    host->setSharedMemory(w);
    board_ = w;
    ++policyEpoch_;  // the choice may change now
  });
  return std::string();
}

}  // namespace rr
