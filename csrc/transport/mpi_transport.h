// Exchanges over MPI point-to-point on host buffers. Compiled only when the
// build finds MPI (RR_HAVE_MPI).
//
// Each channel gets a duplicate of the parent communicator, so our messages
// never meet the application's and collective traffic never meets
// point-to-point traffic; notices travel on a fourth duplicate. A message's
// MPI tag is the call's fingerprint folded to MPI_TAG_UB, and receives take
// any tag from their source, so a message of another call is seen (and
// refused) instead of waited for.
#pragma once

#include <mpi.h>

#include <deque>
#include <vector>

#include "transport/transport.h"

namespace rr {

class MpiTransport : public Transport {
 public:
  // Collective over `parent`. Returns, or throws TimeoutError, by `deadline`:
  // a rank that never joins does not hang the others (MPI_Comm_idup).
  MpiTransport(MPI_Comm parent, Clock::time_point deadline);
  ~MpiTransport() override;
  MpiTransport(const MpiTransport&) = delete;
  MpiTransport& operator=(const MpiTransport&) = delete;

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  std::string name() const override { return "mpi"; }
  int tagBits() const override { return tagBits_; }

  ExchangeId start(const Xfer* sends, int numSends, const Xfer* recvs, int numRecvs) override;
  bool test(ExchangeId id) override;
  void wait(ExchangeId id) override;
  void poll() override;
  bool canProbe() const override { return true; }
  bool probe(int peer) override;
  void sendNotice(const Notice& notice, const int* peers, int numPeers) noexcept override;
  void abort() noexcept override;
  bool settled() const noexcept override { return stuck_ == 0; }

  // Initialises MPI if nobody has yet. Returns true when this call did it.
  static bool initialize();
  // Finalises MPI if it is initialised and not finalised yet.
  static void finalize();
  // True when the MPI library can take device pointers.
  static bool cudaAware();

  // Messages above this many bytes are split: MPI counts are C ints.
  static constexpr size_t kMaxMessageBytes = size_t(1) << 30;

 protected:
  void deliverArrivedNotices() override { checkNotices(); }

 private:
  struct Exchange {
    ExchangeId id = 0;
    std::vector<MPI_Request> requests;  // receives first, then sends
    std::vector<size_t> expected;       // bytes of each receive piece
    std::vector<int> from;              // source of each receive piece
    std::vector<char*> into;            // where each receive piece lands
    std::vector<uint8_t> matched;       // receive piece i has its message (MPI_Imrecv posted)
    std::vector<int> to;                // destination of each send piece
    size_t numRecvs = 0;
    size_t unmatched = 0;
    int wireTag = 0;
    MPI_Comm comm = MPI_COMM_NULL;
    bool done = false;
  };
  Exchange* find(ExchangeId id);
  void forget(ExchangeId id);
  // Receives are posted only for a message already probed: its tag and size
  // are checked first, so no receive is ever truncated (Open MPI's
  // single-copy path writes a too-long message past the buffer).
  void matchReceives();
  bool testOne(Exchange& x);
  void checkNotices();
  [[noreturn]] void timedOut(const Exchange& x);
  void check(int rc, const char* call) const;

  MPI_Comm comms_[kNumChannels] = {MPI_COMM_NULL, MPI_COMM_NULL};
  MPI_Comm noticeComm_ = MPI_COMM_NULL;
  int rank_ = 0, size_ = 1, tagBits_ = 15;
  int32_t worldId_ = 0;  // this communicator's number in notices
  bool aborted_ = false;
  size_t stuck_ = 0;  // requests abort() could not settle (left to MPI)
  static constexpr int kCancelWaitMs = 2000;
  bool failed_ = false;  // aborted, or destroyed with exchanges in flight
  ExchangeId nextId_ = 1;
  std::deque<Exchange> live_;
  std::vector<Exchange> spare_;
  std::vector<uint8_t> blocked_;  // per (channel, peer): an earlier receive waits for its message
  std::vector<MPI_Status> statuses_;  // reused: polling must not allocate
  Notice inbox_;
  MPI_Request inboxReq_ = MPI_REQUEST_NULL;
  std::deque<std::pair<Notice, MPI_Request>> outbox_;  // notices still being sent
};

}  // namespace rr
