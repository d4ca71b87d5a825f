// The self-test's error scenarios: mismatches, notices, dead and stopped
// peers, abort. Each prints "EXPECTED <what> ..." lines the pytest checks.
#include "ucx_selftest.h"

using namespace rr;
using namespace rrtest;

namespace {

// Runs `f`, which must throw E; returns its message (and fails otherwise).
template <class E, class F>
std::string expectThrow(const std::string& what, F&& f) {
  try {
    f();
  } catch (const E& ex) {
    std::cout << "EXPECTED " << what << ": " << ex.what() << std::endl;
    return ex.what();
  } catch (const std::exception& ex) {
    fail(what + ": threw the wrong type: " + ex.what());
  }
  fail(what + ": did not throw");
}

// Rank 1 sends `sendBytes` with `theirTag`; rank 0 receives `recvBytes` with
// `ourTag`. Returns nothing; rank 0 must see a MismatchError.
void oneWay(Env& e, UcxTransport& t, uint64_t ourTag, uint64_t theirTag, size_t recvBytes,
            size_t sendBytes, const std::string& what) {
  std::vector<char> buf(std::max(recvBytes, sendBytes), 1);
  deadlineIn(t, 5);
  if (e.rank == 0) {
    t.setTag(ourTag);
    Xfer v{1, buf.data(), recvBytes};
    auto id = t.start(nullptr, 0, &v, 1);
    expectThrow<MismatchError>(what, [&] { t.wait(id); });
  } else {
    t.setTag(theirTag);
    Xfer s{0, buf.data(), sendBytes};
    auto id = t.start(&s, 1, nullptr, 0);
    try {
      t.wait(id);
      std::cout << "SENDER " << what << ": completed" << std::endl;
    } catch (const std::exception& ex) {
      std::cout << "SENDER " << what << ": " << ex.what() << std::endl;
    }
  }
  e.fx->barrier();
}

}  // namespace

void mismatch(Env& e) {
  auto t = make(e);
  oneWay(e, *t, tagFor(5, Coll::kAllreduce), tagFor(5, Coll::kAllgather), 4096, 4096, "collective");
  oneWay(e, *t, tagFor(6, Coll::kAllreduce, 100), tagFor(6, Coll::kAllreduce, 200), 1 << 20,
         1 << 20, "count");
  oneWay(e, *t, tagFor(7), tagFor(7), 4096, 100, "short");
  oneWay(e, *t, tagFor(8), tagFor(8), 5000, 6000, "long eager");
  oneWay(e, *t, tagFor(9), tagFor(9), 65536, 1 << 20, "long rendezvous");
  // Channels never pair: rank 0 posts point-to-point first, rank 1 sends
  // collective first; each message still finds the receive of its channel.
  {
    deadlineIn(*t, 10);
    std::vector<char> a(100, 'a'), b(200, 'b'), ra(100, 0), rb(200, 0);
    if (e.rank == 0) {
      t->setTag(tagFor(11), Channel::kPointToPoint);
      Xfer va{1, ra.data(), ra.size()};
      auto ia = t->start(nullptr, 0, &va, 1);
      t->setTag(tagFor(12), Channel::kCollective);
      Xfer vb{1, rb.data(), rb.size()};
      auto ib = t->start(nullptr, 0, &vb, 1);
      t->wait(ib);
      t->wait(ia);
      EXPECT(ra == a && rb == b, "each channel got its own message");
    } else {
      t->setTag(tagFor(12), Channel::kCollective);
      Xfer sb{0, b.data(), b.size()};
      auto ib = t->start(&sb, 1, nullptr, 0);
      t->setTag(tagFor(11), Channel::kPointToPoint);
      Xfer sa{0, a.data(), a.size()};
      auto ia = t->start(&sa, 1, nullptr, 0);
      t->wait(ia);
      t->wait(ib);
    }
    e.fx->barrier();
  }
  // The transport still works after all that.
  deadlineIn(*t, 10);
  t->setTag(tagFor(10));
  std::vector<char> a(4096, char(e.rank)), b(4096, 9);
  Xfer s{1 - e.rank, a.data(), a.size()}, v{1 - e.rank, b.data(), b.size()};
  t->wait(t->start(&s, 1, &v, 1));
  EXPECT(b[0] == char(1 - e.rank) && b[4095] == char(1 - e.rank), "exchange after mismatches");
  e.fx->barrier();
  std::cout << "OK mismatch" << std::endl;
}

void notices(Env& e) {
  auto t = make(e);
  std::atomic<int> got{0};
  Notice last;
  t->setNoticeHandler([&](const Notice& n) {
    last = n;
    ++got;
  });
  std::vector<char> buf(1 << 20, 3);
  deadlineIn(*t, 20);
  t->setTag(tagFor(42));
  // A: rank 1 notices everyone, then sends data; the others poll test() and
  // must have the notice, intact, by the time their data arrives.
  if (e.rank == 1) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    Notice n;
    n.kind = Notice::kRefused;
    n.origin = 1;
    n.seq = 42;
    n.tag = 0xabcdef;
    n.setText("rank 1 refused allreduce #42");
    t->sendNotice(n, nullptr, 0);
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    std::vector<Xfer> ss;
    for (int p = 0; p < e.size; ++p)
      if (p != 1) ss.push_back({p, buf.data(), buf.size()});
    t->wait(t->start(ss.data(), int(ss.size()), nullptr, 0));
  } else {
    Xfer v{1, buf.data(), buf.size()};
    auto id = t->start(nullptr, 0, &v, 1);
    while (!t->test(id)) {
    }
    EXPECT(got >= 1, "the notice came before the data");
    EXPECT(last.kind == Notice::kRefused && last.origin == 1 && last.seq == 42 &&
               last.tag == 0xabcdef && std::string(last.text) == "rank 1 refused allreduce #42",
           "notice intact");
  }
  e.fx->barrier();
  // B: the handler throws; a rank blocked on data that never comes raises at
  // once, not at its deadline.
  t->setNoticeHandler([](const Notice& n) {
    throw Error("rank " + std::to_string(n.origin) + " aborted: " + n.text);
  });
  deadlineIn(*t, 20);
  if (e.rank == 1) {
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    Notice n;
    n.kind = Notice::kAbortTimeout;
    n.origin = 1;
    n.setText("rank 1 timed out");
    std::vector<int> peers;
    for (int p = 0; p < e.size; ++p)
      if (p != 1) peers.push_back(p);
    t->sendNotice(n, peers.data(), int(peers.size()));
  } else {
    Xfer v{1, buf.data(), buf.size()};
    auto id = t->start(nullptr, 0, &v, 1);
    auto t0 = SteadyClock::now();
    std::string msg = expectThrow<Error>("notice", [&] { t->wait(id); });
    double dt = seconds(t0);
    std::cout << "NOTICE_AFTER " << dt << std::endl;
    EXPECT(dt < 3 && msg.find("rank 1 timed out") != std::string::npos, msg);
  }
  e.fx->barrier();
  std::cout << "OK notice" << std::endl;
}

// --victim V stops or kills itself at iteration --after; the others run a
// ring of --bytes with a --deadline per iteration and must raise in time.
void faults(Env& e) {
  auto t = make(e);
  const bool kill = e.arg("scenario") == "kill";
  const int victim = std::stoi(e.arg("victim", "1")), after = std::stoi(e.arg("after", "5"));
  const double deadline = std::stod(e.arg("deadline", "5"));
  const size_t n = std::stoull(e.arg("bytes", "1048576"));
  std::vector<char> out(n, char(e.rank)), in(n);
  auto last = SteadyClock::now();
  for (int i = 0; i < 100000; ++i) {
    if (e.rank == victim && i == after) {
      std::cout << "VICTIM " << (kill ? "killing" : "stopping") << " itself" << std::endl;
      raise(kill ? SIGKILL : SIGSTOP);
    }
    deadlineIn(*t, deadline);
    t->setTag(tagFor(i));
    Xfer s{(e.rank + 1) % e.size, out.data(), n}, v{(e.rank - 1 + e.size) % e.size, in.data(), n};
    try {
      t->wait(t->start(&s, 1, &v, 1));
      last = SteadyClock::now();
    } catch (const TimeoutError& ex) {
      std::cout << "EXPECTED TimeoutError after " << seconds(last) << " s: " << ex.what() << std::endl;
      break;
    } catch (const Error& ex) {
      std::cout << "EXPECTED Error after " << seconds(last) << " s: " << ex.what() << std::endl;
      break;
    }
  }
  auto t0 = SteadyClock::now();
  t.reset();
  std::cout << "DESTROYED in " << seconds(t0) << " s" << std::endl;
}

// Teardown with nothing in flight while the peer is dead (--how kill) or
// stopped (--how stop): the destructor must not wait for it.
void teardown(Env& e) {
  auto t = make(e);
  deadlineIn(*t, 10);
  ringOnce(*t, e.rank, e.size, 1 << 20, 1, false);
  e.fx->barrier();
  if (e.rank == 1) raise(e.arg("how") == "stop" ? SIGSTOP : SIGKILL);
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  auto t0 = SteadyClock::now();
  t.reset();
  std::cout << "DESTROYED in " << seconds(t0) << " s" << std::endl;
  std::cout << "OK teardown" << std::endl;
}

void aborts(Env& e) {
  auto t = make(e);
  std::vector<char> buf(128 << 20, 1);
  deadlineIn(*t, 20);
  if (e.rank == 0) {
    // From another thread, during a wait on data that never comes.
    Xfer v{1, buf.data(), 4096};
    auto id = t->start(nullptr, 0, &v, 1);
    std::thread th([&] {
      std::this_thread::sleep_for(std::chrono::milliseconds(300));
      t->abort();
    });
    auto t0 = SteadyClock::now();
    std::string msg = expectThrow<Error>("abort from a thread", [&] { t->wait(id); });
    th.join();
    double dt = seconds(t0);
    EXPECT(dt < 1.5 && msg.find("aborted") != std::string::npos, msg);
    EXPECT(t->requestsHeld() == 0, "abort left requests behind");
    expectThrow<Error>("start after abort", [&] { t->start(nullptr, 0, &v, 1); });
    t->abort();  // again: harmless
  }
  e.fx->barrier();
  t.reset();
  // From the wait hook, in the middle of a 128 MiB rendezvous (the sender is
  // left without its acknowledgement: it times out).
  auto u = make(e);
  deadlineIn(*u, 2);
  Xfer x{1 - e.rank, buf.data(), buf.size()};
  if (e.rank == 0) {
    auto id = u->start(nullptr, 0, &x, 1);
    auto t0 = SteadyClock::now();
    u->setWaitHook([&] {
      if (seconds(t0) > 0.005) u->abort();
    });
    expectThrow<Error>("abort from the wait hook", [&] { u->wait(id); });
    std::cout << "HELD after abort: " << u->requestsHeld() << std::endl;
    EXPECT(u->requestsHeld() == 0, "abort left requests behind");
  } else {
    auto id = u->start(&x, 1, nullptr, 0);
    try {
      u->wait(id);
      std::cout << "SENDER completed" << std::endl;
    } catch (const std::exception& ex) {
      std::cout << "SENDER " << ex.what() << std::endl;
    }
  }
  e.fx->barrier();
  std::cout << "OK abort" << std::endl;
}
