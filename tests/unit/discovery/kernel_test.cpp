#include "controlplane/discovery/kernel.h"

#include <gtest/gtest.h>
#include <linux/if.h>
#include <linux/if_addr.h>
#include <linux/if_arp.h>

namespace sluice::discovery {
namespace {

uint32_t A(const char* s) { return *config::parse_ipv4(s); }

constexpr unsigned kUp = IFF_UP | IFF_RUNNING;

TEST(KernelFilter, Links) {
  EXPECT_TRUE(usable_link(kUp, ARPHRD_ETHER));
  EXPECT_TRUE(usable_link(kUp | IFF_BROADCAST | IFF_MULTICAST, ARPHRD_ETHER));
  EXPECT_FALSE(usable_link(IFF_UP, ARPHRD_ETHER));       // no carrier
  EXPECT_FALSE(usable_link(IFF_RUNNING, ARPHRD_ETHER));  // administratively down
  EXPECT_FALSE(usable_link(kUp | IFF_LOOPBACK, ARPHRD_LOOPBACK));
  EXPECT_FALSE(usable_link(kUp | IFF_LOOPBACK, ARPHRD_ETHER));
  EXPECT_FALSE(usable_link(kUp | IFF_POINTOPOINT, ARPHRD_NONE));  // WireGuard, tun
  EXPECT_FALSE(usable_link(kUp, ARPHRD_IPGRE));
}

TEST(KernelFilter, Addresses) {
  EXPECT_TRUE(usable_address(A("203.0.113.129"), 25));
  EXPECT_TRUE(usable_address(A("198.51.100.1"), 24));
  EXPECT_TRUE(usable_address(A("192.0.2.7"), 32));
  EXPECT_TRUE(usable_address(A("192.0.2.1"), 31));
  EXPECT_FALSE(usable_address(A("127.0.0.1"), 8));      // loopback
  EXPECT_FALSE(usable_address(A("127.1.2.3"), 16));
  EXPECT_FALSE(usable_address(A("169.254.10.20"), 16));  // auto-configured
  EXPECT_FALSE(usable_address(A("224.0.0.251"), 24));   // multicast
  EXPECT_FALSE(usable_address(A("239.255.255.250"), 8));
  EXPECT_FALSE(usable_address(A("240.0.0.1"), 8));      // reserved
  EXPECT_FALSE(usable_address(A("255.255.255.255"), 32));
  EXPECT_FALSE(usable_address(A("0.0.0.0"), 0));
  EXPECT_FALSE(usable_address(A("198.51.100.255"), 24));  // its prefix's broadcast address
  EXPECT_FALSE(usable_address(A("192.0.2.1"), 33));
}

TEST(KernelObservations, OnlyUsableAddressesOnUsableLinks) {
  KernelSnapshot s;
  s.links = {{1, "lo", kUp | IFF_LOOPBACK, ARPHRD_LOOPBACK},
             {2, "eth0", kUp, ARPHRD_ETHER},
             {3, "eth1", IFF_UP, ARPHRD_ETHER},  // no carrier
             {4, "wg0", kUp, ARPHRD_NONE},
             {5, "dummy0", kUp, ARPHRD_ETHER}};
  s.addrs = {{1, A("127.0.0.1"), 8, 0},
             {2, A("198.51.100.1"), 24, 0},
             {2, A("169.254.3.4"), 16, 0},
             {2, A("198.51.100.2"), 24, IFA_F_SECONDARY},
             {3, A("192.0.2.2"), 24, 0},
             {4, A("100.64.0.1"), 10, 0},
             {5, A("203.0.113.129"), 25, 0},
             {5, A("203.0.113.1"), 26, IFA_F_TENTATIVE},
             {9, A("192.0.2.9"), 24, 0}};  // no such link
  const auto obs = kernel_observations(s);
  ASSERT_EQ(obs.size(), 3u);
  EXPECT_EQ(obs[0].prefix, *config::parse_prefix("198.51.100.0/24"));
  EXPECT_EQ(obs[0].interface, "eth0");
  EXPECT_EQ(obs[0].source, Source::kernel);
  EXPECT_EQ(obs[1].prefix, *config::parse_prefix("198.51.100.0/24"));  // the registry merges them
  EXPECT_EQ(obs[2].prefix, *config::parse_prefix("203.0.113.128/25"));
  EXPECT_EQ(obs[2].interface, "dummy0");
  ASSERT_NE(s.link("eth1"), nullptr);
  EXPECT_FALSE(link_running(*s.link("eth1")));
  EXPECT_TRUE(link_running(*s.link(2)));
  EXPECT_EQ(s.link("nope"), nullptr);
}

// The real kernel: a dump of this namespace always has a loopback interface, and lo's 127.0.0.1
// never shows up as a subnet.
TEST(KernelWatcher, DumpsThisNamespace) {
  KernelSnapshot s;
  std::string err;
  ASSERT_TRUE(KernelWatcher::dump(&s, &err)) << err;
  const KernelLink* lo = s.link("lo");
  ASSERT_NE(lo, nullptr);
  for (const auto& o : kernel_observations(s)) EXPECT_NE(o.interface, "lo");
  KernelWatcher w;
  ASSERT_TRUE(w.open(&err)) << err;
  EXPECT_TRUE(w.is_open());
  w.drain();  // non-blocking: returns at once
}

}  // namespace
}  // namespace sluice::discovery
