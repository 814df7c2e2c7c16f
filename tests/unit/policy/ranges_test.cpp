#include "controlplane/policy/ranges.h"

#include <gtest/gtest.h>


namespace sluice::policy {
namespace {

TEST(Ranges, MergeJoinsOverlappingAndAdjacent) {
  auto m = merge_ranges({{10, 20}, {21, 30}, {5, 12}, {40, 50}, {45, 46}, {UINT32_MAX - 1, UINT32_MAX}});
  ASSERT_EQ(m.size(), 3u);
  EXPECT_EQ(m[0], (config::AddrRange{5, 30}));
  EXPECT_EQ(m[1], (config::AddrRange{40, 50}));
  EXPECT_EQ(m[2], (config::AddrRange{UINT32_MAX - 1, UINT32_MAX}));
  EXPECT_TRUE(ranges_contain(m, 5));
  EXPECT_TRUE(ranges_contain(m, 30));
  EXPECT_FALSE(ranges_contain(m, 31));
  EXPECT_FALSE(ranges_contain(m, 4));
  EXPECT_TRUE(ranges_contain(m, UINT32_MAX));
  EXPECT_TRUE(ranges_overlap(m, {{30, 35}}));
  EXPECT_FALSE(ranges_overlap(m, {{31, 39}, {51, 100}}));
}

TEST(Ranges, MergePorts) {
  auto m = merge_ports({{443, 443}, {22, 22}, {23, 25}, {80, 90}, {85, 100}, {65535, 65535}, {0, 0}, {65534, 65534}});
  ASSERT_EQ(m.size(), 5u);
  EXPECT_EQ(m[0], (config::PortRange{0, 0}));
  EXPECT_EQ(m[1], (config::PortRange{22, 25}));
  EXPECT_EQ(m[2], (config::PortRange{80, 100}));
  EXPECT_EQ(m[3], (config::PortRange{443, 443}));
  EXPECT_EQ(m[4], (config::PortRange{65534, 65535}));
}

}  // namespace
}  // namespace sluice::policy
