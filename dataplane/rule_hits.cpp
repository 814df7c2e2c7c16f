#include "dataplane/rule_hits.h"

#include <algorithm>

#include "dataplane/rcu.h"

namespace sluice::dp {

RuleHits::~RuleHits() { head_.store(nullptr, std::memory_order_relaxed); }

void RuleHits::publish(uint64_t generation, std::vector<std::string> policies, const std::vector<size_t>& rules,
                       unsigned workers, Rcu& rcu) {
  auto t = std::make_unique<RuleHitTable>();
  t->generation = generation;
  t->policies = std::move(policies);
  t->base.reserve(t->policies.size() + 1);
  uint32_t next = 0;
  for (size_t p = 0; p < t->policies.size(); ++p) {
    t->base.push_back(next);
    next += uint32_t((p < rules.size() ? rules[p] : 0) + 1);  // the rules, then the default deny
  }
  t->base.push_back(next);
  t->slots = next + 1;  // + "no policy"
  constexpr uint32_t kPerLine = 64 / sizeof(Counter);
  t->stride = (t->slots + kPerLine - 1) / kPerLine * kPerLine;
  t->workers = std::max(workers, 1u);
  t->counters = std::make_unique<Counter[]>(size_t(t->stride) * t->workers);

  RuleHitTable* old = head_.load(std::memory_order_relaxed);
  t->prev = old;
  head_.store(t.get(), std::memory_order_release);
  live_.push_back(std::move(t));
  // The head's prev's prev is unreachable for workers after a grace period: fold and free it then.
  if (old != nullptr && old->prev != nullptr) {
    RuleHitTable* gone = old->prev;
    rcu.retire([this, gone] { fold(*gone); });
  }
}

void RuleHits::fold(const RuleHitTable& t) {
  add_table(t, folded_);
  live_.erase(std::remove_if(live_.begin(), live_.end(), [&](const auto& p) { return p.get() == &t; }), live_.end());
}

void RuleHits::add_table(const RuleHitTable& t, std::map<std::pair<std::string, int>, uint64_t>& into) {
  auto add = [&](const std::string& policy, int rule, uint32_t slot) {
    uint64_t sum = 0;
    for (unsigned w = 0; w < t.workers; ++w) sum += t.counters[size_t(w) * t.stride + slot].get();
    into[{policy, rule}] += sum;
  };
  for (size_t p = 0; p < t.policies.size(); ++p) {
    const uint32_t first = t.base[p], deny = t.base[p + 1] - 1;
    for (uint32_t s = first; s < deny; ++s) add(t.policies[p], int(s - first), s);
    add(t.policies[p], -1, deny);
  }
  add("", -1, t.slots - 1);
}

std::vector<RuleHits::Total> RuleHits::totals() const {
  std::map<std::pair<std::string, int>, uint64_t> sum = folded_;
  for (const auto& t : live_) add_table(*t, sum);
  std::vector<Total> out;
  out.reserve(sum.size());
  for (const auto& [k, v] : sum) out.push_back({k.first, k.second, v});
  return out;
}

}  // namespace sluice::dp
