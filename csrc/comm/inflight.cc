#include "comm/inflight.h"

#include "common/errors.h"

namespace rr {

void InFlightTransfers::add(Transport& t, Transport::ExchangeId id, std::shared_ptr<Work> work,
                            Clock::time_point deadline, std::string what, int recvFrom) {
  std::lock_guard<std::mutex> lk(mu_);
  items_.push_back(Item{&t, id, std::move(work), deadline, std::move(what), recvFrom});
}

bool InFlightTransfers::empty() const {
  std::lock_guard<std::mutex> lk(mu_);
  return items_.empty();
}

InFlightTransfers::Progress InFlightTransfers::progress() {
  std::vector<Item> items;
  {
    std::lock_guard<std::mutex> lk(mu_);
    items.swap(items_);
  }
  Progress p;
  std::vector<Item> still;
  for (size_t i = 0; i < items.size(); ++i) {
    Item& f = items[i];
    try {
      f.transport->setDeadline(f.deadline);
      if (f.transport->test(f.id)) {
        f.work->markDone(nullptr);
        if (f.recvFrom >= 0) p.recvsDone.push_back(f.recvFrom);
        p.progressed = true;
        continue;
      }
      if (Clock::now() > f.deadline)
        RR_THROW(TimeoutError, "timed out: the peer never matched this point-to-point transfer");
      still.push_back(std::move(f));
    } catch (Error& e) {
      e.addContext(f.what);
      p.error = std::current_exception();
      p.progressed = true;
      f.work->markFailed(p.error);
      for (size_t k = i + 1; k < items.size(); ++k) still.push_back(std::move(items[k]));
      break;
    }
  }
  std::lock_guard<std::mutex> lk(mu_);
  for (auto& s : still) items_.push_back(std::move(s));
  return p;
}

void InFlightTransfers::failAll(const std::exception_ptr& e) {
  std::vector<Item> items;
  {
    std::lock_guard<std::mutex> lk(mu_);
    items.swap(items_);
  }
  for (auto& f : items) f.work->markFailed(e);
}

}  // namespace rr
