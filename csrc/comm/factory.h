// Building communicators: which host transport, over which launcher. The
// bindings call these; device engines are added later (comm/cuda_engine.h).
#pragma once

#include <memory>

#include "comm/communicator.h"
#include "transport/loopback_transport.h"
#ifdef RR_HAVE_UCX
#include "transport/ucx_transport.h"
#endif

namespace rr {

// A world of one process.
std::shared_ptr<Communicator> makeSelfCommunicator(Options options);
// Rank `rank` of an in-process world (tests).
std::shared_ptr<Communicator> makeLoopbackCommunicator(std::shared_ptr<LoopbackWorld> world,
                                                       int rank, Options options);
// `size` ranks with no host transport: device buffers only (torchrun with
// neither UCX nor MPI built in).
std::shared_ptr<Communicator> makeDeviceOnlyCommunicator(int rank, int size, Options options);
#ifdef RR_HAVE_UCX
// Rank `rank` of `size` over UCX; worker addresses travel through `exchange`
// (a c10d store, MPI, or nothing for one rank). Collective.
std::shared_ptr<Communicator> makeUcxCommunicator(int rank, int size, AddressExchange exchange,
                                                  const UcxOptions& ucx, Options options);
#endif
#ifdef RR_HAVE_MPI
// Every rank of MPI_COMM_WORLD; MPI must be initialised. Collective, bounded
// by the options' timeout.
std::shared_ptr<Communicator> makeMpiCommunicator(Options options);
#endif

}  // namespace rr
