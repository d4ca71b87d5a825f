#include "shm/shm_world.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <random>
#include <thread>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define RR_CPU_RELAX() _mm_pause()
#else
#define RR_CPU_RELAX() std::atomic_signal_fence(std::memory_order_seq_cst)
#endif

#include "common/errors.h"
#include "common/fingerprint.h"

namespace rr {
namespace {

constexpr uint64_t kMagic = 0x5252534d48000001ull;  // "RRSMH", layout 1
constexpr size_t kHeaderBytes = 4096;
constexpr size_t kSlotHeaderBytes = 512;
constexpr size_t kPage = 4096;
// How often a wait looks beyond the counters (notices, board, deadline).
constexpr uint64_t kSpinsPerLook = 256;
// Past this many spins a wait yields its core on every turn: with more ranks
// than cores the peer it waits for may need this very core.
constexpr uint64_t kSpinsBeforeYield = 64;
constexpr auto kHookEvery = std::chrono::milliseconds(5);

struct SegmentHeader {
  uint64_t magic;
  uint64_t cookie;
  uint64_t size;
  uint64_t roundBytes;
};

size_t roundUp(size_t x, size_t to) { return (x + to - 1) / to * to; }

std::string errnoText(const char* what) { return std::string(what) + ": " + std::strerror(errno); }

}  // namespace

// One rank's slot. Counters and the board sit on lines of their own, away
// from the data, so polling them does not fight the writes of the bytes.
struct ShmWorld::Slot {
  alignas(128) std::atomic<uint64_t> counter[2];
  // Per parity, written before kArrived: the call's fingerprint mixed with
  // the rank's history (shown as they are on the board), so one load of
  // this line checks both.
  std::atomic<uint64_t> fingerprint[2];
  // Once the rank gave up: the first round of the call it was in (its parts
  // from there on are not to be used), and its notice's kind. On the line
  // readers load anyway.
  std::atomic<uint64_t> abandonedFrom;
  std::atomic<uint64_t> abandonedKind;
  alignas(128) std::atomic<uint64_t> boardGen;  // odd while being written
  std::atomic<uint64_t> boardSeq;
  std::atomic<uint64_t> boardTag;
  std::atomic<uint64_t> boardHistory;
};
static_assert(sizeof(std::atomic<uint64_t>) == 8 && std::atomic<uint64_t>::is_always_lock_free,
              "shared-memory counters must be lock-free 64-bit atomics");

ShmWorld::ShmWorld(int rank, int size, int64_t roundBytes, void* base, size_t bytes)
    : rank_(rank), size_(size), roundBytes_(roundBytes), base_(base), bytes_(bytes),
      slotStride_(roundUp(kSlotHeaderBytes + 4 * static_cast<size_t>(roundBytes), kPage)) {
  static_assert(sizeof(Slot) <= kSlotHeaderBytes, "slot header fits its lines");
}

ShmWorld::~ShmWorld() {
  if (base_) munmap(base_, bytes_);
}

namespace {

size_t segmentBytes(int size, int64_t roundBytes) {
  return kHeaderBytes +
         roundUp(kSlotHeaderBytes + 4 * static_cast<size_t>(roundBytes), kPage) * static_cast<size_t>(size);
}

// Rank 0: a new segment of `bytes` named `name`, its pages reserved; -1 and
// *err when it could not (then nothing is left behind).
int makeSegment(const std::string& name, size_t bytes, std::string* err) {
  int fd = shm_open(name.c_str(), O_CREAT | O_EXCL | O_RDWR, 0600);
  if (fd < 0) {
    *err = errnoText("shm_open");
    return -1;
  }
  // Reserve the pages now: on a full /dev/shm a lazily grown segment would
  // raise SIGBUS at first touch instead of an error here.
  if (ftruncate(fd, static_cast<off_t>(bytes)) != 0) *err = errnoText("ftruncate");
  else if (int e = posix_fallocate(fd, 0, static_cast<off_t>(bytes))) {
    errno = e;
    *err = errnoText("posix_fallocate (is /dev/shm large enough?)");
  }
  if (err->empty()) return fd;
  close(fd);
  shm_unlink(name.c_str());
  return -1;
}

}  // namespace

std::shared_ptr<ShmWorld> ShmWorld::attach(int rank, int size, int64_t roundBytes,
                                           const Exchange& exchange, std::string* why) {
  roundBytes = static_cast<int64_t>(roundUp(static_cast<size_t>(std::max<int64_t>(roundBytes, 4096)), 128));
  std::string name, err;
  int fd = -1;
  uint64_t cookie = 0;
  if (rank == 0) {
    std::random_device rd;
    cookie = (uint64_t(rd()) << 32) ^ rd() ^ (uint64_t(getpid()) << 16);
    char buf[64];
    std::snprintf(buf, sizeof(buf), "/ringreduce-%d-%016llx", static_cast<int>(getpid()),
                  static_cast<unsigned long long>(cookie));
    name = buf;
    // A /dev/shm too small for the rounds asked for (containers often give
    // 64 MiB) still takes rounds of a quarter or a sixteenth of them.
    const int64_t asked = roundBytes;
    for (int tries = 0; tries < 3 && fd < 0; ++tries, roundBytes = roundBytes / 4 / 128 * 128) {
      if (tries > 0 && roundBytes < (int64_t(64) << 10)) break;
      err.clear();
      fd = makeSegment(name, segmentBytes(size, roundBytes), &err);
      if (fd >= 0) break;
    }
    if (fd < 0) {
      roundBytes = asked;
      name.clear();
    }
  }
  size_t bytes = segmentBytes(size, roundBytes);
  // A failed exchange (a peer gone, the deadline) leaves nothing behind.
  struct Cleanup {
    std::string name;
    ~Cleanup() {
      if (!name.empty()) shm_unlink(name.c_str());
    }
  } unlinkOnThrow{rank == 0 ? name : std::string()};
  // Round 1: rank 0 says where (empty: it could not make it, and why).
  std::vector<std::string> got =
      exchange(rank == 0 ? (name.empty() ? "!" + err
                                         : name + "?" + std::to_string(cookie) + "?" +
                                               std::to_string(roundBytes))
                         : std::string());
  if (got.empty() || got[0].empty() || got[0][0] == '!') {
    *why = "rank 0 could not make a shared-memory segment of " + std::to_string(bytes) +
           " bytes: " + (got.empty() || got[0].empty() ? std::string("?") : got[0].substr(1));
    return nullptr;
  }
  if (rank != 0) {
    const size_t q = got[0].find('?'), q2 = got[0].find('?', q + 1);
    name = got[0].substr(0, q);
    cookie = std::stoull(got[0].substr(q + 1, q2 - q - 1));
    roundBytes = std::stoll(got[0].substr(q2 + 1));
    bytes = segmentBytes(size, roundBytes);
    fd = shm_open(name.c_str(), O_RDWR, 0600);
    if (fd < 0) err = errnoText("shm_open");
    struct stat st;
    if (err.empty() && (fstat(fd, &st) != 0 || static_cast<size_t>(st.st_size) != bytes))
      err = "the segment has another size";
  }
  void* base = nullptr;
  if (err.empty()) {
    base = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (base == MAP_FAILED) {
      base = nullptr;
      err = errnoText("mmap");
    }
  }
  if (fd >= 0) close(fd);
  auto* h = static_cast<SegmentHeader*>(base);
  if (base && rank == 0) {
    h->cookie = cookie;
    h->size = static_cast<uint64_t>(size);
    h->roundBytes = static_cast<uint64_t>(roundBytes);
    std::atomic_thread_fence(std::memory_order_release);
    h->magic = kMagic;
  }
  // The mapping is unmapped with the world, also when round 2 throws.
  std::shared_ptr<ShmWorld> world;
  if (base) world.reset(new ShmWorld(rank, size, roundBytes, base, bytes));
  // Round 2: did everyone map it? (Rank 0 filled the header before this
  // round, so the others can check it after.)
  std::vector<std::string> ok = exchange(err.empty() ? "1" : "!" + err);
  // Every rank that could has it mapped: the name goes now (Cleanup).
  for (int q = 0; q < size && q < static_cast<int>(ok.size()); ++q)
    if (ok[q] != "1") {
      *why = "rank " + std::to_string(q) + " could not map rank 0's shared-memory segment (" +
             (ok[q].size() > 1 ? ok[q].substr(1) : std::string("?")) +
             "): not every rank is on this machine, or /dev/shm is not shared";
      return nullptr;
    }
  if (world && rank != 0 && (h->magic != kMagic || h->cookie != cookie ||
                             h->size != static_cast<uint64_t>(size)))
    RR_THROW(Error, "rank " + std::to_string(rank) + " mapped a shared-memory segment that is "
                    "not rank 0's (" + name + ")");
  return world;
}

ShmWorld::Slot& ShmWorld::slot(int q) const {
  return *reinterpret_cast<Slot*>(static_cast<char*>(base_) + kHeaderBytes +
                                  slotStride_ * static_cast<size_t>(q));
}

char* ShmWorld::input(int q, uint64_t round) const {
  return reinterpret_cast<char*>(&slot(q)) + kSlotHeaderBytes +
         static_cast<size_t>(round & 1) * 2 * static_cast<size_t>(roundBytes_);
}

char* ShmWorld::result(int q, uint64_t round) const {
  return input(q, round) + roundBytes_;
}

void ShmWorld::publish(Counter which, uint64_t round, uint64_t fingerprint) {
  Slot& s = slot(rank_);
  if (which == kArrived)
    s.fingerprint[round & 1].store(roundTag(fingerprint), std::memory_order_relaxed);
  s.counter[which].store(round, std::memory_order_release);
}

void ShmWorld::waitAll(Counter which, uint64_t round, uint64_t fingerprint, Transport& t,
                       const char* what) {
  auto lookAt = [&](int q) {  // true once q got there (its fingerprint checked)
    if (slot(q).counter[which].load(std::memory_order_acquire) < round) return false;
    const uint64_t from = slot(q).abandonedFrom.load(std::memory_order_acquire);
    if (from != 0 && round >= from) peerGaveUp(q, round, t);
    if (which == kArrived) {
      const uint64_t theirs = slot(q).fingerprint[round & 1].load(std::memory_order_relaxed);
      if (theirs != roundTag(fingerprint)) {
        checkPeer(q);  // the board names the difference while q is in this call
        RR_THROW(MismatchError, "rank " + std::to_string(q) + "'s call differs (" + what +
                                    "): this rank is in " + fp::describe(fingerprint, 64) +
                                    "; rank " + std::to_string(q) + " is in another call, or "
                                    "ran an earlier one with other arguments");
      }
    }
    return true;
  };
  int q = 0;
  for (; q < size_; ++q)
    if (q != rank_ && !lookAt(q)) break;
  if (q == size_) return;
  auto lastHook = Clock::now();
  for (uint64_t spins = 1;; ++spins) {
    if (q == rank_ || lookAt(q)) {
      if (++q == size_) return;
      continue;
    }
    if (spins < kSpinsBeforeYield) RR_CPU_RELAX();
    else std::this_thread::yield();
    if (spins % kSpinsPerLook) continue;
    t.checkIn(false);  // a peer's notice (it refused this call, it aborted) may throw here
    checkPeer(q);
    const auto now = Clock::now();
    if (now > t.deadline())
      RR_THROW(TimeoutError,
               std::string("timed out in ") + what + ": rank " + std::to_string(q) + " never " +
                   (which == kArrived ? "put in its part" : "published its reduced slice") +
                   " of shared-memory round " + std::to_string(round) + " (it is at round " +
                   std::to_string(slot(q).counter[which].load(std::memory_order_relaxed)) + ")");
    if (now - lastHook > kHookEvery) {
      t.checkIn(true);
      lastHook = now;
    }
  }
}

uint64_t ShmWorld::roundTag(uint64_t fingerprint) const {
  return fingerprint ^ fp::mix(myHistory_ ^ 0x5348u);
}

void ShmWorld::abandon(int32_t kind) noexcept {
  Slot& s = slot(rank_);
  if (s.abandonedFrom.load(std::memory_order_relaxed) != 0) return;
  s.abandonedKind.store(static_cast<uint64_t>(kind), std::memory_order_relaxed);
  // The rounds of earlier calls were whole here: peers may still finish them.
  s.abandonedFrom.store(inCall_ ? callFirstRound_ : round_ + 1, std::memory_order_release);
}

void ShmWorld::peerGaveUp(int q, uint64_t round, Transport& t) const {
  // Its notice, sent before it marked its slot, says why: wait a moment for
  // it (delivering it throws the error it names).
  const auto until = Clock::now() + std::chrono::milliseconds(200);
  while (Clock::now() < until) {
    t.checkIn(false);
    std::this_thread::yield();
  }
  const std::string msg = "rank " + std::to_string(q) + " gave up on this communicator while " +
                          "its part of shared-memory round " + std::to_string(round) +
                          " was in (its notice did not come): not finishing with it";
  const uint64_t kind = slot(q).abandonedKind.load(std::memory_order_relaxed);
  if (kind == Notice::kAbortTimeout) throw TimeoutError(msg);
  if (kind == Notice::kAbortMismatch) throw MismatchError(msg);
  throw Error(msg);
}

void ShmWorld::enterCall(uint64_t seq, uint64_t tag, uint64_t history) {
  Slot& s = slot(rank_);
  const uint64_t g = s.boardGen.load(std::memory_order_relaxed);
  s.boardGen.store(g + 1, std::memory_order_relaxed);
  std::atomic_thread_fence(std::memory_order_release);
  s.boardSeq.store(seq, std::memory_order_relaxed);
  s.boardTag.store(tag, std::memory_order_relaxed);
  s.boardHistory.store(history, std::memory_order_relaxed);
  s.boardGen.store(g + 2, std::memory_order_release);
  mySeq_ = seq;
  myTag_ = tag;
  myHistory_ = history;
  inCall_ = true;
  callFirstRound_ = round_ + 1;
}

void ShmWorld::checkPeer(int q) const {
  if (!inCall_ || q == rank_) return;
  const Slot& s = slot(q);
  for (int tries = 0; tries < 16; ++tries) {
    const uint64_t g1 = s.boardGen.load(std::memory_order_acquire);
    if (g1 & 1) continue;  // being written
    const uint64_t seq = s.boardSeq.load(std::memory_order_relaxed);
    const uint64_t tag = s.boardTag.load(std::memory_order_relaxed);
    const uint64_t history = s.boardHistory.load(std::memory_order_relaxed);
    std::atomic_thread_fence(std::memory_order_acquire);
    if (s.boardGen.load(std::memory_order_relaxed) != g1) continue;
    if (g1 == 0 || seq != mySeq_) return;  // not in this call (yet, or any more)
    if (tag != myTag_)
      RR_THROW(MismatchError, "rank " + std::to_string(q) + "'s call differs (as collective #" +
                                  std::to_string(seq) + "): " + fp::difference(myTag_, tag, 64));
    if (history != myHistory_)
      RR_THROW(MismatchError, "rank " + std::to_string(q) + "'s call differs from this rank's "
                              "in its history: an earlier collective had other arguments there (a "
                              "root, count or dtype), where no message showed it");
    return;
  }
}

void ShmWorld::checkBoard() const {
  for (int q = 0; q < size_; ++q) checkPeer(q);
}

}  // namespace rr
