// UcxTransport's control path: notices (a fixed-size message on the notice
// class of the tag, from any source), abort, and the /proc look at peers of
// this host that UCX's keepalive cannot give. The data path is in
// ucx_transport.cc, bootstrap and teardown in ucx_setup.cc.
#include <thread>

#include "transport/ucx_transport.h"

namespace rr {
namespace {

// How long sendNotice lets its messages leave before it returns.
constexpr auto kNoticeFlush = std::chrono::milliseconds(10);
// How long a receive already under way may stall (no UCX event at all)
// before abort() gives up on it; one that moves is let finish (256 MiB took
// 0.15 s here).
constexpr auto kAbortDrain = std::chrono::seconds(1);
// How long abort() and teardown let UCX retire closed endpoints.
constexpr auto kRetire = std::chrono::milliseconds(200);

}  // namespace

// ---- callbacks (inside ucp_worker_progress, so under mu_) ----

void UcxTransport::onNoticeRecv(void* request, ucs_status_t status,
                                const ucp_tag_recv_info_t* info, void* user) {
  NoticeSlot* s = static_cast<NoticeSlot*>(user);
  if (info) s->info = *info;
  s->status = status;
  s->done = true;
  s->req = nullptr;
  ucp_request_free(request);
}

void UcxTransport::onNoticeSent(void* request, ucs_status_t, void* user) {
  NoticeSend* s = static_cast<NoticeSend*>(user);
  s->done = true;
  s->req = nullptr;
  ucp_request_free(request);
}

void UcxTransport::postNoticeSlot(NoticeSlot& s) {
  s.done = false;
  s.status = UCS_INPROGRESS;
  ucp_request_param_t param{};
  param.op_attr_mask =
      UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA | UCP_OP_ATTR_FIELD_RECV_INFO;
  param.cb.recv = &UcxTransport::onNoticeRecv;
  param.user_data = &s;
  param.recv_info.tag_info = &s.info;
  ucs_status_ptr_t r = ucp_tag_recv_nbx(worker_, &s.buf, sizeof(Notice), ucxtag::kNoticeBit,
                                        ucxtag::kNoticeMask, &param);
  if (UCS_PTR_IS_PTR(r)) {
    s.req = r;
  } else {
    s.done = true;
    s.status = UCS_PTR_STATUS(r);
  }
}

// ---- notices ----

void UcxTransport::sendNotice(const Notice& notice, const int* peers, int numPeers) noexcept {
  try {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (!worker_) return;
      const int n = numPeers > 0 && peers ? numPeers : size_;
      for (int i = 0; i < n; ++i) {
        const int r = numPeers > 0 && peers ? peers[i] : i;
        if (r < 0 || r >= size_ || r == rank_) continue;
        Peer& p = peers_[r];
        // After abort() the endpoints are gone: a notice makes a fresh one,
        // but only on this host. A TCP connect blocks (UCX_TCP_CONN_NB=n), for
        // minutes if the peer's host is gone; a remote peer learns of our
        // abort from its closed connection instead.
        if (peerOnHost(r)) ensureEp(p);
        if (!p.ep || p.failure != UCS_OK) continue;
        auto s = std::make_unique<NoticeSend>();
        s->buf = notice;
        ucp_request_param_t param{};
        param.op_attr_mask = UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA;
        param.cb.send = &UcxTransport::onNoticeSent;
        param.user_data = s.get();
        ucs_status_ptr_t st =
            ucp_tag_send_nbx(p.ep, &s->buf, sizeof(Notice), ucxtag::notice(rank_), &param);
        if (UCS_PTR_IS_PTR(st)) {
          s->req = st;
          noticeSends_.push_back(std::move(s));
        }
      }
    }
    // Let them leave (eager: a copy into the peer's FIFO or socket), but never
    // wait long: a stopped peer keeps its notice in our queue until teardown.
    const auto until = Clock::now() + kNoticeFlush;
    for (;;) {
      {
        std::lock_guard<std::mutex> lock(mu_);
        progressLocked();
        if (noticeSends_.empty()) return;
      }
      if (Clock::now() > until) return;
      std::this_thread::yield();
    }
  } catch (...) {
  }
}

void UcxTransport::abort() noexcept {
  aborted_ = true;  // a wait spinning in another thread throws at its next round
  std::lock_guard<std::mutex> lock(mu_);
  abortLocked();
}

// Under mu_. Afterwards UCX holds none of the callers' buffers. In order:
// cancel the receives not matched yet; let the matched ones finish with the
// endpoints still open (a cma read under way cannot be cancelled, and
// closing its endpoint would not stop it: UCX would go on reading into our
// buffer while it retires the closed endpoint, after abort() returned); only
// then force-close the endpoints, which completes every send with
// UCS_ERR_CANCELED; and let UCX retire them before we return.
void UcxTransport::abortLocked() noexcept {
  aborted_ = true;
  if (abortDone_ || !worker_) return;
  abortDone_ = true;
  for (Exchange* x : live_)
    for (Op& op : x->ops)
      if (op.req && op.isRecv) ucp_request_cancel(worker_, op.req);  // may complete it here
  for (auto& s : noticeSlots_)
    if (s->req) ucp_request_cancel(worker_, s->req);
  // A read that moves keeps the drain going however large it is; one stalled
  // for kAbortDrain (a TCP sender that stopped) is given up.
  auto lastEvent = Clock::now();
  for (;;) {
    bool held = false;
    for (const Exchange* x : live_)
      for (const Op& op : x->ops) held = held || (op.req && op.isRecv);
    if (!held) break;
    const auto now = Clock::now();
    if (ucp_worker_progress(worker_)) lastEvent = now;
    else if (now - lastEvent > kAbortDrain) break;
  }
  closeEndpoints(true);
  drainIdle();
}

// Under mu_. Progress until UCX has had nothing to do for a while (closed
// endpoints are retired in progress; destroying the worker before that trips
// UCX's own assertions), at most kRetire.
void UcxTransport::drainIdle() noexcept {
  const auto until = Clock::now() + kRetire;
  for (unsigned quiet = 0; quiet < 64 && Clock::now() < until;)
    quiet = ucp_worker_progress(worker_) ? 0 : quiet + 1;
}

// ---- peers and requests ----

// Under mu_. UCX's keepalive misses a peer that died but was not reaped yet
// (a zombie keeps its pid and start time), so look at /proc ourselves for the
// peers of this host that `x` waits on.
void UcxTransport::checkLiveness(const Exchange& x) {
  for (const Op& op : x.ops) {
    Peer& p = peers_[op.peer];
    if (op.done || !p.pid || p.failure != UCS_OK) continue;
    unsigned long long start = 0;
    const char state = ucxdetail::processState(p.pid, &start);
    if (state && state != 'Z' && state != 'X' && start == p.startTime) continue;
    p.failure = UCS_ERR_ENDPOINT_TIMEOUT;
    p.why = "its process " + std::to_string(p.pid) + " has exited";
    ++failedPeers_;
  }
}

size_t UcxTransport::requestsHeld() const {
  std::lock_guard<std::mutex> lock(mu_);
  size_t n = 0;
  for (const Exchange* x : live_)
    for (const Op& op : x->ops) n += op.req != nullptr;
  for (const auto& s : noticeSends_) n += s->req != nullptr;
  return n;
}

}  // namespace rr
