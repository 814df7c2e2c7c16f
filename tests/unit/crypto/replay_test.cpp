#include "dataplane/wg/replay.h"

#include <gtest/gtest.h>

#include <optional>
#include <random>
#include <set>
#include <type_traits>

namespace sluice::wg {
namespace {

constexpr uint64_t kWindow = ReplayWindow::kWindowSize;

static_assert(std::is_trivially_copyable_v<ReplayWindow>);
static_assert(kWindow >= 2048, "WireGuard implementations keep at least 2048 packets of history");
static_assert(kWindow == 4032);

TEST(ReplayWindow, CounterZeroIsAValidFirstCounter) {
  ReplayWindow w;
  EXPECT_TRUE(w.check(0));
  EXPECT_TRUE(w.mark(0));
  EXPECT_EQ(w.greatest(), 0u);
  EXPECT_FALSE(w.check(0));
  EXPECT_FALSE(w.mark(0));
  EXPECT_TRUE(w.check(1));
}

TEST(ReplayWindow, DuplicateRejected) {
  ReplayWindow w;
  for (uint64_t c = 0; c < 10; ++c) ASSERT_TRUE(w.mark(c));
  for (uint64_t c = 0; c < 10; ++c) {
    EXPECT_FALSE(w.check(c)) << c;
    EXPECT_FALSE(w.mark(c)) << c;
  }
  EXPECT_EQ(w.greatest(), 9u);
}

TEST(ReplayWindow, OutOfOrderWithinWindowAcceptedOnce) {
  ReplayWindow w;
  ASSERT_TRUE(w.mark(5000));
  for (uint64_t c : {4999u, 1000u, 4000u, 2000u, 4998u, 968u}) {
    EXPECT_TRUE(w.check(c)) << c;
    EXPECT_TRUE(w.mark(c)) << c;
    EXPECT_FALSE(w.check(c)) << c;
    EXPECT_FALSE(w.mark(c)) << c;
  }
  EXPECT_EQ(w.greatest(), 5000u);  // older counters do not move the window
  EXPECT_TRUE(w.check(4997));
  EXPECT_TRUE(w.check(5001));
}

// The oldest acceptable counter is greatest - kWindowSize; one older is rejected. Tried with the
// greatest counter at every position within a ring word, since the edge then falls differently.
TEST(ReplayWindow, TooOldExactlyAtEdgeAndOnePast) {
  for (uint64_t greatest = 10000; greatest < 10000 + 2 * ReplayWindow::kWordBits; ++greatest) {
    ReplayWindow w;
    ASSERT_TRUE(w.mark(greatest));
    const uint64_t edge = greatest - kWindow;
    EXPECT_TRUE(w.check(edge)) << greatest;
    EXPECT_FALSE(w.check(edge - 1)) << greatest;
    EXPECT_FALSE(w.mark(edge - 1)) << greatest;
    EXPECT_TRUE(w.mark(edge)) << greatest;
    EXPECT_FALSE(w.check(edge)) << greatest;
    // Once the window moves by one, the edge counter falls out.
    ASSERT_TRUE(w.mark(greatest + 1));
    EXPECT_FALSE(w.check(edge)) << greatest;
    EXPECT_TRUE(w.check(edge + 1)) << greatest;
  }
}

TEST(ReplayWindow, EdgeWhileWindowNotYetFull) {
  ReplayWindow w;
  ASSERT_TRUE(w.mark(kWindow));
  EXPECT_TRUE(w.check(0));
  ASSERT_TRUE(w.mark(kWindow + 1));
  EXPECT_FALSE(w.check(0));
  EXPECT_TRUE(w.check(1));
}

// Jumps larger than the ring: the slots the new window reuses held bits from counters a lap or
// more ago, which must not make fresh counters look like replays.
TEST(ReplayWindow, LargeJumpsClearStaleRingSlots) {
  for (uint64_t jump : {uint64_t{kWindow + 1}, uint64_t{ReplayWindow::kRingBits},
                        uint64_t{ReplayWindow::kRingBits + 1},
                        uint64_t{3 * ReplayWindow::kRingBits + 17}, uint64_t{1} << 40}) {
    ReplayWindow w;
    // Fill a whole ring's worth of history, so every slot has its bit set.
    for (uint64_t c = 0; c < ReplayWindow::kRingBits; ++c) ASSERT_TRUE(w.mark(c));
    const uint64_t top = ReplayWindow::kRingBits - 1 + jump;
    ASSERT_TRUE(w.mark(top)) << jump;
    EXPECT_EQ(w.greatest(), top);
    for (uint64_t c = top - kWindow; c < top; ++c)
      ASSERT_TRUE(w.check(c)) << "jump " << jump << " c " << c;
    EXPECT_FALSE(w.check(top - kWindow - 1)) << jump;
    EXPECT_FALSE(w.check(ReplayWindow::kRingBits - 1)) << jump;  // the old top, now far too old
    EXPECT_FALSE(w.check(top));
  }
}

// A jump shorter than the window keeps the history that is still in it.
TEST(ReplayWindow, SmallJumpKeepsHistoryInWindow) {
  ReplayWindow w;
  for (uint64_t c = 0; c < 1000; ++c) ASSERT_TRUE(w.mark(c));
  ASSERT_TRUE(w.mark(3000));
  for (uint64_t c = 0; c < 1000; ++c) EXPECT_FALSE(w.check(c)) << c;
  for (uint64_t c = 1000; c < 3000; ++c) EXPECT_TRUE(w.check(c)) << c;
  ASSERT_TRUE(w.mark(4100));  // edge now 68: 0..67 too old, 68..999 still remembered
  for (uint64_t c = 0; c < 1000; ++c) EXPECT_FALSE(w.check(c)) << c;
  EXPECT_TRUE(w.check(1000));
}

TEST(ReplayWindow, CountersNearRejectAfterMessages) {
  ReplayWindow w;
  const uint64_t last = kRejectAfterMessages - 1;
  EXPECT_TRUE(w.check(last));
  EXPECT_FALSE(w.check(kRejectAfterMessages));
  EXPECT_FALSE(w.check(~uint64_t{0}));
  EXPECT_FALSE(w.mark(kRejectAfterMessages));
  EXPECT_FALSE(w.mark(~uint64_t{0}));
  EXPECT_EQ(w.greatest(), 0u);  // rejected counters do not move the window

  ASSERT_TRUE(w.mark(last));
  EXPECT_EQ(w.greatest(), last);
  EXPECT_FALSE(w.check(last));
  EXPECT_TRUE(w.check(last - 1));
  EXPECT_TRUE(w.mark(last - kWindow));
  EXPECT_FALSE(w.check(last - kWindow - 1));
  EXPECT_FALSE(w.check(kRejectAfterMessages));
}

// Two copies of one packet in the same burst both pass the pre-check; only the first to
// authenticate may be delivered.
TEST(ReplayWindow, CheckThenMarkRace) {
  ReplayWindow w;
  ASSERT_TRUE(w.mark(100));
  ASSERT_TRUE(w.check(90));
  ASSERT_TRUE(w.check(90));
  EXPECT_TRUE(w.mark(90));
  EXPECT_FALSE(w.mark(90));

  // The window moved past a counter between its check and its mark.
  ASSERT_TRUE(w.check(95));
  ASSERT_TRUE(w.mark(100 + kWindow + 10));
  EXPECT_FALSE(w.mark(95));
}

TEST(ReplayWindow, ResetForgetsEverything) {
  ReplayWindow w;
  for (uint64_t c = 0; c < 100; ++c) ASSERT_TRUE(w.mark(c * 97));
  w.reset();
  EXPECT_EQ(w.greatest(), 0u);
  for (uint64_t c = 0; c < 100; ++c) EXPECT_TRUE(w.check(c * 97));
  EXPECT_TRUE(w.mark(0));
}

// Against a model that remembers every counter: accept iff below the limit, not seen, and no more
// than kWindowSize behind the greatest seen. Traffic drifts forward with reordering, replays of
// recent counters, stale ones, and occasional jumps.
TEST(ReplayWindow, MatchesExactModelOnRandomTraffic) {
  std::mt19937_64 rng(42);
  ReplayWindow w;
  std::set<uint64_t> seen;
  std::optional<uint64_t> greatest;
  auto model_accepts = [&](uint64_t c) {
    return c < kRejectAfterMessages && !seen.count(c) && (!greatest || c + kWindow >= *greatest);
  };
  uint64_t base = 0;
  for (int i = 0; i < 200000; ++i) {
    uint64_t c;
    switch (rng() % 8) {
      case 0:  // replay of something recent, or a stale one just past the edge
        c = base > 5000 ? base - rng() % 5000 : rng() % (base + 1);
        break;
      case 1:
        if (rng() % 100 == 0) base += rng() % 20000;  // a burst of loss
        c = base;
        break;
      default:  // in order with a little reordering
        c = base + rng() % 64;
        base += 1;
        break;
    }
    const bool expected = model_accepts(c);
    ASSERT_EQ(w.check(c), expected) << "i " << i << " c " << c;
    // Mark only what would have authenticated, and sometimes a duplicate that slipped through.
    if (expected || rng() % 4 == 0) {
      ASSERT_EQ(w.mark(c), expected) << "i " << i << " c " << c;
      if (expected) {
        seen.insert(c);
        greatest = greatest ? std::max(*greatest, c) : c;
      }
    }
    ASSERT_EQ(w.greatest(), greatest.value_or(0));
  }
}

}  // namespace
}  // namespace sluice::wg
