#include "dataplane/rcu.h"

#include <rte_malloc.h>

namespace sluice::dp {

Rcu::~Rcu() {
  if (v_ != nullptr) {
    // Workers are stopped by now; whatever is still pending can be destroyed.
    for (auto& r : pending_) r.destroy();
    pending_.clear();
    rte_free(v_);
  }
}

bool Rcu::init(unsigned max_readers) {
  size_t sz = rte_rcu_qsbr_get_memsize(max_readers);
  v_ = static_cast<rte_rcu_qsbr*>(rte_zmalloc("sluice_rcu", sz, RTE_CACHE_LINE_SIZE));
  if (v_ == nullptr) return false;
  return rte_rcu_qsbr_init(v_, max_readers) == 0;
}

void Rcu::register_reader(unsigned lcore_id) {
  rte_rcu_qsbr_thread_register(v_, lcore_id);
  rte_rcu_qsbr_thread_online(v_, lcore_id);
}

void Rcu::unregister_reader(unsigned lcore_id) {
  rte_rcu_qsbr_thread_offline(v_, lcore_id);
  rte_rcu_qsbr_thread_unregister(v_, lcore_id);
}

void Rcu::retire(std::function<void()> destroy) {
  pending_.push_back({rte_rcu_qsbr_start(v_), std::move(destroy)});
}

size_t Rcu::reclaim() {
  size_t n = 0;
  while (!pending_.empty() && rte_rcu_qsbr_check(v_, pending_.front().token, false) == 1) {
    auto r = std::move(pending_.front());
    pending_.pop_front();
    r.destroy();
    ++n;
  }
  return n;
}

void Rcu::synchronize() {
  while (!pending_.empty()) {
    rte_rcu_qsbr_check(v_, pending_.back().token, true);
    reclaim();
  }
}

}  // namespace sluice::dp
