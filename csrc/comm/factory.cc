#include "comm/factory.h"

#include "comm/host_engine.h"
#include "transport/self_transport.h"
#ifdef RR_HAVE_MPI
#include "transport/mpi_transport.h"
#endif

namespace rr {
namespace {

Clock::time_point creationDeadline(const Options& o) {
  if (!(o.timeoutSec < 1e9)) return Clock::time_point::max();
  return Clock::now() + std::chrono::duration_cast<Clock::duration>(
                            std::chrono::duration<double>(o.timeoutSec));
}

}  // namespace

std::shared_ptr<Communicator> makeSelfCommunicator(Options options) {
  return std::make_shared<Communicator>(
      0, 1, std::make_unique<HostEngine>(std::make_unique<SelfTransport>()), std::move(options));
}

std::shared_ptr<Communicator> makeLoopbackCommunicator(std::shared_ptr<LoopbackWorld> world,
                                                       int rank, Options options) {
  const int size = world->size();
  return std::make_shared<Communicator>(
      rank, size,
      std::make_unique<HostEngine>(std::make_unique<LoopbackTransport>(std::move(world), rank)),
      std::move(options));
}

std::shared_ptr<Communicator> makeDeviceOnlyCommunicator(int rank, int size, Options options) {
  return std::make_shared<Communicator>(
      rank, size, std::make_unique<HostEngine>(std::make_unique<SelfTransport>()),
      std::move(options));
}

#ifdef RR_HAVE_UCX
std::shared_ptr<Communicator> makeUcxCommunicator(int rank, int size, AddressExchange exchange,
                                                  const UcxOptions& ucx, Options options) {
  return std::make_shared<Communicator>(
      rank, size,
      std::make_unique<HostEngine>(std::make_unique<UcxTransport>(rank, size, std::move(exchange), ucx)),
      std::move(options));
}
#endif

#ifdef RR_HAVE_MPI
std::shared_ptr<Communicator> makeMpiCommunicator(Options options) {
  auto t = std::make_unique<MpiTransport>(MPI_COMM_WORLD, creationDeadline(options));
  const int rank = t->rank(), size = t->size();
  return std::make_shared<Communicator>(
      rank, size, std::make_unique<HostEngine>(std::move(t)), std::move(options));
}
#endif

}  // namespace rr
