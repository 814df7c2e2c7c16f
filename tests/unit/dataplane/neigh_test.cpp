// The neighbour table's resolution state machine, with a synthetic clock (1000 ticks a second).
#include <gtest/gtest.h>

#include <map>
#include <vector>

#include "dataplane/neigh.h"
#include "tests/unit/dataplane/eal_env.h"

namespace sluice::dp {
namespace {

constexpr uint64_t kHz = 1000;
constexpr uint32_t kHost = 0xC000020A;   // 192.0.2.10
constexpr uint32_t kOther = 0xC0000214;  // 192.0.2.20

struct Recorder {
  struct Request {
    uint16_t port;
    uint32_t ip;
    bool unicast;
  };
  std::vector<Request> requests;
  std::vector<rte_mbuf*> sent;
  unsigned dropped_full = 0, dropped_unreachable = 0;
  NeighTable::Io io() {
    NeighTable::Io io;
    io.send_request = [this](uint16_t p, uint32_t ip, const MacAddr* u) { requests.push_back({p, ip, u != nullptr}); };
    io.drop = [this](rte_mbuf* m, bool unreachable) {
      (unreachable ? dropped_unreachable : dropped_full)++;
      rte_pktmbuf_free(m);
    };
    io.send_held = [this](rte_mbuf* m, const MacAddr&) { sent.push_back(m); };
    return io;
  }
  ~Recorder() {
    for (auto* m : sent) rte_pktmbuf_free(m);
  }
};

class NeighTest : public ::testing::Test {
 protected:
  void SetUp() override {
    test::ensure_eal();
    ASSERT_TRUE(rcu.init(RTE_MAX_LCORE));
    NeighTable::Config c;
    c.capacity = 64;
    c.timeout_s = 30;
    c.queue_per_entry = 4;
    c.max_probes = 3;
    c.probe_interval_s = 1;
    c.failed_hold_s = 3;
    static int n = 0;
    name = "neigh_test" + std::to_string(n++);
    ASSERT_TRUE(table.init(c, kHz, &rcu, name.c_str()));
  }
  // Deferred frees reference the table: run them while it is alive.
  void TearDown() override { rcu.synchronize(); }
  rte_mbuf* pkt() { return rte_pktmbuf_alloc(test::test_pool()); }

  std::string name;
  Rcu rcu;
  NeighTable table;
  Recorder rec;
  MacAddr mac{{0x02, 0, 0, 0, 0, 0x0a}};
};

TEST_F(NeighTest, PackUnpackMac) {
  MacAddr m{{0xde, 0xad, 0xbe, 0xef, 0x01, 0x02}};
  uint64_t v = pack_mac(m);
  EXPECT_TRUE(v & NeighEntry::kValid);
  MacAddr back = unpack_mac(v);
  EXPECT_EQ(0, memcmp(m.b, back.b, 6));
}

TEST_F(NeighTest, MissQueuesAndRequestsOnce) {
  EXPECT_EQ(nullptr, table.lookup(0, kHost));
  table.resolve(0, kHost, pkt(), 0, rec.io());
  table.resolve(0, kHost, pkt(), 1, rec.io());
  ASSERT_EQ(1u, rec.requests.size());  // one request outstanding, not one per packet
  EXPECT_EQ(kHost, rec.requests[0].ip);
  EXPECT_FALSE(rec.requests[0].unicast);
  const NeighEntry* e = table.lookup(0, kHost);
  ASSERT_NE(nullptr, e);
  EXPECT_FALSE(e->valid(e->mac.load()));  // incomplete: workers keep handing packets over
  auto snap = table.snapshot(2);
  ASSERT_EQ(1u, snap.size());
  EXPECT_EQ(NeighTable::State::incomplete, snap[0].state);
  EXPECT_EQ(2u, snap[0].queued);
  table.flush(rec.io());
}

TEST_F(NeighTest, ReplyFlushesHeldPacketsInOrder) {
  rte_mbuf* a = pkt();
  rte_mbuf* b = pkt();
  table.resolve(0, kHost, a, 0, rec.io());
  table.resolve(0, kHost, b, 0, rec.io());
  table.learn(0, kHost, mac, false, 5, rec.io());
  ASSERT_EQ(2u, rec.sent.size());
  EXPECT_EQ(a, rec.sent[0]);
  EXPECT_EQ(b, rec.sent[1]);
  const NeighEntry* e = table.lookup(0, kHost);
  uint64_t v = e->mac.load();
  ASSERT_TRUE(e->valid(v));
  EXPECT_EQ(0, memcmp(mac.b, unpack_mac(v).b, 6));
}

TEST_F(NeighTest, QueueIsBoundedAndKeepsNewest) {
  std::vector<rte_mbuf*> all;
  for (int i = 0; i < 6; ++i) {
    all.push_back(pkt());
    table.resolve(0, kHost, all.back(), 0, rec.io());
  }
  EXPECT_EQ(2u, rec.dropped_full);  // 4 held, the 2 oldest counted as dropped
  table.learn(0, kHost, mac, false, 1, rec.io());
  ASSERT_EQ(4u, rec.sent.size());
  EXPECT_EQ(all[2], rec.sent[0]);
  EXPECT_EQ(all[5], rec.sent[3]);
}

TEST_F(NeighTest, UnansweredResolutionFailsThenRetriesLater) {
  table.resolve(0, kHost, pkt(), 0, rec.io());
  for (uint64_t t = 1; t <= 4; ++t) table.tick(t * kHz, rec.io());
  EXPECT_EQ(3u, rec.requests.size());  // max_probes requests, one a second
  EXPECT_EQ(1u, rec.dropped_unreachable);
  // While failed, packets are dropped at once, without new requests.
  table.resolve(0, kHost, pkt(), 4 * kHz + 10, rec.io());
  EXPECT_EQ(2u, rec.dropped_unreachable);
  EXPECT_EQ(3u, rec.requests.size());
  // After the hold time the entry goes away and the next packet starts over.
  table.tick(8 * kHz, rec.io());
  rcu.synchronize();
  EXPECT_EQ(nullptr, table.lookup(0, kHost));
  table.resolve(0, kHost, pkt(), 8 * kHz + 1, rec.io());
  EXPECT_EQ(4u, rec.requests.size());
  table.flush(rec.io());
}

TEST_F(NeighTest, UnsolicitedReplyDoesNotCreateEntries) {
  table.learn(0, kOther, mac, false, 0, rec.io());
  EXPECT_EQ(nullptr, table.lookup(0, kOther));
  table.learn(0, kOther, mac, true, 0, rec.io());  // a request addressed to us does
  EXPECT_NE(nullptr, table.lookup(0, kOther));
  EXPECT_EQ(nullptr, table.lookup(1, kOther));  // entries are per port
}

TEST_F(NeighTest, IdleEntryAgesOut) {
  table.learn(0, kHost, mac, true, 0, rec.io());
  table.tick(29 * kHz, rec.io());
  EXPECT_NE(nullptr, table.lookup(0, kHost));
  table.tick(31 * kHz, rec.io());
  EXPECT_EQ(nullptr, table.lookup(0, kHost));
  EXPECT_TRUE(rec.requests.empty());  // nobody used it: no probe
  rcu.synchronize();
  EXPECT_EQ(0u, table.size());
}

TEST_F(NeighTest, UsedEntryIsReconfirmedByUnicastBeforeExpiry) {
  table.learn(0, kHost, mac, true, 0, rec.io());
  const NeighEntry* e = table.lookup(0, kHost);
  table.touch(e, 20 * kHz);  // a worker sent through it
  table.tick(31 * kHz, rec.io());
  ASSERT_EQ(1u, rec.requests.size());
  EXPECT_TRUE(rec.requests[0].unicast);
  EXPECT_TRUE(e->valid(e->mac.load()));  // still usable while probing
  table.learn(0, kHost, mac, false, 31 * kHz + 5, rec.io());
  EXPECT_EQ(NeighTable::State::reachable, table.snapshot(32 * kHz)[0].state);
}

TEST_F(NeighTest, ProbeWithoutAnswerRemovesEntry) {
  table.learn(0, kHost, mac, true, 0, rec.io());
  table.touch(table.lookup(0, kHost), 10 * kHz);
  for (uint64_t t = 31; t <= 35; ++t) table.tick(t * kHz, rec.io());
  EXPECT_EQ(3u, rec.requests.size());
  EXPECT_TRUE(rec.requests[0].unicast);
  EXPECT_FALSE(rec.requests[1].unicast);  // falls back to broadcast: the MAC may have changed
  EXPECT_EQ(nullptr, table.lookup(0, kHost));
}

TEST_F(NeighTest, FullTableDropsInsteadOfGrowing) {
  for (uint32_t i = 0; i < 80; ++i) table.learn(0, kHost + i + 100, mac, true, 0, rec.io());
  EXPECT_LE(table.size(), 64u);  // never beyond its capacity
  EXPECT_GE(table.size(), 48u);
  table.resolve(0, kHost, pkt(), 0, rec.io());
  EXPECT_EQ(1u, rec.dropped_full);
  EXPECT_TRUE(rec.requests.empty());
}

TEST_F(NeighTest, RemovedSlotsAreReusedOnlyAfterGracePeriod) {
  table.learn(0, kHost, mac, true, 0, rec.io());
  table.tick(31 * kHz, rec.io());  // ages out
  EXPECT_EQ(1u, rcu.pending());
  rcu.synchronize();  // no reader registered: the grace period ends at once
  EXPECT_EQ(0u, rcu.pending());
  table.learn(0, kOther, mac, true, 32 * kHz, rec.io());
  EXPECT_NE(nullptr, table.lookup(0, kOther));
}

}  // namespace
}  // namespace sluice::dp
