// ConnTable: lookups in both directions, port slices, expiry with an injected clock (1000 ticks
// a second), bounded expiry, a full table, TCP states, a randomised model check, snapshots,
// and the fragment tracker.
#include <gtest/gtest.h>

#include <map>
#include <random>
#include <set>
#include <thread>
#include <tuple>
#include <vector>

#include "dataplane/conntrack.h"

namespace sluice::dp {
namespace {

constexpr uint64_t kHz = 1000;
constexpr uint32_t kSnat = 0xC6336401;  // 198.51.100.1

FlowKey key(uint32_t src, uint32_t dst, uint16_t sport, uint16_t dport, uint8_t proto = kProtoUdp) {
  FlowKey k;
  k.src = src, k.dst = dst, k.sport = sport, k.dport = dport, k.proto = proto;
  return k;
}

ConnTable::Config config(uint32_t capacity, unsigned worker = 0, unsigned n = 1) {
  ConnTable::Config c;
  c.capacity = capacity;
  c.worker = worker;
  c.n_workers = n;
  c.ticks_per_sec = kHz;
  c.seed = 42;
  return c;
}

TEST(ConnTable, EntryIsOneCacheLine) {
  EXPECT_EQ(sizeof(Conn), 64u);
  EXPECT_EQ(alignof(Conn), 64u);
}

TEST(ConnTable, InsertThenLookupBothDirections) {
  ConnTable t;
  ASSERT_TRUE(t.init(config(1024)));
  const FlowKey orig = key(0x64400002, 0xC633640A, 5555, 80, kProtoTcp);
  ConnTable::InsertResult r;
  Conn* c = t.insert(orig, 7, kSnat, 0, &r);
  ASSERT_NE(c, nullptr);
  EXPECT_EQ(r, ConnTable::InsertResult::created);
  EXPECT_EQ(c->peer, 7u);
  EXPECT_EQ(c->snat_addr, kSnat);
  EXPECT_TRUE(t.port_slice().contains(c->snat_port));
  EXPECT_EQ(c->state, ConnState::tcp_syn_sent);
  EXPECT_EQ(c->expires, 120 * kHz);
  EXPECT_EQ(c->orig_key(), orig);

  EXPECT_EQ(t.lookup(orig, FlowDir::orig), c);
  const FlowKey reply = key(0xC633640A, kSnat, 80, c->snat_port, kProtoTcp);
  EXPECT_EQ(c->reply_key(), reply);
  EXPECT_EQ(t.lookup(reply, FlowDir::reply), c);
  // Keys are per direction: the orig key is no reply key and vice versa.
  EXPECT_EQ(t.lookup(orig, FlowDir::reply), nullptr);
  EXPECT_EQ(t.lookup(reply, FlowDir::orig), nullptr);
  EXPECT_EQ(t.lookup(key(0x64400002, 0xC633640A, 5555, 80, kProtoUdp), FlowDir::orig), nullptr);

  // Inserting the same flow again returns it.
  EXPECT_EQ(t.insert(orig, 7, kSnat, 5, &r), c);
  EXPECT_EQ(r, ConnTable::InsertResult::existed);
  EXPECT_EQ(t.size(), 1u);
  EXPECT_EQ(t.stats().inserts.get(), 1u);
}

TEST(ConnTable, IcmpEchoKeys) {
  ConnTable t;
  ASSERT_TRUE(t.init(config(64)));
  const FlowKey req = key(0x64400002, 0x08080808, 0x1234, 0, kProtoIcmp);
  Conn* c = t.insert(req, 1, kSnat, 0);
  ASSERT_NE(c, nullptr);
  EXPECT_EQ(c->state, ConnState::icmp);
  // The echo reply as seen: {src = remote, dst = snat, sport = 0, dport = id}.
  EXPECT_EQ(t.lookup(key(0x08080808, kSnat, 0, c->snat_port, kProtoIcmp), FlowDir::reply), c);
}

TEST(ConnTable, LookupBulkAgreesWithLookup) {
  ConnTable t;
  ASSERT_TRUE(t.init(config(20000)));
  std::mt19937_64 rng(1);
  std::vector<FlowKey> keys;
  for (int i = 0; i < 15000; i++) {
    FlowKey k = key(uint32_t(rng()), uint32_t(rng()), uint16_t(rng()), uint16_t(rng()), kProtoUdp);
    if (t.insert(k, 0, kSnat, 0)) keys.push_back(k);
  }
  for (int round = 0; round < 2000; round++) {
    FlowKey q[ConnTable::kMaxBulk];
    FlowDir dir = round % 2 ? FlowDir::reply : FlowDir::orig;
    const unsigned n = 1 + unsigned(rng() % ConnTable::kMaxBulk);
    for (unsigned j = 0; j < n; j++) {
      if (rng() % 3 == 0) {
        q[j] = key(uint32_t(rng()), uint32_t(rng()), 1, 2);  // a miss
      } else {
        Conn* c = t.lookup(keys[rng() % keys.size()], FlowDir::orig);
        q[j] = dir == FlowDir::orig ? c->orig_key() : c->reply_key();
      }
    }
    Conn* out[ConnTable::kMaxBulk];
    t.lookup_bulk(q, n, dir, out);
    for (unsigned j = 0; j < n; j++) ASSERT_EQ(out[j], t.lookup(q[j], dir));
  }
}

TEST(ConnTable, PortSlicesPartitionTheRangeAndOwnerWorkerIsTheInverse) {
  for (unsigned n : {1u, 2u, 3u, 4u, 7u, 8u, 16u, 63u, 64u}) {
    std::vector<unsigned> owner(65536, n);
    for (unsigned w = 0; w < n; w++) {
      PortSlice s = ConnTable::slice(w, n);
      for (uint32_t p = s.first; p <= s.last; p++) {
        ASSERT_EQ(owner[p], n) << "overlap at " << p;
        owner[p] = w;
      }
    }
    for (uint32_t p = 0; p < 65536; p++) {
      if (p < kNatPortFirst) {
        ASSERT_EQ(owner[p], n);
        ASSERT_EQ(ConnTable::owner_worker(uint16_t(p), n), n);
      } else {
        ASSERT_LT(owner[p], n) << "port " << p << " unowned";
        ASSERT_EQ(ConnTable::owner_worker(uint16_t(p), n), owner[p]);
      }
    }
  }
}

TEST(ConnTable, AllocatedPortsStayInTheWorkersSlice) {
  const unsigned n = 4;
  for (unsigned w = 0; w < n; w++) {
    ConnTable t;
    ASSERT_TRUE(t.init(config(5000, w, n)));
    std::mt19937_64 rng(w);
    for (int i = 0; i < 5000; i++) {
      Conn* c = t.insert(key(0x64400000 + uint32_t(rng() % 50), uint32_t(rng() % 20), uint16_t(rng()),
                             443, kProtoTcp), 0, kSnat, 0);
      if (c == nullptr) continue;
      ASSERT_TRUE(t.port_slice().contains(c->snat_port));
      ASSERT_EQ(ConnTable::owner_worker(c->snat_port, n), w);
    }
  }
}

TEST(ConnTable, PortsUniquePerRemoteEndpointAndExhaustion) {
  // 64 workers: 1008 ports per slice. Every flow goes to the same remote endpoint.
  ConnTable t;
  ConnTable::Config cfg = config(4096, 5, 64);
  ASSERT_TRUE(t.init(cfg));
  const PortSlice s = t.port_slice();
  ASSERT_EQ(s.size(), 1008u);
  std::set<uint16_t> ports;
  unsigned no_port = 0;
  for (uint32_t i = 0; i < 1500; i++) {
    ConnTable::InsertResult r;
    Conn* c = t.insert(key(0x64400002, 0xC633640A, uint16_t(10000 + i), 443, kProtoTcp), 0, kSnat, 0, &r);
    if (c == nullptr) {
      EXPECT_EQ(r, ConnTable::InsertResult::no_port);
      no_port++;
      continue;
    }
    EXPECT_TRUE(ports.insert(c->snat_port).second) << "port reused for the same endpoint";
  }
  EXPECT_GE(no_port, 1500u - 1008u);
  EXPECT_GT(ports.size(), 900u);  // random probing fills most of the slice
  EXPECT_EQ(t.stats().port_exhausted.get(), no_port);
  // Another remote endpoint (or protocol) can use the same ports again.
  Conn* other = t.insert(key(0x64400002, 0xC633640B, 1, 443, kProtoTcp), 0, kSnat, 0);
  ASSERT_NE(other, nullptr);
  Conn* udp = t.insert(key(0x64400002, 0xC633640A, 1, 443, kProtoUdp), 0, kSnat, 0);
  ASSERT_NE(udp, nullptr);
}

TEST(ConnTable, UdpTimeoutsWithInjectedClock) {
  ConnTable t;
  ASSERT_TRUE(t.init(config(64)));
  Conn* c = t.insert(key(1, 2, 3, 4), 0, kSnat, 1000);
  ASSERT_TRUE(t.track(*c, FlowDir::orig, 0, 1000));
  EXPECT_EQ(c->state, ConnState::udp_unreplied);
  EXPECT_EQ(t.expire(1000 + 30 * kHz - 1, 100), 0u);
  EXPECT_EQ(t.size(), 1u);
  // A reply makes it a stream: 120 s.
  ASSERT_TRUE(t.track(*c, FlowDir::reply, 0, 2000));
  EXPECT_EQ(c->state, ConnState::udp_replied);
  EXPECT_TRUE(c->flags & kConnSeenReply);
  EXPECT_EQ(c->packets_orig, 1u);
  EXPECT_EQ(c->packets_reply, 1u);
  EXPECT_EQ(t.expire(2000 + 120 * kHz - 1, 100), 0u);
  const FlowKey reply = c->reply_key();
  EXPECT_EQ(t.expire(2000 + 120 * kHz, 100), 1u);
  EXPECT_EQ(t.size(), 0u);
  EXPECT_EQ(t.lookup(key(1, 2, 3, 4), FlowDir::orig), nullptr);
  EXPECT_EQ(t.lookup(reply, FlowDir::reply), nullptr);
  EXPECT_EQ(t.stats().expired.get(), 1u);
}

TEST(ConnTable, IcmpTimeout) {
  ConnTable t;
  ASSERT_TRUE(t.init(config(64)));
  Conn* c = t.insert(key(1, 2, 3, 0, kProtoIcmp), 0, kSnat, 0);
  ASSERT_TRUE(t.track(*c, FlowDir::reply, 0, 0));
  EXPECT_EQ(c->expires, 30 * kHz);
}

TEST(ConnTable, ExpiryIsBoundedPerCall) {
  ConnTable t;
  ASSERT_TRUE(t.init(config(1000)));
  for (uint16_t i = 0; i < 1000; i++) {
    Conn* c = t.insert(key(1, 2, i, 4), 0, kSnat, 0);
    ASSERT_NE(c, nullptr);
    if (i % 2) {
      ASSERT_TRUE(t.track(*c, FlowDir::reply, 0, 0));  // these live 120 s
    }
  }
  size_t total = 0;
  unsigned calls = 0;
  while (t.size() > 500) {
    size_t r = t.expire(60 * kHz, 10);
    ASSERT_LE(r, 10u);
    total += r;
    calls++;
    ASSERT_LT(calls, 1000u);
  }
  EXPECT_EQ(total, 500u);
  EXPECT_GE(calls, 50u);
  // Half the visits were live entries: about 100 calls of 10 visits.
  EXPECT_LE(calls, 110u);
  for (uint16_t i = 0; i < 1000; i++)
    EXPECT_EQ(t.lookup(key(1, 2, i, 4), FlowDir::orig) != nullptr, i % 2 == 1);
  // Nothing more is due; the rest goes at 120 s.
  EXPECT_EQ(t.expire(60 * kHz, 1000), 0u);
  EXPECT_EQ(t.expire(120 * kHz, 1000), 500u);
  EXPECT_EQ(t.size(), 0u);
}

TEST(ConnTable, FullTableRefusesNewFlowsAndKeepsOldOnes) {
  ConnTable t;
  ASSERT_TRUE(t.init(config(100)));
  for (uint16_t i = 0; i < 100; i++) ASSERT_NE(t.insert(key(1, 2, i, 4), 0, kSnat, 0), nullptr);
  ConnTable::InsertResult r;
  EXPECT_EQ(t.insert(key(1, 2, 1000, 4), 0, kSnat, 0, &r), nullptr);
  EXPECT_EQ(r, ConnTable::InsertResult::table_full);
  EXPECT_EQ(t.stats().full_drops.get(), 1u);
  for (uint16_t i = 0; i < 100; i++) {
    Conn* c = t.lookup(key(1, 2, i, 4), FlowDir::orig);
    ASSERT_NE(c, nullptr);
    EXPECT_TRUE(t.track(*c, FlowDir::orig, 0, 0));
  }
  // Existing flows are still found by insert (a burst's second packet of a known flow).
  EXPECT_NE(t.insert(key(1, 2, 5, 4), 0, kSnat, 0, &r), nullptr);
  EXPECT_EQ(r, ConnTable::InsertResult::existed);
  t.erase(*t.lookup(key(1, 2, 7, 4), FlowDir::orig));
  EXPECT_NE(t.insert(key(1, 2, 1000, 4), 0, kSnat, 0), nullptr);
  EXPECT_EQ(t.stats().erased.get(), 1u);
  EXPECT_EQ(t.stats().size.get(), 100u);
}

// --- TCP ---

struct TcpFixture : ::testing::Test {
  ConnTable t;
  Conn* c = nullptr;
  uint64_t now = 0;
  void SetUp() override {
    ASSERT_TRUE(t.init(config(64)));
    ASSERT_TRUE(ConnTable::can_open(kProtoTcp, kTcpSyn));
    c = t.insert(key(0x64400002, 0xC633640A, 5555, 80, kProtoTcp), 0, kSnat, 0);
    ASSERT_NE(c, nullptr);
    ASSERT_TRUE(step(FlowDir::orig, kTcpSyn, ConnState::tcp_syn_sent));
  }
  bool step(FlowDir d, uint8_t flags, ConnState want) {
    now += kHz;
    const ConnState before = c->state;
    const uint64_t before_exp = c->expires;
    if (!t.track(*c, d, flags, now)) {
      EXPECT_EQ(c->state, before);
      EXPECT_EQ(c->expires, before_exp);
      return false;
    }
    EXPECT_EQ(c->state, want) << conn_state_name(c->state) << " want " << conn_state_name(want);
    EXPECT_EQ(c->expires, now + t.timeout_ticks(want));
    return c->state == want;
  }
  void establish() {
    ASSERT_TRUE(step(FlowDir::reply, kTcpSyn | kTcpAck, ConnState::tcp_syn_recv));
    ASSERT_TRUE(step(FlowDir::orig, kTcpAck, ConnState::tcp_established));
    EXPECT_TRUE(c->flags & kConnAssured);
  }
};

TEST(ConnTableTcp, OnlyABareSynOpens) {
  EXPECT_TRUE(ConnTable::can_open(kProtoTcp, kTcpSyn));
  EXPECT_TRUE(ConnTable::can_open(kProtoTcp, kTcpSyn | 0x08 | 0x40 | 0x80));  // PSH, ECE, CWR
  EXPECT_FALSE(ConnTable::can_open(kProtoTcp, kTcpSyn | kTcpAck));
  EXPECT_FALSE(ConnTable::can_open(kProtoTcp, kTcpAck));
  EXPECT_FALSE(ConnTable::can_open(kProtoTcp, kTcpRst));
  EXPECT_FALSE(ConnTable::can_open(kProtoTcp, kTcpSyn | kTcpFin));
  EXPECT_TRUE(ConnTable::can_open(kProtoUdp, 0));
  EXPECT_TRUE(ConnTable::can_open(kProtoIcmp, 0));
  EXPECT_FALSE(ConnTable::can_open(47, 0));
}

TEST_F(TcpFixture, TimeoutsAreNetfilters) {
  EXPECT_EQ(t.timeout_ticks(ConnState::tcp_syn_sent), 120 * kHz);
  EXPECT_EQ(t.timeout_ticks(ConnState::tcp_syn_recv), 60 * kHz);
  EXPECT_EQ(t.timeout_ticks(ConnState::tcp_established), 432000 * kHz);
  EXPECT_EQ(t.timeout_ticks(ConnState::tcp_fin_wait), 120 * kHz);
  EXPECT_EQ(t.timeout_ticks(ConnState::tcp_close_wait), 60 * kHz);
  EXPECT_EQ(t.timeout_ticks(ConnState::tcp_last_ack), 30 * kHz);
  EXPECT_EQ(t.timeout_ticks(ConnState::tcp_time_wait), 120 * kHz);
  EXPECT_EQ(t.timeout_ticks(ConnState::tcp_close), 10 * kHz);
  EXPECT_EQ(t.timeout_ticks(ConnState::udp_unreplied), 30 * kHz);
  EXPECT_EQ(t.timeout_ticks(ConnState::udp_replied), 120 * kHz);
  EXPECT_EQ(t.timeout_ticks(ConnState::icmp), 30 * kHz);
}

TEST_F(TcpFixture, HandshakeAndPeerClosesFirst) {
  EXPECT_TRUE(step(FlowDir::orig, kTcpSyn, ConnState::tcp_syn_sent));  // retransmitted SYN
  establish();
  EXPECT_TRUE(step(FlowDir::reply, kTcpAck | 0x08, ConnState::tcp_established));
  EXPECT_TRUE(step(FlowDir::orig, kTcpFin | kTcpAck, ConnState::tcp_fin_wait));
  EXPECT_TRUE(step(FlowDir::orig, kTcpFin | kTcpAck, ConnState::tcp_fin_wait));  // retransmit
  EXPECT_TRUE(step(FlowDir::reply, kTcpAck, ConnState::tcp_close_wait));
  EXPECT_TRUE(step(FlowDir::reply, kTcpAck, ConnState::tcp_close_wait));  // half-closed data
  EXPECT_TRUE(step(FlowDir::reply, kTcpFin | kTcpAck, ConnState::tcp_last_ack));
  EXPECT_TRUE(step(FlowDir::reply, kTcpAck, ConnState::tcp_last_ack));  // not the final ACK
  EXPECT_TRUE(step(FlowDir::orig, kTcpAck, ConnState::tcp_time_wait));
  EXPECT_TRUE(step(FlowDir::orig, kTcpAck, ConnState::tcp_time_wait));
  // TIME_WAIT expires after 120 s.
  EXPECT_EQ(t.expire(now + 120 * kHz - 1, 64), 0u);
  EXPECT_EQ(t.expire(now + 120 * kHz, 64), 1u);
}

TEST_F(TcpFixture, RemoteClosesFirstWithCombinedFinAck) {
  establish();
  EXPECT_TRUE(step(FlowDir::reply, kTcpFin | kTcpAck, ConnState::tcp_fin_wait));
  EXPECT_TRUE(step(FlowDir::orig, kTcpFin | kTcpAck, ConnState::tcp_last_ack));
  EXPECT_TRUE(step(FlowDir::reply, kTcpAck, ConnState::tcp_time_wait));
}

TEST_F(TcpFixture, RstClosesFromAnyStateAndSynReopens) {
  establish();
  EXPECT_TRUE(step(FlowDir::reply, kTcpRst, ConnState::tcp_close));
  EXPECT_TRUE(step(FlowDir::reply, kTcpRst | kTcpAck, ConnState::tcp_close));
  EXPECT_EQ(c->expires, now + 10 * kHz);
  EXPECT_FALSE(step(FlowDir::reply, kTcpSyn | kTcpAck, ConnState::tcp_close));
  EXPECT_TRUE(step(FlowDir::orig, kTcpSyn, ConnState::tcp_syn_sent));
  EXPECT_TRUE(step(FlowDir::orig, kTcpRst, ConnState::tcp_close));
  EXPECT_EQ(t.expire(now + 10 * kHz, 64), 1u);
}

TEST_F(TcpFixture, TimeWaitReopensOnSyn) {
  establish();
  ASSERT_TRUE(step(FlowDir::orig, kTcpFin | kTcpAck, ConnState::tcp_fin_wait));
  ASSERT_TRUE(step(FlowDir::reply, kTcpFin | kTcpAck, ConnState::tcp_last_ack));
  ASSERT_TRUE(step(FlowDir::orig, kTcpAck, ConnState::tcp_time_wait));
  EXPECT_TRUE(step(FlowDir::orig, kTcpSyn, ConnState::tcp_syn_sent));
  EXPECT_FALSE(c->flags & (kConnFinOrig | kConnFinReply));
  establish();
}

TEST_F(TcpFixture, InvalidPacketsLeaveTheStateAlone) {
  // Before the SYN-ACK: the remote may not ACK or FIN, the peer may not ACK.
  EXPECT_FALSE(step(FlowDir::reply, kTcpAck, ConnState::tcp_syn_sent));
  EXPECT_FALSE(step(FlowDir::reply, kTcpFin | kTcpAck, ConnState::tcp_syn_sent));
  EXPECT_FALSE(step(FlowDir::orig, kTcpAck, ConnState::tcp_syn_sent));
  EXPECT_FALSE(step(FlowDir::orig, kTcpSyn | kTcpAck, ConnState::tcp_syn_sent));
  // Nonsense flag combinations anywhere.
  EXPECT_FALSE(step(FlowDir::orig, kTcpSyn | kTcpFin, ConnState::tcp_syn_sent));
  EXPECT_FALSE(step(FlowDir::orig, kTcpSyn | kTcpRst, ConnState::tcp_syn_sent));
  EXPECT_FALSE(step(FlowDir::orig, 0, ConnState::tcp_syn_sent));
  EXPECT_FALSE(step(FlowDir::orig, kTcpFin, ConnState::tcp_syn_sent));  // FIN without ACK
  establish();
  EXPECT_FALSE(step(FlowDir::orig, kTcpSyn, ConnState::tcp_established));
  EXPECT_TRUE(step(FlowDir::reply, kTcpSyn | kTcpAck, ConnState::tcp_established));  // late dup
  EXPECT_EQ(c->state, ConnState::tcp_established);
}

TEST(ConnTableTcp, SynAckLostPeerRetransmitsSyn) {
  ConnState n;
  uint8_t f = 0;
  ASSERT_TRUE(ConnTable::tcp_next(ConnState::tcp_syn_recv, FlowDir::orig, kTcpSyn, f, &n));
  EXPECT_EQ(n, ConnState::tcp_syn_recv);
  ASSERT_TRUE(ConnTable::tcp_next(ConnState::tcp_syn_recv, FlowDir::orig, kTcpFin | kTcpAck, f, &n));
  EXPECT_EQ(n, ConnState::tcp_fin_wait);
  EXPECT_TRUE(f & kConnFinOrig);
}

// --- Randomised model check: inserts, erases, expiry, both lookups against a std::map. ---

TEST(ConnTable, RandomChurnAgreesWithAModel) {
  for (uint32_t cap : {7u, 100u, 3000u}) {
    ConnTable t;
    ASSERT_TRUE(t.init(config(cap, 1, 3)));
    std::mt19937_64 rng(cap);
    std::map<std::tuple<uint32_t, uint32_t, uint16_t, uint16_t, uint8_t>, uint64_t> model;  // -> expires
    auto tup = [](const FlowKey& k) { return std::make_tuple(k.src, k.dst, k.sport, k.dport, k.proto); };
    uint64_t now = 0;
    // Few distinct values so keys collide on parts and the index runs at full load.
    auto rand_key = [&] {
      return key(uint32_t(rng() % 8), uint32_t(rng() % 8), uint16_t(rng() % 64), uint16_t(rng() % 4),
                 rng() % 2 ? kProtoUdp : kProtoIcmp);
    };
    for (int op = 0; op < 60000; op++) {
      const unsigned what = unsigned(rng() % 10);
      if (what < 6) {
        FlowKey k = rand_key();
        if (k.proto == kProtoIcmp) k.dport = 0;
        ConnTable::InsertResult r;
        Conn* c = t.insert(k, 0, kSnat + uint32_t(rng() % 2), now, &r);
        auto it = model.find(tup(k));
        if (it != model.end()) {
          ASSERT_EQ(r, ConnTable::InsertResult::existed);
        } else if (model.size() == cap) {
          ASSERT_EQ(r, ConnTable::InsertResult::table_full);
        } else if (r == ConnTable::InsertResult::created) {
          ASSERT_TRUE(t.port_slice().contains(c->snat_port));
          model[tup(k)] = c->expires;
        } else {
          ASSERT_EQ(r, ConnTable::InsertResult::no_port);
        }
      } else if (what < 7 && !model.empty()) {
        auto it = model.begin();
        std::advance(it, long(rng() % model.size()));
        auto [s, d, sp, dp, pr] = it->first;
        Conn* c = t.lookup(key(s, d, sp, dp, pr), FlowDir::orig);
        ASSERT_NE(c, nullptr);
        t.erase(*c);
        model.erase(it);
      } else if (what < 8) {
        now += rng() % (40 * kHz);
        t.expire(now, rng() % 50);
        // Expired entries may linger until the hand reaches them; live ones must stay.
        for (auto it = model.begin(); it != model.end();) {
          auto [s, d, sp, dp, pr] = it->first;
          Conn* c = t.lookup(key(s, d, sp, dp, pr), FlowDir::orig);
          if (c == nullptr) {
            ASSERT_LE(it->second, now) << "a live entry vanished";
            it = model.erase(it);
          } else {
            ++it;
          }
        }
      } else if (!model.empty()) {
        auto it = model.begin();
        std::advance(it, long(rng() % model.size()));
        auto [s, d, sp, dp, pr] = it->first;
        Conn* c = t.lookup(key(s, d, sp, dp, pr), FlowDir::orig);
        ASSERT_NE(c, nullptr);
        ASSERT_TRUE(t.track(*c, rng() % 2 ? FlowDir::orig : FlowDir::reply, 0, now));
        it->second = c->expires;
      }
      ASSERT_EQ(t.size(), model.size());
    }
    // Every entry is found both ways, and reply keys (remote, snat addr/port, proto) are unique.
    std::vector<Conn> all(cap);
    const size_t n = t.copy_out(all.data(), all.size());
    ASSERT_EQ(n, model.size());
    std::set<std::tuple<uint32_t, uint32_t, uint16_t, uint16_t, uint8_t>> replies;
    for (size_t i = 0; i < n; i++) {
      ASSERT_EQ(t.lookup(all[i].orig_key(), FlowDir::orig), t.lookup(all[i].reply_key(), FlowDir::reply));
      ASSERT_TRUE(replies.insert(tup(all[i].reply_key())).second);
    }
  }
}

TEST(ConnTable, SnapshotIsServedInBoundedSteps) {
  ConnTable t;
  ASSERT_TRUE(t.init(config(10000)));
  for (uint16_t i = 0; i < 3000; i++) ASSERT_NE(t.insert(key(1, 2, i, 4), 0, kSnat, 0), nullptr);
  std::vector<Conn> buf(5000);
  ConnSnapshot s;
  t.serve_snapshot(s, 0);  // nothing requested: nothing happens
  EXPECT_EQ(s.state.load(), ConnSnapshot::idle);
  s.buf = buf.data();
  s.max = buf.size();
  s.state.store(ConnSnapshot::requested, std::memory_order_release);
  unsigned calls = 0;
  while (s.state.load(std::memory_order_acquire) != ConnSnapshot::done) {
    t.serve_snapshot(s, 77, 1000);
    calls++;
  }
  EXPECT_EQ(calls, 10u);
  EXPECT_EQ(s.count, 3000u);
  EXPECT_EQ(s.total, 3000u);
  EXPECT_EQ(s.now, 77u);
  std::set<uint16_t> seen;
  for (size_t i = 0; i < s.count; i++) seen.insert(buf[i].sport);
  EXPECT_EQ(seen.size(), 3000u);
  // A smaller buffer: count is capped, total says how many there were.
  s.max = 10;
  s.state.store(ConnSnapshot::requested);
  while (s.state.load() != ConnSnapshot::done) t.serve_snapshot(s, 0);
  EXPECT_EQ(s.count, 10u);
  EXPECT_EQ(s.total, 3000u);
}

TEST(ConnTable, SnapshotWhileTheWorkerChurns) {
  // The worker thread inserts, tracks and expires; the control thread asks for snapshots.
  ConnTable t;
  ASSERT_TRUE(t.init(config(4096)));
  ConnSnapshot s;
  std::vector<Conn> buf(4096);
  std::atomic<bool> stop{false};
  std::thread worker([&] {
    std::mt19937_64 rng(3);
    uint64_t now = 0;
    while (!stop.load(std::memory_order_relaxed)) {
      for (int i = 0; i < 32; i++) t.insert(key(1, 2, uint16_t(rng()), 4), 0, kSnat, now);
      now += 50;
      t.expire(now, 64);
      t.serve_snapshot(s, now, 512);
    }
  });
  for (int round = 0; round < 20; round++) {
    s.buf = buf.data();
    s.max = buf.size();
    s.state.store(ConnSnapshot::requested, std::memory_order_release);
    while (s.state.load(std::memory_order_acquire) != ConnSnapshot::done) std::this_thread::yield();
    ASSERT_LE(s.count, buf.size());
    for (size_t i = 0; i < s.count; i++) {
      ASSERT_EQ(buf[i].src, 1u);
      ASSERT_EQ(buf[i].proto, kProtoUdp);
      ASSERT_NE(buf[i].state, ConnState::none);
    }
    s.state.store(ConnSnapshot::idle, std::memory_order_relaxed);
  }
  stop = true;
  worker.join();
}

TEST(ConnTable, InitRejectsBadConfigs) {
  ConnTable a, b, c, d;
  EXPECT_FALSE(a.init(config(0)));
  EXPECT_FALSE(b.init(config(10, 2, 2)));
  ConnTable::Config cfg = config(10);
  cfg.ticks_per_sec = 0;
  EXPECT_FALSE(c.init(cfg));
  EXPECT_TRUE(d.init(config(10)));
  EXPECT_FALSE(d.init(config(10)));  // once
}

// --- FragTracker ---

TEST(FragTracker, RemembersFindsAndAges) {
  FragTracker f;
  ASSERT_TRUE(f.init(64, 5 * kHz, 1));
  FragKey k;
  k.src = 1, k.dst = 2, k.id = 77, k.proto = kProtoUdp;
  uint32_t v = 0;
  EXPECT_FALSE(f.find(k, 0, &v));
  f.remember(k, 123, 0);
  ASSERT_TRUE(f.find(k, 5 * kHz - 1, &v));
  EXPECT_EQ(v, 123u);
  EXPECT_FALSE(f.find(k, 5 * kHz, &v));  // aged out
  FragKey other = k;
  other.id = 78;
  EXPECT_FALSE(f.find(other, 0, &v));
  f.remember(k, 456, 10);  // refresh and replace the value
  ASSERT_TRUE(f.find(k, 10, &v));
  EXPECT_EQ(v, 456u);
  f.forget(k);
  EXPECT_FALSE(f.find(k, 10, &v));
}

TEST(FragTracker, FullSetsReplaceTheOldest) {
  FragTracker f;
  ASSERT_TRUE(f.init(4, 1000 * kHz, 1));  // one set of 4 ways
  for (uint16_t i = 0; i < 5; i++) {
    FragKey k;
    k.id = i;
    f.remember(k, i, i);
  }
  uint32_t v;
  FragKey first;
  first.id = 0;
  EXPECT_FALSE(f.find(first, 10, &v));  // the oldest went
  for (uint16_t i = 1; i < 5; i++) {
    FragKey k;
    k.id = i;
    ASSERT_TRUE(f.find(k, 10, &v));
    EXPECT_EQ(v, i);
  }
}

}  // namespace
}  // namespace sluice::dp
