#include "transport/mpi_transport.h"

#include <algorithm>
#include <thread>

#include "common/errors.h"

#if defined(OPEN_MPI) && OPEN_MPI
#include <mpi-ext.h>
#endif

namespace rr {
namespace {

constexpr int kTag = 0x5252;

std::string mpiErrorString(int rc) {
  char buf[MPI_MAX_ERROR_STRING];
  int len = 0;
  MPI_Error_string(rc, buf, &len);
  return std::string(buf, len);
}

}  // namespace

bool MpiTransport::initialize() {
  int inited = 0;
  MPI_Initialized(&inited);
  if (inited) return false;
  int provided = 0;
  int rc = MPI_Init_thread(nullptr, nullptr, MPI_THREAD_MULTIPLE, &provided);
  if (rc != MPI_SUCCESS) RR_THROW(Error, "MPI_Init_thread failed: " + mpiErrorString(rc));
  if (provided < MPI_THREAD_SERIALIZED)
    RR_THROW(Error, "MPI provides thread level " + std::to_string(provided) +
                        "; ringreduce needs MPI_THREAD_SERIALIZED or better");
  return true;
}

void MpiTransport::finalize() {
  int inited = 0, fin = 0;
  MPI_Initialized(&inited);
  MPI_Finalized(&fin);
  if (inited && !fin) MPI_Finalize();
}

bool MpiTransport::cudaAware() {
#if defined(MPIX_CUDA_AWARE_SUPPORT) && MPIX_CUDA_AWARE_SUPPORT
  return MPIX_Query_cuda_support() == 1;
#else
  return false;
#endif
}

MpiTransport::MpiTransport(MPI_Comm parent) {
  check(MPI_Comm_dup(parent, &comm_), "MPI_Comm_dup");
  // Errors come back as codes, so a dead peer becomes an exception, not an abort.
  MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN);
  MPI_Comm_rank(comm_, &rank_);
  MPI_Comm_size(comm_, &size_);
  right_ = (rank_ + 1) % size_;
  left_ = (rank_ - 1 + size_) % size_;
}

MpiTransport::~MpiTransport() {
  if (!pending_.empty()) abort();
  int fin = 0;
  MPI_Finalized(&fin);
  // Freeing after a failure could block on a dead peer; leak it instead.
  if (!fin && comm_ != MPI_COMM_NULL && !aborted_) MPI_Comm_free(&comm_);
}

void MpiTransport::check(int rc, const char* call) const {
  if (rc == MPI_SUCCESS) return;
  RR_THROW(Error, std::string(call) + " failed on rank " + std::to_string(rank_) + ": " +
                      mpiErrorString(rc));
}

void MpiTransport::start(const void* send, size_t sendBytes, void* recv, size_t recvBytes) {
  if (aborted_) RR_THROW(Error, "MPI transport was aborted by an earlier failure");
  Exchange x;
  x.sendBytes = sendBytes;
  x.recvBytes = recvBytes;
  // Receives are posted first so an eager send from the left finds them.
  for (size_t off = 0; off < recvBytes; off += kMaxMessageBytes) {
    size_t n = std::min(kMaxMessageBytes, recvBytes - off);
    MPI_Request req;
    check(MPI_Irecv(static_cast<char*>(recv) + off, static_cast<int>(n), MPI_BYTE, left_, kTag,
                    comm_, &req),
          "MPI_Irecv");
    x.requests.push_back(req);
    x.expected.push_back(n);
  }
  x.numRecvs = x.requests.size();
  for (size_t off = 0; off < sendBytes; off += kMaxMessageBytes) {
    size_t n = std::min(kMaxMessageBytes, sendBytes - off);
    MPI_Request req;
    check(MPI_Isend(static_cast<const char*>(send) + off, static_cast<int>(n), MPI_BYTE, right_,
                    kTag, comm_, &req),
          "MPI_Isend");
    x.requests.push_back(req);
  }
  x.done = x.requests.empty();
  pending_.push_back(std::move(x));
}

bool MpiTransport::test(Exchange& x) {
  if (x.done) return true;
  int flag = 0;
  if (statuses_.size() < x.requests.size()) statuses_.resize(x.requests.size());
  std::vector<MPI_Status>& st = statuses_;
  int rc = MPI_Testall(static_cast<int>(x.requests.size()), x.requests.data(), &flag, st.data());
  if (rc != MPI_SUCCESS) {
    int err = rc;
    for (size_t i = 0; i < x.requests.size(); ++i)
      if (rc == MPI_ERR_IN_STATUS && st[i].MPI_ERROR != MPI_SUCCESS &&
          st[i].MPI_ERROR != MPI_ERR_PENDING)
        err = st[i].MPI_ERROR;
    int cls = 0;
    MPI_Error_class(err, &cls);
    if (cls == MPI_ERR_TRUNCATE)
      RR_THROW(MismatchError, "rank " + std::to_string(left_) + " sent more bytes than the " +
                                  std::to_string(x.recvBytes) +
                                  " expected: ranks disagree on count or dtype");
    RR_THROW(Error, "MPI_Testall failed on rank " + std::to_string(rank_) + " (peers " +
                        std::to_string(left_) + ", " + std::to_string(right_) +
                        "): " + mpiErrorString(err));
  }
  if (!flag) return false;
  for (size_t i = 0; i < x.numRecvs; ++i) {
    int got = 0;
    MPI_Get_count(&st[i], MPI_BYTE, &got);
    if (static_cast<size_t>(got) != x.expected[i])
      RR_THROW(MismatchError, "received " + std::to_string(got) + " bytes from rank " +
                                  std::to_string(left_) + " where " +
                                  std::to_string(x.expected[i]) +
                                  " were expected: ranks disagree on count or dtype");
  }
  x.done = true;
  return true;
}

void MpiTransport::poll() {
  if (!pending_.empty() && !aborted_) test(pending_.front());
}

void MpiTransport::finish() {
  if (aborted_) RR_THROW(Error, "MPI transport was aborted by an earlier failure");
  if (pending_.empty()) RR_THROW(Error, "finish() without a started exchange");
  Exchange& x = pending_.front();
  for (uint64_t spins = 0; !test(x); ++spins) {
    // MPI progresses only inside calls, so spin. Past a short spin, yield on
    // every turn: with more ranks than cores the peer we wait for may need
    // this very core (it costs nothing when the core has nothing else to run).
    if (spins > 32) std::this_thread::yield();
    if ((spins & 63) == 63) {
      if (Clock::now() > deadline_) {
        // Find out which side is stuck, without completing anything.
        bool recvPending = false, sendPending = false;
        for (size_t i = 0; i < x.requests.size(); ++i) {
          int flag = 1;
          MPI_Status s;
          if (x.requests[i] != MPI_REQUEST_NULL) MPI_Request_get_status(x.requests[i], &flag, &s);
          if (!flag) (i < x.numRecvs ? recvPending : sendPending) = true;
        }
        std::string who = recvPending ? "rank " + std::to_string(left_) + " never sent its " +
                                            std::to_string(x.recvBytes) + " bytes"
                                      : "rank " + std::to_string(right_) + " never took our " +
                                            std::to_string(x.sendBytes) + " bytes";
        if (recvPending && sendPending)
          who += ", and rank " + std::to_string(right_) + " never took ours";
        RR_THROW(TimeoutError, "timed out: " + who);
      }
    }
  }
  pending_.pop_front();
}

void MpiTransport::abort() noexcept {
  aborted_ = true;
  for (auto& x : pending_)
    for (auto& r : x.requests)
      if (r != MPI_REQUEST_NULL) {
        MPI_Cancel(&r);
        MPI_Request_free(&r);
      }
  pending_.clear();
}

}  // namespace rr
