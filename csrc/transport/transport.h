// The one interface every algorithm talks to. A transport moves byte ranges
// between any two ranks and knows nothing of element types or reduction.
//
// An exchange is a set of sends to and receives from any peers, posted
// together; start() returns its id and wait(id) completes it. Exchanges may
// be waited in any order (the ring waits them in start order; point-to-point
// work completes out of order). Between one pair of ranks, messages on one
// channel are matched in the order they were posted, so two ranks that post
// matching exchanges in the same order pair them correctly.
//
// Every message carries the tag of the collective it belongs to (setTag), a
// 64-bit fingerprint (see comm/fingerprint.h). A receive that meets a message
// with another tag throws MismatchError naming both, and the bytes are never
// handed to the caller as data. Transports carry as many tag bits as their
// wire allows (tagBits()); fingerprint.h folds the tag to that width.
//
// Peers can also send notices (a rank aborted, a rank refused a call) on a
// separate control path. Every wait checks for them and hands them to the
// notice handler, which may throw: that is how a rank that detected a
// mismatch or timed out makes every other rank raise at once instead of
// waiting for its deadline.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <string>

namespace rr {

using Clock = std::chrono::steady_clock;

// Independent matching spaces between the same two ranks: collective traffic
// and point-to-point traffic never pair with each other.
enum class Channel : int { kCollective = 0, kPointToPoint = 1 };
constexpr int kNumChannels = 2;

struct Xfer {
  int peer = -1;
  void* data = nullptr;  // read by sends, written by receives
  size_t bytes = 0;
};

// A control message between communicators (fixed size, so it fits any wire).
struct Notice {
  enum Kind : int32_t { kAbortError = 0, kAbortTimeout = 1, kAbortMismatch = 2, kRefused = 3 };
  int32_t kind = kAbortError;
  int32_t origin = -1;   // the rank that sent it
  uint64_t seq = 0;      // the call it is about (kRefused)
  uint64_t tag = 0;      // that call's fingerprint (kRefused)
  int32_t p2p = 0;       // 1: about a send/recv (seq counts that pair's calls)
  // The communicator it belongs to, as the transport numbers them (0: not
  // numbered). MPI may reuse a freed communicator's context for a new one,
  // so a notice still on its way must not reach the new one.
  int32_t world = 0;
  char text[224] = {};   // why, NUL-terminated
  void setText(const std::string& s) {
    std::strncpy(text, s.c_str(), sizeof(text) - 1);
    text[sizeof(text) - 1] = '\0';
  }
};
static_assert(sizeof(Notice) == 256, "a notice is one fixed-size message");

class Transport {
 public:
  using ExchangeId = uint64_t;
  using NoticeHandler = std::function<void(const Notice&)>;
  using WaitHook = std::function<void()>;

  virtual ~Transport() = default;

  virtual int rank() const = 0;
  virtual int size() const = 0;
  // "mpi", "ucx", "loopback", "nccl", "self", ...
  virtual std::string name() const = 0;
  // True when the buffers it moves live in device memory.
  virtual bool onDevice() const { return false; }
  // How many low bits of a tag survive the wire (64 where the whole tag fits).
  virtual int tagBits() const { return 64; }
  // False for a wire with no room for tags (NCCL): then the communicator
  // compares fingerprints over the host transport instead.
  virtual bool carriesTags() const { return true; }

  // Messages of later exchanges carry `tag` on `channel`.
  void setTag(uint64_t tag, Channel channel = Channel::kCollective) {
    tag_ = tag;
    channel_ = channel;
  }
  uint64_t tag() const { return tag_; }
  Channel channel() const { return channel_; }

  // Post sends and receives with any peers (peer == rank() is not allowed;
  // zero-byte entries are real messages: they carry the tag). Returns at once.
  virtual ExchangeId start(const Xfer* sends, int numSends, const Xfer* recvs, int numRecvs) = 0;
  // Non-blocking: true once the exchange is complete and its receives checked.
  virtual bool test(ExchangeId id) = 0;
  // Until the exchange completes, or TimeoutError at the deadline. Afterwards
  // its received bytes may be consumed: on the host they are in memory; on a
  // device transport they are ordered before later work on the reduction
  // stream (the host does not block).
  virtual void wait(ExchangeId id) = 0;
  // Let in-flight transfers move; host transports progress only inside calls.
  virtual void poll() {}
  // For a receive from any source: true when a message from `peer` waits on
  // the point-to-point channel with no receive posted for it (the next one
  // that peer sent this rank). Non-blocking. Transports that cannot look
  // (the device ones) return false from canProbe().
  virtual bool canProbe() const { return false; }
  virtual bool probe(int /*peer*/) { return false; }

  // The ring's step: send to rank+1, receive from rank-1; either side may be
  // empty (then nothing is posted for it, not even a zero-byte message).
  ExchangeId startRing(const void* send, size_t sendBytes, void* recv, size_t recvBytes) {
    const int n = size(), r = rank();
    Xfer s{(r + 1) % n, const_cast<void*>(send), sendBytes};
    Xfer v{(r - 1 + n) % n, recv, recvBytes};
    return start(&s, sendBytes > 0 ? 1 : 0, &v, recvBytes > 0 ? 1 : 0);
  }

  // A collective must end by this time or raise TimeoutError.
  void setDeadline(Clock::time_point deadline) { deadline_ = deadline; }
  Clock::time_point deadline() const { return deadline_; }

  // Send a notice to `peers` (all others when empty). Best effort: never
  // blocks for long and never throws.
  virtual void sendNotice(const Notice& notice, const int* peers, int numPeers) noexcept = 0;
  void setNoticeHandler(NoticeHandler handler) { onNotice_ = std::move(handler); }
  // Called every few milliseconds while a wait blocks (the bindings check
  // for Ctrl-C there); it may throw, which abandons the wait.
  void setWaitHook(WaitHook hook) { onWait_ = std::move(hook); }

  // For waits outside the transport (host shared memory): delivers the
  // notices that arrived (the handler may throw) and, with `hook`, runs the
  // wait hook (which may throw too).
  void checkIn(bool hook) {
    deliverArrivedNotices();
    if (hook) waitHook();
  }

  // Cancel everything in flight. Later calls fail. Never throws.
  virtual void abort() noexcept = 0;
  // After abort(): false when a transfer could not be cancelled and may
  // still write into its buffers (they must not be freed).
  virtual bool settled() const noexcept { return true; }

 protected:
  // Derived transports call these from their wait loops.
  void deliverNotice(const Notice& n) {
    if (onNotice_) onNotice_(n);
  }
  void waitHook() {
    if (onWait_) onWait_();
  }
  // checkIn(): hand every notice that has arrived to the handler.
  virtual void deliverArrivedNotices() {}

  Clock::time_point deadline_ = Clock::time_point::max();
  uint64_t tag_ = 0;
  Channel channel_ = Channel::kCollective;
  NoticeHandler onNotice_;
  WaitHook onWait_;
};

}  // namespace rr
