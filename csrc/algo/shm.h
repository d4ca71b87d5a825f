// Host all-reduce through shared memory (shm/shm_world.h), for ranks of one
// machine. Every round, each rank copies up to roundBytes of its input into
// its own slot and publishes it; then
//   one-shot: every rank reduces all N inputs itself (one wait per round);
//   two-shot: rank q reduces slice q of all N inputs into its result area,
//     publishes it, and every rank copies the N reduced slices out (two
//     waits per round, 2x the bytes read instead of N x).
// Inputs are combined in rank order 0, 1, ..., N-1 in both, so every rank
// ends with the same bits, and a rerun too. The call's fingerprint travels
// with each round (a peer with another call is a MismatchError, never data).
// Messages above roundBytes run as several rounds; two parities of areas let
// a rank start its next round while slower ranks still read the last one.
#pragma once

#include <memory>

#include "algo/algorithm.h"
#include "shm/shm_world.h"

namespace rr {

class ShmAllreduceAlgorithm : public Algorithm {
 public:
  // `world` is the engine's slot for its shared memory: null until (and
  // unless) every rank could attach it.
  ShmAllreduceAlgorithm(bool twoShot, const std::shared_ptr<ShmWorld>* world)
      : twoShot_(twoShot), world_(world) {}
  const char* name() const override { return twoShot_ ? "shm_two_shot" : "shm_one_shot"; }
  std::string refusal(const Call& call, int worldSize) const override;
  void run(const Call& call, AlgoEnv& env) override;
  bool fingerprintInFlags() const override { return true; }

 private:
  void round(ShmWorld& w, const Call& c, AlgoEnv& env, int64_t first, int64_t count);

  bool twoShot_;
  const std::shared_ptr<ShmWorld>* world_;
};

}  // namespace rr
