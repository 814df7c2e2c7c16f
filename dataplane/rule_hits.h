// Hits per gateway access policy rule: how many flows each rule decided (sluice_policy_rule_hits_total).
//
// Counted per worker with single-writer counters, never shared atomics. The layout of a policy
// generation (its policies and how many rules each has) fixes the slots, so each generation gets
// its own table, sized from the configuration it was compiled from:
//  - the control thread makes the table of generation G and publishes it (one pointer store)
//    BEFORE it publishes policy G, keeping the previous table reachable as `prev`;
//  - a worker that classifies with policy generation g takes the published table if it is g,
//    else its `prev` if that is g (a worker still on the previous policy), else counts nothing
//    (only possible when two reloads land within one worker loop iteration);
//  - when table G+1 is published, table G-1 is retired through Rcu: no worker can reach it once
//    every worker passed a quiescent state (they only ever look one `prev` deep from a table
//    they loaded after G-1 stopped being the head's prev), and its final counts are then folded
//    into per-(policy name, rule) totals kept by the control thread.
// Totals are keyed by policy name and rule position, so they carry across reloads that keep a
// policy's name; the rule numbers follow the `acl` list as written.
#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "dataplane/counter.h"

namespace sluice::dp {

class Rcu;

// One policy generation's slots. Worker w's row is counters[w * stride .. + slots).
struct RuleHitTable {
  uint64_t generation = 0;
  std::vector<std::string> policies;  // config.policies names, in order
  std::vector<uint32_t> base;         // policies.size() + 1 entries: policy p's rules are
                                      // base[p] .. base[p+1]-2, its default deny base[p+1]-1
  uint32_t slots = 0;                 // base.back() + 1: the last slot is "no policy"
  uint32_t stride = 0;                // slots rounded up to a cache line of counters
  unsigned workers = 0;
  std::unique_ptr<Counter[]> counters;
  RuleHitTable* prev = nullptr;       // the generation before; set before publication, then fixed

  // The slot of a verdict (policy index, rule index; 0xFFFF = none / default deny).
  uint32_t slot(uint16_t policy, uint16_t rule) const {
    if (policy >= policies.size()) return slots - 1;
    const uint32_t first = base[policy], deny = base[policy + 1u] - 1;
    return rule < deny - first ? first + rule : deny;
  }
};

class RuleHits {
 public:
  // What a worker writes to for one burst: its row of the table of one generation, or nothing.
  class Row {
   public:
    Row() = default;
    Row(Counter* c, const RuleHitTable* t) : c_(c), t_(t) {}
    void hit(uint16_t policy, uint16_t rule) const {
      if (c_ != nullptr) c_[t_->slot(policy, rule)].add();
    }

   private:
    Counter* c_ = nullptr;
    const RuleHitTable* t_ = nullptr;
  };

  // A hit total: policy "" and rule -1 = no policy covered the flow; rule -1 = the default deny.
  struct Total {
    std::string policy;
    int rule = -1;
    uint64_t hits = 0;
  };

  RuleHits() = default;
  ~RuleHits();
  RuleHits(const RuleHits&) = delete;
  RuleHits& operator=(const RuleHits&) = delete;

  // Worker side: the row of `worker` for policy `generation` (see the protocol above).
  Row row(unsigned worker, uint64_t generation) const {
    RuleHitTable* t = head_.load(std::memory_order_acquire);
    if (t != nullptr && t->generation != generation) t = t->prev;
    if (t == nullptr || t->generation != generation || worker >= t->workers) return {};
    return {&t->counters[size_t(worker) * t->stride], t};
  }

  // Control thread: publishes the table of a new generation. rules[p] = the number of acl rules
  // of policy p. Call before publishing the policy of that generation.
  void publish(uint64_t generation, std::vector<std::string> policies, const std::vector<size_t>& rules,
               unsigned workers, Rcu& rcu);
  // Control thread: totals over every table ever published (folded and live), sorted by
  // policy name and rule; every slot of a live table has an entry, zero or not.
  std::vector<Total> totals() const;

 private:
  void fold(const RuleHitTable& t);
  static void add_table(const RuleHitTable& t, std::map<std::pair<std::string, int>, uint64_t>& into);

  std::atomic<RuleHitTable*> head_{nullptr};
  std::vector<std::unique_ptr<RuleHitTable>> live_;               // published, not yet freed
  std::map<std::pair<std::string, int>, uint64_t> folded_;        // from freed tables
};

}  // namespace sluice::dp
