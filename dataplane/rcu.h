// Quiescent-state based reclamation for everything the control thread publishes to workers.
//
// Writers (the control thread only) unpublish an object with one pointer store, then hand its
// destructor to retire(). Workers report a quiescent state once per poll-loop iteration, and
// reclaim() runs destructors whose grace period has ended. No worker ever blocks or takes a lock.
#pragma once

#include <rte_rcu_qsbr.h>

#include <cstdint>
#include <deque>
#include <functional>

namespace sluice::dp {

class Rcu {
 public:
  Rcu() = default;
  ~Rcu();
  Rcu(const Rcu&) = delete;
  Rcu& operator=(const Rcu&) = delete;

  // max_readers: the largest lcore id that will register, plus one.
  bool init(unsigned max_readers);
  rte_rcu_qsbr* qsbr() const { return v_; }

  // Worker side.
  void register_reader(unsigned lcore_id);
  void unregister_reader(unsigned lcore_id);
  void quiescent(unsigned lcore_id) { rte_rcu_qsbr_quiescent(v_, lcore_id); }

  // Control-thread side.
  void retire(std::function<void()> destroy);
  // Runs the destructors whose grace period ended; never blocks. Returns how many ran.
  size_t reclaim();
  // Blocks until every retired object was destroyed (shutdown, tests).
  void synchronize();
  size_t pending() const { return pending_.size(); }

 private:
  struct Retired {
    uint64_t token;
    std::function<void()> destroy;
  };
  rte_rcu_qsbr* v_ = nullptr;
  std::deque<Retired> pending_;  // tokens are monotonic: reclaim from the front
};

}  // namespace sluice::dp
