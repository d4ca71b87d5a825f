// UcxTransport's bootstrap and teardown: settings, context, worker, the
// address exchange, endpoints, and their release without hanging on a dead
// peer. The data path is in ucx_transport.cc.
#include <dlfcn.h>
#include <sched.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <thread>

#include "common/errors.h"
#include "transport/ucx_transport.h"

namespace rr {

namespace {

// The first line of a file ("" when it cannot be read). Plain stdio, not
// iostreams: the module may be built by a newer compiler than the libstdc++
// the process loads, and iostreams' locale machinery does not survive that.
std::string firstLine(const char* path) {
  std::FILE* f = std::fopen(path, "r");
  if (!f) return std::string();
  char buf[1024];
  std::string s = std::fgets(buf, sizeof buf, f) ? buf : "";
  std::fclose(f);
  if (!s.empty() && s.back() == '\n') s.pop_back();
  return s;
}

}  // namespace

char ucxdetail::processState(int pid, unsigned long long* startTime) {
  const std::string line = firstLine(("/proc/" + std::to_string(pid) + "/stat").c_str());
  const size_t paren = line.rfind(')');  // the command name may hold spaces and parentheses
  if (paren == std::string::npos) return 0;
  // After the name: the state (field 3), fields 4..21, then the start time (22).
  const char* p = line.c_str() + paren + 1;
  char state = 0;
  int used = 0;
  if (std::sscanf(p, " %c%n", &state, &used) != 1) return 0;
  p += used;
  for (int i = 4; i < 22; ++i) {
    if (std::sscanf(p, " %*s%n", &used) != 0 || used == 0) return state;
    p += used;
    used = 0;
  }
  unsigned long long start = 0;
  if (std::sscanf(p, " %llu", &start) == 1 && startTime) *startTime = start;
  return state;
}

namespace {

// Up to this many ranks, endpoints to every peer are created in the
// constructor: wire-up costs stay out of the first collective, an
// unreachable peer fails at creation rather than mid-call, and keepalive
// watches every peer from the start, so a dead one is noticed even by a rank
// that only receives from it. Beyond it (thousands of TCP sockets per
// process) they are created on first use.
constexpr int kEagerEndpointLimit = 256;
// How long the destructor lets endpoints flush before it lets go of them.
constexpr auto kCloseTimeout = std::chrono::seconds(2);
constexpr char kHostMagic[] = "rr-ucx-host/1 ";
constexpr char kAddrMagic[] = "rr-ucx-addr/1 ";
constexpr int kNoticeSlots = 4;
// Idle progress rounds (about 50 ns each) before a wait yields: see
// spinsBeforeYield_. Dedicated cores: after ~50 us, longer than any small
// message takes, so latency never pays a system call per round; but short
// enough that a core shared with other work is handed over soon.
constexpr unsigned kSpinsOversubscribed = 32, kSpinsDedicated = 1024;

// Ranks that share this may share memory: same kernel boot, same hostname,
// same IPC namespace (sysv and posix shm need it; cma copes with pid namespaces).
std::string hostId() {
  char name[256] = {};
  gethostname(name, sizeof(name) - 1);
  char ns[128] = {};
  ssize_t n = readlink("/proc/self/ns/ipc", ns, sizeof(ns) - 1);
  return std::string(name) + "|" + firstLine("/proc/sys/kernel/random/boot_id") + "|" +
         (n > 0 ? std::string(ns, n) : std::string());
}

std::string statusText(ucs_status_t s) { return ucs_status_string(s); }

// "<pid> <start time> <pid namespace>": enough for a peer on this host to
// tell, from /proc, whether we still run (see checkLiveness).
std::string processId() {
  char ns[128] = {};
  ssize_t n = readlink("/proc/self/ns/pid", ns, sizeof(ns) - 1);
  unsigned long long start = 0;
  ucxdetail::processState(getpid(), &start);
  return std::to_string(getpid()) + " " + std::to_string(start) + " " +
         (n > 0 ? std::string(ns, n) : std::string("-"));
}

}  // namespace

std::unique_ptr<Transport> makeUcxTransport(int rank, int size, AddressExchange exchange,
                                            const UcxOptions& opts) {
  return std::make_unique<UcxTransport>(rank, size, std::move(exchange), opts);
}

// Every rank's `mine`, checked: one entry per rank, ours at our index, and
// every entry from this same protocol version.
static std::vector<std::string> gather(const AddressExchange& exchange, int rank, int size,
                                       const std::string& magic, const std::string& mine) {
  std::vector<std::string> all = exchange(magic + mine);
  if (static_cast<int>(all.size()) != size)
    RR_THROW(Error, "rank " + std::to_string(rank) + " (ucx): the address exchange returned " +
                        std::to_string(all.size()) + " entries for " + std::to_string(size) +
                        " ranks");
  for (int r = 0; r < size; ++r) {
    if (all[r].compare(0, magic.size(), magic) != 0)
      RR_THROW(Error, "rank " + std::to_string(rank) + " (ucx): rank " + std::to_string(r) +
                          "'s entry in the address exchange is not a ringreduce UCX " +
                          magic.substr(7, magic.size() - 8) +
                          " (another ringreduce version, or another exchange's data)");
    all[r].erase(0, magic.size());
  }
  if (all[rank] != mine)
    RR_THROW(Error, "rank " + std::to_string(rank) +
                        " (ucx): the address exchange put another rank's entry at our index:"
                        " ranks disagree on their rank numbers");
  return all;
}

UcxTransport::UcxTransport(int rank, int size, AddressExchange exchange, const UcxOptions& opts)
    : rank_(rank), size_(size), deviceBuffers_(opts.deviceBuffers), opts_(opts) {
  RR_CHECK_ARG(size >= 1 && size <= ucxtag::kMaxRanks,
               "UCX transport: size " + std::to_string(size) + " is outside 1.." +
                   std::to_string(ucxtag::kMaxRanks) + " (the tag has 20 rank bits)");
  RR_CHECK_ARG(rank >= 0 && rank < size, "UCX transport: rank " + std::to_string(rank) +
                                             " is outside 0.." + std::to_string(size - 1));
  RR_CHECK_ARG(size == 1 || exchange, "UCX transport, rank " + std::to_string(rank) + " of " +
                                          std::to_string(size) +
                                          ": an address exchange is needed beyond one rank");
  const std::string host = hostId(), me = processId();
  std::vector<std::string> ids = size == 1 ? std::vector<std::string>{host + "\n" + me}
                                           : gather(exchange, rank, size, kHostMagic, host + "\n" + me);
  bool allLocal = true;
  std::vector<std::string> procs(size);
  for (int r = 0; r < size; ++r) {
    const size_t nl = ids[r].find('\n');
    hosts_.push_back(ids[r].substr(0, nl));
    procs[r] = nl == std::string::npos ? std::string() : ids[r].substr(nl + 1);
    allLocal = allLocal && hosts_[r] == host;
  }
  const std::string myNs = me.substr(me.rfind(' ') + 1);
  cpu_set_t cpus;
  const int cores = sched_getaffinity(0, sizeof(cpus), &cpus) == 0 ? CPU_COUNT(&cpus) : 1;
  int local = 0;
  for (const auto& h : hosts_) local += h == host;
  spinsBeforeYield_ = local > cores ? kSpinsOversubscribed : kSpinsDedicated;
  try {
    createWorker(opts, allLocal);
    ucp_worker_attr_t attr{};
    attr.field_mask = UCP_WORKER_ATTR_FIELD_ADDRESS;
    ucs_status_t s = ucp_worker_query(worker_, &attr);
    if (s != UCS_OK)
      RR_THROW(Error, "rank " + std::to_string(rank) + " (ucx): ucp_worker_query failed: " +
                          statusText(s));
    std::string mine(reinterpret_cast<const char*>(attr.address), attr.address_length);
    ucp_worker_release_address(worker_, attr.address);
    std::vector<std::string> addrs =
        size == 1 ? std::vector<std::string>{mine} : gather(exchange, rank, size, kAddrMagic, mine);
    peers_.resize(size);
    for (int r = 0; r < size; ++r) {
      Peer& p = peers_[r];
      p.owner = this;
      p.rank = r;
      p.address = std::move(addrs[r]);
      int pid = 0;
      unsigned long long start = 0;
      char nsBuf[128] = {};
      const bool parsed =
          std::sscanf(procs[r].c_str(), "%d %llu %127s", &pid, &start, nsBuf) == 3;
      const std::string ns = nsBuf;
      if (hosts_[r] == host && parsed && ns == myNs && ns != "-") {
        p.pid = pid;
        p.startTime = start;
      }
    }
    std::lock_guard<std::mutex> lock(mu_);
    if (size <= kEagerEndpointLimit)
      for (int r = 0; r < size; ++r) {
        if (r == rank) continue;
        ensureEp(peers_[r]);
        if (!peers_[r].ep)
          RR_THROW(Error, "rank " + std::to_string(rank) + " (ucx): cannot reach rank " +
                              std::to_string(r) + (peerOnHost(r) ? " (this host)" : " (another host)") +
                              ": " + peers_[r].why);
      }
    for (int i = 0; i < kNoticeSlots; ++i) {
      noticeSlots_.push_back(std::make_unique<NoticeSlot>());
      postNoticeSlot(*noticeSlots_.back());
    }
  } catch (...) {
    release();
    throw;
  }
}

// Each setting: the caller's value wins, then the user's UCX_<name> (or a
// more specific variable in `envAlso`), then ours. settingsText_ records
// which won, for error messages and benchmark records.
void UcxTransport::applySettings(ucp_config_t* config, const UcxOptions& opts, bool allLocal) {
  std::string text;
  auto note = [&](const std::string& name, const std::string& value, const char* source) {
    text += (text.empty() ? "" : "; ") + name + "=" + value + " (" + source + ")";
  };
  auto set = [&](const std::string& name, const std::string& value, const char* source) {
    ucs_status_t s = ucp_config_modify(config, name.c_str(), value.c_str());
    if (s == UCS_OK) return note(name, value, source);
    // A value the caller chose must take effect; one of our defaults that
    // this UCX does not know is only noted.
    if (std::string(source) == "default") return note(name, value, "default, unknown to this UCX");
    RR_THROW(ArgumentError, "rank " + std::to_string(rank_) + " (ucx): UCX rejects " + name + "=" +
                                value + " (" + source + "): " + statusText(s));
  };
  auto choose = [&](const char* name, const std::string& given, const std::string& ours,
                    std::initializer_list<const char*> envAlso = {}) {
    if (!given.empty()) return set(name, given, "ringreduce option");
    for (const char* e : envAlso)
      if (const char* v = std::getenv(e)) return note(e + 4, v, "environment");
    if (const char* v = std::getenv((std::string("UCX_") + name).c_str()))
      return note(name, v, "environment");
    set(name, ours, "default");
  };

  std::string tls = allLocal ? "self,sm" : "self,sm,tcp";
  if (opts.deviceBuffers) tls += ",cuda";
  choose("TLS", opts.tls, tls);
  if (opts.netDevices.empty() && !std::getenv("UCX_NET_DEVICES") && !allLocal)
    RR_THROW(ArgumentError,
             "rank " + std::to_string(rank_) +
                 " (ucx): the ranks are on several hosts and no network device was named, so UCX"
                 " would listen on every interface: set RINGREDUCE_UCX_NET_DEVICES (UcxOptions."
                 "netDevices) or UCX_NET_DEVICES to the interface that reaches the other hosts"
                 " (e.g. the one that carries MASTER_ADDR)");
  choose("NET_DEVICES", opts.netDevices, "lo");
  // Without these two, UCP_ERR_HANDLING_MODE_PEER leaves shared memory unused
  // and one host talks over TCP loopback (0.5 GB/s instead of 3-4 here).
  choose("MM_ERROR_HANDLING", "", "y", {"UCX_POSIX_ERROR_HANDLING", "UCX_SYSV_ERROR_HANDLING"});
  choose("CMA_MEMORY_INVALIDATE", "", "y");
  choose("RNDV_SCHEME", opts.rndvScheme, "get_zcopy");
  // UCX wants both keys once one is given: "intra:8kb" means "intra:8kb,inter:auto".
  std::string thresh = opts.rndvThresh;
  if (thresh.find("intra:") != std::string::npos && thresh.find("inter:") == std::string::npos)
    thresh += ",inter:auto";
  else if (thresh.find("inter:") != std::string::npos && thresh.find("intra:") == std::string::npos)
    thresh += ",intra:auto";
  choose("RNDV_THRESH", thresh, "intra:8kb,inter:auto");
  choose("MAX_RNDV_RAILS", "", "1");
  choose("KEEPALIVE_INTERVAL", opts.keepaliveInterval, "1s");
  for (const auto& kv : opts.extra) set(kv.first, kv.second, "ringreduce option");
  settingsText_ = text;
}

void UcxTransport::createWorker(const UcxOptions& opts, bool allLocal) {
  const std::string me = "rank " + std::to_string(rank_) + " (ucx): ";
  // libucp.so.0 is one soname for every UCX: if Open MPI's pml/osc ucx
  // components loaded the system's older copy first, ours binds to it.
  unsigned major = 0, minor = 0, release = 0;
  ucp_get_version(&major, &minor, &release);
  if (major != UCP_API_MAJOR || minor < UCP_API_MINOR)
    RR_THROW(Error, me + "the UCX loaded in this process is " + std::to_string(major) + "." +
                        std::to_string(minor) + "." + std::to_string(release) +
                        ", older than the " + std::to_string(UCP_API_MAJOR) + "." +
                        std::to_string(UCP_API_MINOR) +
                        " ringreduce was built with (that copy came first, likely through MPI's UCX"
                        " components): import ringreduce"
                        " before MPI starts, or keep MPI off UCX (OMPI_MCA_pml=^ucx OMPI_MCA_osc=^ucx)");
  ucp_config_t* config = nullptr;
  ucs_status_t s = ucp_config_read(nullptr, nullptr, &config);
  if (s != UCS_OK) RR_THROW(Error, me + "ucp_config_read failed: " + statusText(s));
  try {
    applySettings(config, opts, allLocal);
  } catch (...) {
    ucp_config_release(config);
    throw;
  }
  ucp_params_t params{};
  params.field_mask = UCP_PARAM_FIELD_FEATURES | UCP_PARAM_FIELD_MT_WORKERS_SHARED |
                      UCP_PARAM_FIELD_ESTIMATED_NUM_EPS | UCP_PARAM_FIELD_NAME;
  params.features = UCP_FEATURE_TAG;
  params.mt_workers_shared = 0;
  params.estimated_num_eps = static_cast<size_t>(size_);
  params.name = "ringreduce";
  s = ucp_init(&params, config, &context_);
  ucp_config_release(config);
  if (s != UCS_OK)
    RR_THROW(Error, me + "ucp_init failed: " + statusText(s) + " (settings: " + settingsText_ + ")");

  ucp_context_attr_t cattr{};
  cattr.field_mask = UCP_ATTR_FIELD_MEMORY_TYPES;
  if (ucp_context_query(context_, &cattr) == UCS_OK)
    cudaSupported_ = (cattr.memory_types & UCS_BIT(UCS_MEMORY_TYPE_CUDA)) != 0;
  if (deviceBuffers_ && !cudaSupported_)
    RR_THROW(ArgumentError,
             me + "device buffers were asked for, but this UCX has no CUDA transports"
                  " (cuda_copy/cuda_ipc need libcuda and a GPU; settings: " +
                 settingsText_ + "): move device buffers over NCCL or stage them through host memory");

  ucp_worker_params_t wparams{};
  wparams.field_mask = UCP_WORKER_PARAM_FIELD_THREAD_MODE;
  wparams.thread_mode = UCS_THREAD_MODE_SERIALIZED;  // our mutex serialises every call
  s = ucp_worker_create(context_, &wparams, &worker_);
  if (s != UCS_OK) RR_THROW(Error, me + "ucp_worker_create failed: " + statusText(s));
}

bool UcxTransport::cudaMemoryAvailable(std::string* why) {
  ucp_config_t* config = nullptr;
  if (ucp_config_read(nullptr, nullptr, &config) != UCS_OK) {
    if (why) *why = "ucp_config_read failed";
    return false;
  }
  ucp_config_modify(config, "TLS", "self,cuda");
  ucp_params_t params{};
  params.field_mask = UCP_PARAM_FIELD_FEATURES;
  params.features = UCP_FEATURE_TAG;
  ucp_context_h ctx = nullptr;
  const ucs_status_t s = ucp_init(&params, config, &ctx);
  ucp_config_release(config);
  if (s != UCS_OK) {
    if (why) *why = std::string("ucp_init with TLS=self,cuda failed: ") + statusText(s);
    return false;
  }
  ucp_context_attr_t attr{};
  attr.field_mask = UCP_ATTR_FIELD_MEMORY_TYPES;
  const bool cuda = ucp_context_query(ctx, &attr) == UCS_OK &&
                    (attr.memory_types & UCS_BIT(UCS_MEMORY_TYPE_CUDA)) != 0;
  ucp_cleanup(ctx);
  if (!cuda && why) *why = "this UCX reports no CUDA memory type (cuda_copy/cuda_ipc not loaded)";
  return cuda;
}

// Under mu_. An endpoint that cannot be made marks the peer failed, so every
// exchange with it reports why instead of waiting for its deadline.
void UcxTransport::ensureEp(Peer& p) {
  if (p.ep || p.failure != UCS_OK) return;
  ucp_ep_params_t ep{};
  ep.field_mask = UCP_EP_PARAM_FIELD_REMOTE_ADDRESS | UCP_EP_PARAM_FIELD_ERR_HANDLING_MODE |
                  UCP_EP_PARAM_FIELD_ERR_HANDLER;
  ep.address = reinterpret_cast<const ucp_address_t*>(p.address.data());
  ep.err_mode = UCP_ERR_HANDLING_MODE_PEER;
  ep.err_handler.cb = &UcxTransport::onEpError;
  ep.err_handler.arg = &p;
  ucs_status_t s = ucp_ep_create(worker_, &ep, &p.ep);
  if (s != UCS_OK) {
    p.ep = nullptr;
    p.failure = s;
    p.why = "no endpoint to it: " + statusText(s) + " (settings: " + settingsText_ + ")";
    ++failedPeers_;
  }
}

// Called inside ucp_worker_progress (so under mu_). UCX fails the endpoint's
// requests itself; receives are not tied to an endpoint, so check() fails
// those from this peer.
void UcxTransport::onEpError(void* arg, ucp_ep_h, ucs_status_t status) {
  Peer* p = static_cast<Peer*>(arg);
  if (p->failure == UCS_OK) {
    p->failure = status;
    p->why = std::string("UCX: ") + ucs_status_string(status);
    ++p->owner->failedPeers_;
  }
}

// Under mu_. Force mode drops in-flight operations (they complete with
// UCS_ERR_CANCELED) and never waits for the peer; otherwise the endpoint
// flushes first, so the last eager messages reach a live peer.
void UcxTransport::closeEndpoints(bool force) noexcept {
  std::vector<void*> closing;
  for (Peer& p : peers_) {
    if (!p.ep) continue;
    ucp_request_param_t param{};
    param.op_attr_mask = UCP_OP_ATTR_FIELD_FLAGS;
    param.flags = (force || p.failure != UCS_OK) ? UCP_EP_CLOSE_FLAG_FORCE : 0;
    ucs_status_ptr_t r = ucp_ep_close_nbx(p.ep, &param);
    p.ep = nullptr;
    if (UCS_PTR_IS_PTR(r)) closing.push_back(r);
  }
  auto until = Clock::now() + kCloseTimeout;
  while (!closing.empty()) {
    ucp_worker_progress(worker_);
    for (size_t i = 0; i < closing.size();) {
      if (ucp_request_check_status(closing[i]) != UCS_INPROGRESS) {
        ucp_request_free(closing[i]);
        closing[i] = closing.back();
        closing.pop_back();
      } else {
        ++i;
      }
    }
    if (Clock::now() > until) {
      // A stopped peer never acknowledges the flush: let the worker's
      // destruction take the endpoints down.
      for (void* r : closing) ucp_request_free(r);
      break;
    }
    std::this_thread::yield();
  }
}

UcxTransport::~UcxTransport() {
  std::lock_guard<std::mutex> lock(mu_);
  bool inFlight = false;
  for (const Exchange* x : live_) inFlight = inFlight || x->inFlight > 0;
  for (const auto& s : noticeSends_) inFlight = inFlight || !s->done;
  if (inFlight && !aborted_) abortLocked();  // abandoned exchanges: let go of their buffers now
  release();
}

// Under mu_ (or from the constructor). Never throws, never waits for a peer
// longer than kCloseTimeout.
void UcxTransport::release() noexcept {
  if (worker_) {
    for (auto& s : noticeSlots_)
      if (s->req) ucp_request_cancel(worker_, s->req);
    closeEndpoints(aborted_);
    drainIdle();  // closed endpoints are retired in progress
    ucp_worker_destroy(worker_);
    worker_ = nullptr;
  }
  if (context_) {
    ucp_cleanup(context_);
    context_ = nullptr;
  }
  if (libcuda_) {
    dlclose(libcuda_);
    libcuda_ = nullptr;
  }
}

}  // namespace rr
