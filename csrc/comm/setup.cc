// Setting a communicator up after it was made: the all-gather of a few
// bytes that engines agree over, and the host shared memory of one
// machine's ranks (shm/shm_world.h).
#include "comm/communicator.h"
#include "comm/host_engine.h"
#include "ring/ring_allreduce.h"

namespace rr {

std::vector<std::string> Communicator::allgatherBytes(const std::string& mine, bool setup) {
  if (size_ == 1) return {mine};
  RR_CHECK_ARG(hasHostTransport(), "allgatherBytes needs a host transport");
  Call call;
  call.coll = Coll::kBootstrap;
  call.dtype = DType::kUInt8;
  {
    std::lock_guard<std::mutex> lk(mu_);
    if (closing_) RR_THROW(Error, "communicator is finalized");
    if (setup) {
      // Numbered apart from the calls, so users' calls keep their numbers;
      // the root field keeps its fingerprint apart from numbered bootstraps.
      call.seq = setupSeq_++;
      call.root = 1;
    } else {
      assignSequence(call);
    }
  }
  std::vector<std::string> out;
  runExclusive([&] {
    quietNotices_ = setup;
    struct Loud {
      bool& quiet;
      ~Loud() { quiet = false; }
    } loud{quietNotices_};
    try {
      Engine& host = engines_.host();
      host.transport().setDeadline(deadlineFromNow());
      host.transport().setTag(tagOf(call), Channel::kCollective);
      RingOptions ro;
      ro.chunkBytes = opt_.chunkBytes;
      out = Ring(host.transport(), host.reducer(), host.workspace(), ro).allgatherBytes(mine);
    } catch (Error& e) {
      e.addContext(describe(call));
      poison(Verdicts::kindOf(e), e.what());
      throw;
    }
  }, /*afterQueue=*/true);
  return out;
}


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
