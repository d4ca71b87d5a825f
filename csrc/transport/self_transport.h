// A world of one: used when no launcher started several ranks. Algorithms
// never exchange in a world of one, so any exchange here is a bug.
#pragma once

#include "common/errors.h"
#include "transport/transport.h"

namespace rr {

class SelfTransport : public Transport {
 public:
  int rank() const override { return 0; }
  int size() const override { return 1; }
  std::string name() const override { return "self"; }
  ExchangeId start(const Xfer*, int, const Xfer*, int) override {
    RR_THROW(Error, "self transport has no peers");
  }
  bool test(ExchangeId) override { RR_THROW(Error, "self transport has no peers"); }
  void wait(ExchangeId) override { RR_THROW(Error, "self transport has no peers"); }
  void sendNotice(const Notice&, const int*, int) noexcept override {}
  void abort() noexcept override {}
};

}  // namespace rr
