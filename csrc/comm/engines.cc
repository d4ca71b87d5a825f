#include "comm/engines.h"

#include "common/errors.h"

namespace rr {

EngineSet::EngineSet(std::unique_ptr<Engine> host, int worldSize) : size_(worldSize) {
  RR_CHECK_ARG(host != nullptr, "a communicator needs a host engine");
  engines_.push_back(std::move(host));
}

void EngineSet::add(std::unique_ptr<Engine> engine) {
  RR_CHECK_ARG(engine->transport().size() == size_,
               "engine " + engine->transport().name() + " spans " +
                   std::to_string(engine->transport().size()) + " ranks, communicator " +
                   std::to_string(size_));
  engines_.push_back(std::move(engine));
}

Engine* EngineSet::find(int device) const {
  for (size_t i = 1; i < engines_.size(); ++i)
    if (engines_[i]->device() == device) return engines_[i].get();
  return nullptr;
}

Engine& EngineSet::forCall(const Call& call) const {
  if (call.device < 0) {
    if (!hostSpansWorld())
      RR_THROW(ArgumentError, "host buffer given to a communicator that moves device memory "
                              "only; pass a CUDA buffer, or create the communicator with a "
                              "host transport (backend 'mpi' under mpirun, 'ucx' elsewhere)");
    return *engines_[0];
  }
  if (Engine* e = find(call.device)) return *e;
  for (size_t i = 1; i < engines_.size(); ++i)
    RR_THROW(ArgumentError, "buffer is on cuda:" + std::to_string(call.device) +
                                " but this rank's communicator uses cuda:" +
                                std::to_string(engines_[i]->device()));
  RR_THROW(ArgumentError, "buffer is on cuda:" + std::to_string(call.device) +
                              " but this communicator has no device engine (built without "
                              "CUDA, or no GPU was found)");
}

std::vector<std::string> EngineSet::names() const {
  std::vector<std::string> v;
  for (auto& e : engines_)
    if (e->transport().size() == size_) v.push_back(e->transport().name());
  return v;
}

void EngineSet::interruptDevices() noexcept {
  for (size_t i = 1; i < engines_.size(); ++i) engines_[i]->interrupt();
}

void EngineSet::abortAll() noexcept {
  for (size_t i = engines_.size(); i-- > 0;) engines_[i]->abort();
}

void EngineSet::clear() noexcept {
  while (engines_.size() > 1) engines_.pop_back();
  engines_.clear();
}

void EngineSet::abandon() noexcept {
  for (auto& e : engines_) e.release();
  engines_.clear();
}

}  // namespace rr
