// Any-peer exchanges over UCX's tagged ucp send/recv: shared memory (sysv or
// posix for small messages, cma zero-copy rendezvous for large ones) on one
// host, TCP across hosts, CUDA transports where the UCX build has them.
// Compiled only when the build finds UCX (RR_HAVE_UCX).
//
// Progress. The transport has no thread of its own and no data moves between
// calls: start() posts and returns; test(), wait() and poll() drive
// ucp_worker_progress. (UCX keeps one "async" thread asleep in epoll_wait
// for connection events and timers; it used 0 CPU ticks in a 3 s ring test
// here.) A rendezvous message needs both ends to progress (the receiver
// pulls the bytes, then acknowledges), so a rank that stops calling in stalls
// its peers' large transfers, never its own memory. An idle transport costs
// no CPU; a waiting one spins (see spinsBeforeYield_).
//
// Threads. Every UCX call happens under one mutex, held for at most 16
// progress rounds at a time (~1 us), so abort() and sendNotice() may come from
// another thread while a wait spins; the worker runs in UCX's SERIALIZED mode.
//
// Matching. A receive matches any fingerprint from the right source on the
// right channel (a tag mask); the sender's fingerprint, from the receive's
// completion info, is then compared with ours. Tag matching in UCX is ordered
// per endpoint (eager and rendezvous alike: the rendezvous request travels on
// the same lane as eager data), and posted receives with one mask match in
// posting order, so exchanges posted in the same order on two ranks pair up.
//
// Failure. Endpoints use UCP_ERR_HANDLING_MODE_PEER: a dead peer fails its
// endpoint (TCP at once; shared memory at the next keepalive round, which we
// make 1 s by default), and every wait involving it throws rr::Error naming
// it. UCX's keepalive takes a zombie for alive (it compares process start
// times only), so a wait that stalls on a peer of this host also looks at
// that peer's /proc entry twice a second.
//
// Shared memory under that mode. UCX uses sysv/posix only if they advertise
// error handling (MM_ERROR_HANDLING), and cma's rendezvous only if cma claims
// memory invalidation (CMA_MEMORY_INVALIDATE), which it does not implement;
// with UCX's defaults one host talks over TCP loopback. We turn both on and
// force the get_zcopy rendezvous: the receiver pulls the bytes inside its own
// progress, so an aborted receiver's memory is not written after abort()
// returns. The cost: a sender that aborts may have its buffer read by a peer
// that has not noticed yet (benchmarks/dev/ucx_notes.md, Finding 1).
#pragma once

#include <ucp/api/ucp.h>

#include <atomic>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "transport/transport.h"

namespace rr {

// The 64-bit ucp tag. High bits first:
//   bit  63     class: 0 data, 1 notice
//   bit  62     channel: 0 collective, 1 point-to-point
//   bits 42-61  source rank (20 bits: up to 1,048,576 ranks)
//   bits  0-41  the call's fingerprint, folded by fp::fold to 42 bits
// A data receive masks bits 42-63 (class, channel and source must match); a
// notice receive masks bit 63 only (any source).
namespace ucxtag {
constexpr int kFingerprintBits = 42;
constexpr int kRankBits = 20;
constexpr int kRankShift = kFingerprintBits;
constexpr int kMaxRanks = 1 << kRankBits;
constexpr uint64_t kFingerprintMask = (uint64_t(1) << kFingerprintBits) - 1;
constexpr uint64_t kChannelBit = uint64_t(1) << 62;
constexpr uint64_t kNoticeBit = uint64_t(1) << 63;
constexpr uint64_t kDataMask = ~kFingerprintMask;
constexpr uint64_t kNoticeMask = kNoticeBit;

constexpr uint64_t data(int source, Channel channel, uint64_t folded) {
  return (channel == Channel::kPointToPoint ? kChannelBit : 0) |
         uint64_t(source) << kRankShift | (folded & kFingerprintMask);
}
constexpr uint64_t notice(int source) { return kNoticeBit | uint64_t(source) << kRankShift; }
constexpr int source(uint64_t tag) { return int((tag >> kRankShift) & (kMaxRanks - 1)); }
}  // namespace ucxtag

namespace ucxdetail {
// A process's state letter from /proc/<pid>/stat ('R', 'S', 'Z', ...) and its
// start time in clock ticks; 0 when there is no such process.
char processState(int pid, unsigned long long* startTime);
}  // namespace ucxdetail

// What UCX may use. An empty field means: the UCX_* variable of the same name
// when the user set one, else our default (see ucx_notes.md for the numbers
// behind them). Nothing here changes the process environment: the values go
// into the ucp config with ucp_config_modify.
struct UcxOptions {
  // Network devices UCX may use and listen on (UCX_NET_DEVICES syntax:
  // "lo", "eth0", "mlx5_0:1"). Default: "lo" when every rank is on this
  // host; ranks on several hosts without a device named here or in the
  // environment is an ArgumentError, so UCX never listens on interfaces
  // nobody chose. Shared memory and self are always allowed on one host.
  std::string netDevices;
  // UCX_TLS. Default "self,sm" on one host, "self,sm,tcp" across hosts,
  // with ",cuda" added when deviceBuffers is set.
  std::string tls;
  // UCX_RNDV_THRESH (eager below, rendezvous from). Default "intra:8kb,inter:auto"
  // ("intra:X" alone is completed with ",inter:auto").
  std::string rndvThresh;
  // UCX_RNDV_SCHEME. Default "get_zcopy" (see the header comment).
  std::string rndvScheme;
  // UCX_KEEPALIVE_INTERVAL: how soon a dead shared-memory peer is noticed. Default "1s".
  std::string keepaliveInterval;
  // Any other ucp/uct setting, name without the UCX_ prefix, applied last.
  std::vector<std::pair<std::string, std::string>> extra;
  // The caller will pass device pointers: require UCX's CUDA transports
  // (ArgumentError without them). When false, device pointers are refused.
  bool deviceBuffers = false;
};

// An all-gather of opaque bytes done by the caller (a c10d Store, MPI, or
// trivially for one rank): returns every rank's `mine`, in rank order. The
// constructor calls it twice, in the same order on every rank (host ids, then
// worker addresses); with one rank it is not called and may be empty.
using AddressExchange = std::function<std::vector<std::string>(const std::string& mine)>;

class UcxTransport : public Transport {
 public:
  UcxTransport(int rank, int size, AddressExchange exchange, const UcxOptions& opts);
  ~UcxTransport() override;
  UcxTransport(const UcxTransport&) = delete;
  UcxTransport& operator=(const UcxTransport&) = delete;

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  std::string name() const override { return "ucx"; }
  bool onDevice() const override { return deviceBuffers_; }
  int tagBits() const override { return ucxtag::kFingerprintBits; }

  ExchangeId start(const Xfer* sends, int numSends, const Xfer* recvs, int numRecvs) override;
  bool test(ExchangeId id) override;
  void wait(ExchangeId id) override;
  void poll() override;
  bool canProbe() const override { return !deviceBuffers_; }
  bool probe(int peer) override;
  void sendNotice(const Notice& notice, const int* peers, int numPeers) noexcept override;
  void abort() noexcept override;

  // The settings UCX runs with and where each came from, for logs and benchmark
  // records: "TLS=self,sm (default); NET_DEVICES=lo (default); ...".
  const std::string& settings() const { return settingsText_; }
  // UCX reported CUDA memory support (cuda_copy/cuda_ipc loaded and a GPU seen).
  bool cudaSupported() const { return cudaSupported_; }
  // The options it was made with (a device transport beside it copies them).
  const UcxOptions& options() const { return opts_; }
  // Local, no peers: whether this process's UCX has CUDA memory support
  // (a throwaway context with the CUDA transports; `why` says why not).
  static bool cudaMemoryAvailable(std::string* why);
  // True when `peer` reported the same host id (hostname, boot id, IPC namespace).
  bool peerOnHost(int peer) const { return hosts_.at(peer) == hosts_.at(rank_); }
  // UCX requests still held for our operations (tests check abort() leaves none).
  size_t requestsHeld() const;

 protected:
  void deliverArrivedNotices() override;

 private:
  struct Exchange;
  struct Op {
    Exchange* x = nullptr;
    void* req = nullptr;  // the UCX request while in flight
    int peer = -1;
    size_t bytes = 0;
    bool isRecv = false, done = false, checked = false;
    ucs_status_t status = UCS_INPROGRESS;
    ucp_tag_recv_info_t info{};
  };
  struct Exchange {
    ExchangeId id = 0;
    uint64_t tag = 0;  // the full fingerprint
    Channel channel = Channel::kCollective;
    std::vector<Op> ops;  // reserved before posting: callbacks hold &ops[i]
    size_t inFlight = 0;  // ops with a UCX request
    bool dirty = false;   // an op finished since the last check
    bool failed = false;
    int errorKind = 0;  // 0 Error, 1 MismatchError, 2 TimeoutError
    std::string error;
  };
  struct Peer {
    UcxTransport* owner = nullptr;
    int rank = -1;
    std::string address;  // its worker address
    ucp_ep_h ep = nullptr;
    ucs_status_t failure = UCS_OK;  // set by the endpoint's error callback or checkLiveness()
    std::string why;                // that failure in words
    int pid = 0;                    // on this host and in our pid namespace: its process
    unsigned long long startTime = 0;
  };
  struct NoticeSlot {  // a posted receive for notices from anyone
    Notice buf;
    void* req = nullptr;
    bool done = false;
    ucs_status_t status = UCS_INPROGRESS;
    ucp_tag_recv_info_t info{};
  };
  struct NoticeSend {
    Notice buf;
    void* req = nullptr;
    bool done = false;
  };

  // ucx_setup.cc: bootstrap and teardown.
  void applySettings(ucp_config_t* config, const UcxOptions& opts, bool allLocal);
  void createWorker(const UcxOptions& opts, bool allLocal);
  void ensureEp(Peer& p);
  void closeEndpoints(bool force) noexcept;
  void release() noexcept;
  static void onEpError(void* arg, ucp_ep_h ep, ucs_status_t status);

  // ucx_transport.cc: data path.
  void checkUsable() const;
  void checkLiveness(const Exchange& x);
  void probeCuda();
  void checkBuffer(const Xfer& x, const char* what);
  void postOp(Exchange& x, Op& op, void* data);
  void postNoticeSlot(NoticeSlot& s);
  unsigned progressLocked();
  Exchange* find(ExchangeId id);
  bool step(Exchange* x, unsigned rounds, unsigned* events);
  bool settle(Exchange* x);
  void check(Exchange& x);
  enum Problem { kPeerFailed, kStatus, kForeign, kSize };
  void fail(Exchange& x, const Op& op, Problem problem);
  [[noreturn]] void throwFailed(const Exchange& x) const;
  [[noreturn]] void throwTimeout(const Exchange& x) const;
  void abortLocked() noexcept;
  void drainIdle() noexcept;
  std::string where(const Exchange& x) const;
  Exchange* newExchange();
  static void onSendDone(void* request, ucs_status_t status, void* user);
  static void onRecvDone(void* request, ucs_status_t status, const ucp_tag_recv_info_t* info,
                         void* user);
  static void onNoticeRecv(void* request, ucs_status_t status, const ucp_tag_recv_info_t* info,
                           void* user);
  static void onNoticeSent(void* request, ucs_status_t status, void* user);

  int rank_ = 0, size_ = 1;
  bool deviceBuffers_ = false, cudaSupported_ = false;
  UcxOptions opts_;
  void* libcuda_ = nullptr;                // only if the process loaded it: we never load it
  void* cuPointerGetAttribute_ = nullptr;  // from it, to spot device pointers
  unsigned long long loadedObjects_ = 0;   // the loader's count when we last looked for libcuda
  char zeroByte_ = 0;                      // the address of zero-byte messages
  std::string settingsText_;
  std::vector<std::string> hosts_;
  ucp_context_h context_ = nullptr;
  ucp_worker_h worker_ = nullptr;
  std::vector<Peer> peers_;  // by rank; never resized after construction (callbacks hold &peers_[i])
  int failedPeers_ = 0;
  // Idle progress rounds before a wait yields its core: soon when this host
  // runs more of our ranks than we have cores (the peer we wait for may need
  // ours), late otherwise (a yield costs a system call per round).
  unsigned spinsBeforeYield_ = 32;
  Clock::time_point nextLiveness_{};

  mutable std::mutex mu_;  // guards everything below and every UCX call
  std::atomic<bool> aborted_{false};  // set before taking mu_, so a spinning wait sees it
  bool abortDone_ = false;
  ExchangeId nextId_ = 1;
  // Exchanges are owned by pool_ and reused (no allocation per call once the
  // pool covers the most ever in flight); live_ holds the unfinished ones,
  // a handful, so a linear search finds an id faster than a hash map.
  std::vector<std::unique_ptr<Exchange>> pool_;
  std::vector<Exchange*> live_, spare_;
  std::vector<std::unique_ptr<NoticeSlot>> noticeSlots_;
  std::deque<std::unique_ptr<NoticeSend>> noticeSends_;
  std::vector<Notice> noticesIn_;  // received, not yet delivered
};

std::unique_ptr<Transport> makeUcxTransport(int rank, int size, AddressExchange exchange,
                                            const UcxOptions& opts);

}  // namespace rr
