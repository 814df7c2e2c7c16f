// Per-worker rule-hit tables across policy generations: slots, the one-generation look-back for
// workers still on the previous policy, and totals that survive a table's retirement.
#include "dataplane/rule_hits.h"

#include <gtest/gtest.h>

#include "dataplane/rcu.h"
#include "tests/unit/dataplane/eal_env.h"

namespace sluice::dp {
namespace {

uint64_t hits_of(const RuleHits& h, const std::string& policy, int rule) {
  for (const auto& t : h.totals())
    if (t.policy == policy && t.rule == rule) return t.hits;
  ADD_FAILURE() << "no total for " << policy << " rule " << rule;
  return 0;
}

TEST(RuleHitTable, SlotsOfRulesDefaultDenyAndNoPolicy) {
  RuleHitTable t;
  t.policies = {"a", "b"};
  t.base = {0, 3, 4};  // a: 2 rules + default; b: 0 rules + default
  t.slots = 5;
  EXPECT_EQ(t.slot(0, 0), 0u);
  EXPECT_EQ(t.slot(0, 1), 1u);
  EXPECT_EQ(t.slot(0, 0xFFFF), 2u);
  EXPECT_EQ(t.slot(0, 7), 2u);  // out of range: counted as the default deny, never past the row
  EXPECT_EQ(t.slot(1, 0xFFFF), 3u);
  EXPECT_EQ(t.slot(1, 0), 3u);
  EXPECT_EQ(t.slot(0xFFFF, 0xFFFF), 4u);
  EXPECT_EQ(t.slot(9, 0), 4u);
}

TEST(RuleHits, CountsPerWorkerAndKeepsTotalsAcrossGenerations) {
  test::ensure_eal();
  Rcu rcu;
  ASSERT_TRUE(rcu.init(RTE_MAX_LCORE));
  RuleHits hits;
  EXPECT_TRUE(hits.totals().empty());
  // No table yet: counting is a no-op, not a crash.
  hits.row(0, 1).hit(0, 0);

  hits.publish(1, {"office", "guests"}, {2, 1}, 2, rcu);
  hits.row(0, 1).hit(0, 1);
  hits.row(1, 1).hit(0, 1);
  hits.row(1, 1).hit(1, 0xFFFF);
  hits.row(0, 1).hit(0xFFFF, 0xFFFF);
  hits.row(5, 1).hit(0, 0);  // no such worker: ignored
  hits.row(0, 7).hit(0, 0);  // no such generation: ignored
  EXPECT_EQ(hits_of(hits, "office", 0), 0u);
  EXPECT_EQ(hits_of(hits, "office", 1), 2u);
  EXPECT_EQ(hits_of(hits, "office", -1), 0u);
  EXPECT_EQ(hits_of(hits, "guests", 0), 0u);
  EXPECT_EQ(hits_of(hits, "guests", -1), 1u);
  EXPECT_EQ(hits_of(hits, "", -1), 1u);
  EXPECT_EQ(hits.totals().size(), 6u);  // office 0, 1, default; guests 0, default; none

  // Generation 2 renames nothing but drops a rule of office; a worker still on generation 1
  // counts into the previous table.
  hits.publish(2, {"office", "guests"}, {1, 1}, 2, rcu);
  hits.row(0, 1).hit(0, 1);
  hits.row(0, 2).hit(0, 0);
  EXPECT_EQ(hits_of(hits, "office", 1), 3u);
  EXPECT_EQ(hits_of(hits, "office", 0), 1u);

  // Generation 3 retires generation 1; its counts stay in the totals before and after the
  // grace period (no reader is registered: it ends at once).
  hits.publish(3, {"guests"}, {1}, 2, rcu);
  hits.row(1, 1).hit(0, 0);  // generation 1 is two behind: not reachable any more
  EXPECT_EQ(hits_of(hits, "office", 1), 3u);
  EXPECT_EQ(rcu.pending(), 1u);
  rcu.synchronize();
  EXPECT_EQ(rcu.pending(), 0u);
  EXPECT_EQ(hits_of(hits, "office", 1), 3u);
  EXPECT_EQ(hits_of(hits, "office", 0), 1u);
  EXPECT_EQ(hits_of(hits, "guests", -1), 1u);
  hits.row(0, 3).hit(0, 0);
  EXPECT_EQ(hits_of(hits, "guests", 0), 1u);
}

TEST(RuleHits, RowsOfWorkersAreSeparateCacheLines) {
  test::ensure_eal();
  Rcu rcu;
  ASSERT_TRUE(rcu.init(RTE_MAX_LCORE));
  RuleHits hits;
  hits.publish(1, {"p"}, {1}, 3, rcu);  // 3 slots per worker
  // The same slot of two workers must not share a cache line (no false sharing between lcores).
  hits.row(0, 1).hit(0, 0);
  hits.row(2, 1).hit(0, 0);
  EXPECT_EQ(hits_of(hits, "p", 0), 2u);
}

}  // namespace
}  // namespace sluice::dp
