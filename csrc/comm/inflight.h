// Point-to-point transfers still moving. They complete out of order and
// must not hold up later work (a rank's isend may wait for its peer's
// irecv, queued after that peer's own isend), so the worker tests them
// between other calls instead of waiting for each.
#pragma once

#include <exception>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "comm/work.h"
#include "transport/transport.h"

namespace rr {

class InFlightTransfers {
 public:
  // recvFrom: the peer of a receive (-1 for a send), reported when it ends.
  void add(Transport& t, Transport::ExchangeId id, std::shared_ptr<Work> work,
           Clock::time_point deadline, std::string what, int recvFrom = -1);
  bool empty() const;
  // Tests each transfer once (the caller may use the transports). Completed
  // ones finish their Work. The first failure fails its Work and is returned
  // (with `progressed` true); the others stay for failAll().
  struct Progress {
    bool progressed = false;
    std::exception_ptr error;
    std::vector<int> recvsDone;  // the peers of the receives that completed
  };
  Progress progress();
  void failAll(const std::exception_ptr& e);

 private:
  struct Item {
    Transport* transport;
    Transport::ExchangeId id;
    std::shared_ptr<Work> work;
    Clock::time_point deadline;
    std::string what;
    int recvFrom;
  };
  mutable std::mutex mu_;
  std::vector<Item> items_;
};

}  // namespace rr
