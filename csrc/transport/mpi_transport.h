// Ring exchanges over MPI point-to-point on host buffers. Compiled only when
// the build finds MPI (RR_HAVE_MPI).
#pragma once

#include <mpi.h>

#include <deque>
#include <vector>

#include "transport/transport.h"

namespace rr {

class MpiTransport : public Transport {
 public:
  // Duplicates `parent` so our messages never meet the application's.
  explicit MpiTransport(MPI_Comm parent = MPI_COMM_WORLD);
  ~MpiTransport() override;
  MpiTransport(const MpiTransport&) = delete;
  MpiTransport& operator=(const MpiTransport&) = delete;

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  std::string name() const override { return "mpi"; }

  void start(const void* send, size_t sendBytes, void* recv, size_t recvBytes) override;
  void finish() override;
  void poll() override;
  void abort() noexcept override;

  // Initialises MPI if nobody has yet. Returns true when this call did it.
  static bool initialize();
  // Finalises MPI if it is initialised and not finalised yet.
  static void finalize();
  // True when the MPI library can take device pointers.
  static bool cudaAware();

  // Messages above this many bytes are split: MPI counts are C ints.
  static constexpr size_t kMaxMessageBytes = size_t(1) << 30;

 private:
  struct Exchange {
    std::vector<MPI_Request> requests;  // receives first, then sends
    std::vector<size_t> expected;       // bytes of each receive piece
    size_t numRecvs = 0;
    size_t sendBytes = 0, recvBytes = 0;
    bool done = false;
  };
  bool test(Exchange& x);
  void check(int rc, const char* call) const;

  MPI_Comm comm_ = MPI_COMM_NULL;
  int rank_ = 0, size_ = 1, left_ = 0, right_ = 0;
  bool aborted_ = false;
  std::deque<Exchange> pending_;
  std::vector<MPI_Status> statuses_;  // reused: polling must not allocate
};

}  // namespace rr
