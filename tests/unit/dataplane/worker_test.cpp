// Golden-packet tests of the worker pipeline: frames go into a net_ring port's RX ring, the test
// calls Worker::poll_once() (it plays the lcore), and what the worker transmits, hands to the
// control thread or counts as a drop is checked byte by byte.
#include <gtest/gtest.h>
#include <rte_arp.h>
#include <rte_cycles.h>
#include <rte_eth_ring.h>
#include <rte_ethdev.h>
#include <sched.h>
#include <sodium.h>

#include <algorithm>
#include <memory>
#include <optional>
#include <sstream>

#include "controlplane/policy/compiled.h"
#include "dataplane/dataplane.h"
#include "dataplane/mbuf_meta.h"
#include "dataplane/nat.h"
#include "dataplane/packet.h"
#include "dataplane/wg/transport.h"
#include "dataplane/worker.h"
#include "tests/unit/dataplane/eal_env.h"
#include "tests/unit/policy/builder.h"

namespace sluice::dp {
namespace {

constexpr uint32_t kGwWan = 0xC0000202;     // 192.0.2.2
constexpr uint32_t kClient = 0xC000020A;    // 192.0.2.10
constexpr uint32_t kStranger = 0xC000020B;  // 192.0.2.11
constexpr uint32_t kGwLan = 0xC6336401;     // 198.51.100.1
constexpr uint32_t kGwVa = 0x64400001;      // 100.64.0.1
constexpr uint32_t kPeerVa = 0x64400002;    // 100.64.0.2
constexpr uint16_t kPort = 51820;
constexpr uint16_t kClientPort = 40000;
const MacAddr kClientMac{{0x02, 0xc1, 0, 0, 0, 0x0a}};

using Bytes = std::vector<uint8_t>;

Bytes eth(const uint8_t* dst, const MacAddr& src, uint16_t type, const Bytes& payload) {
  Bytes b(14 + payload.size());
  memcpy(b.data(), dst, 6);
  memcpy(b.data() + 6, src.b, 6);
  b[12] = uint8_t(type >> 8);
  b[13] = uint8_t(type);
  if (!payload.empty()) memcpy(b.data() + 14, payload.data(), payload.size());
  return b;
}

Bytes ipv4(uint32_t src, uint32_t dst, uint8_t proto, const Bytes& payload) {
  Bytes b(20 + payload.size());
  auto* ip = reinterpret_cast<rte_ipv4_hdr*>(b.data());
  ip->version_ihl = RTE_IPV4_VHL_DEF;
  ip->total_length = rte_cpu_to_be_16(uint16_t(b.size()));
  ip->packet_id = rte_cpu_to_be_16(0x1234);
  ip->time_to_live = 64;
  ip->next_proto_id = proto;
  ip->src_addr = rte_cpu_to_be_32(src);
  ip->dst_addr = rte_cpu_to_be_32(dst);
  ip->hdr_checksum = rte_ipv4_cksum(ip);
  memcpy(b.data() + 20, payload.data(), payload.size());
  return b;
}

Bytes icmp_echo(uint16_t id, uint16_t seq, size_t data_len) {
  Bytes b(8 + data_len);
  b[0] = RTE_IP_ICMP_ECHO_REQUEST;
  b[4] = uint8_t(id >> 8);
  b[5] = uint8_t(id);
  b[6] = uint8_t(seq >> 8);
  b[7] = uint8_t(seq);
  for (size_t i = 0; i < data_len; ++i) b[8 + i] = uint8_t(i);
  uint16_t c = uint16_t(~rte_raw_cksum(b.data(), b.size()));
  memcpy(&b[2], &c, 2);
  return b;
}

Bytes udp(uint32_t src, uint16_t sport, uint32_t dst, uint16_t dport, const Bytes& payload) {
  Bytes u(8 + payload.size());
  auto* h = reinterpret_cast<rte_udp_hdr*>(u.data());
  h->src_port = rte_cpu_to_be_16(sport);
  h->dst_port = rte_cpu_to_be_16(dport);
  h->dgram_len = rte_cpu_to_be_16(uint16_t(u.size()));
  memcpy(u.data() + 8, payload.data(), payload.size());
  Bytes ip = ipv4(src, dst, IPPROTO_UDP, u);
  auto* iph = reinterpret_cast<rte_ipv4_hdr*>(ip.data());
  auto* uh = reinterpret_cast<rte_udp_hdr*>(ip.data() + 20);
  uh->dgram_cksum = rte_ipv4_udptcp_cksum(iph, uh);
  return ip;
}

// A broadcast ARP request from the client's MAC: who has `target`? tell `sender`.
Bytes arp_request(uint32_t sender, uint32_t target) {
  Bytes arp(sizeof(rte_arp_hdr));
  auto* a = reinterpret_cast<rte_arp_hdr*>(arp.data());
  a->arp_hardware = RTE_BE16(RTE_ARP_HRD_ETHER);
  a->arp_protocol = RTE_BE16(RTE_ETHER_TYPE_IPV4);
  a->arp_hlen = 6;
  a->arp_plen = 4;
  a->arp_opcode = RTE_BE16(RTE_ARP_OP_REQUEST);
  memcpy(a->arp_data.arp_sha.addr_bytes, kClientMac.b, 6);
  a->arp_data.arp_sip = rte_cpu_to_be_32(sender);
  a->arp_data.arp_tip = rte_cpu_to_be_32(target);
  const uint8_t bcast[6] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
  return eth(bcast, kClientMac, RTE_ETHER_TYPE_ARP, arp);
}

bool icmp_checksum_ok(const uint8_t* icmp, size_t len) { return rte_raw_cksum(icmp, len) == 0xffff; }

// Recomputes the UDP checksum of an IPv4 packet from scratch and compares.
bool udp_checksum_ok(const uint8_t* ip_packet) {
  Bytes copy(ip_packet, ip_packet + rte_be_to_cpu_16(reinterpret_cast<const rte_ipv4_hdr*>(ip_packet)->total_length));
  auto* ip = reinterpret_cast<rte_ipv4_hdr*>(copy.data());
  auto* uh = reinterpret_cast<rte_udp_hdr*>(copy.data() + 20);
  const uint16_t stored = uh->dgram_cksum;
  uh->dgram_cksum = 0;
  return stored != 0 && stored == rte_ipv4_udptcp_cksum(ip, uh);
}

class WorkerTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    test::ensure_eal();
    for (int i = 0; i < 2; ++i) {
      std::string n = "wt_rx" + std::to_string(i);
      rx_[i] = rte_ring_create(n.c_str(), 256, 0, RING_F_SP_ENQ | RING_F_SC_DEQ);
      n = "wt_tx" + std::to_string(i);
      tx_[i] = rte_ring_create(n.c_str(), 256, 0, RING_F_SP_ENQ | RING_F_SC_DEQ);
      n = "wt_port" + std::to_string(i);
      int id = rte_eth_from_rings(n.c_str(), &rx_[i], 1, &tx_[i], 1, 0);
      ASSERT_GE(id, 0);
      char name[RTE_ETH_NAME_MAX_LEN];
      ASSERT_EQ(0, rte_eth_dev_get_name_by_port(uint16_t(id), name));
      port_name_[i] = name;  // the ring PMD prefixes the name we gave
    }
    Settings s;
    s.workers = 1;
    s.virtual_address = kGwVa;
    s.listen_port = kPort;
    s.rx_queue_size = 256;
    s.tx_queue_size = 256;
    s.mbuf_pool_size = 2047;
    s.mbuf_data_room = 4096;  // room for a reassembled 3000-byte datagram
    s.max_peers = 16;
    s.aead = crypto::AeadBackend::openssl;
    s.ports = {{"wan", PortRole::underlay, port_name_[0], kGwWan, 24, 0},
               {"lan", PortRole::lan, port_name_[1], kGwLan, 24, 0}};
    dp_ = new Dataplane();
    std::string err;
    ASSERT_TRUE(dp_->init(s, &err)) << err;
    randombytes_buf(send_key_, sizeof send_key_);
    randombytes_buf(recv_key_, sizeof recv_key_);
  }
  static void TearDownTestSuite() {
    delete dp_;
    dp_ = nullptr;
  }

  void SetUp() override {
    drain_all();
    learn(0, kClient, kClientMac);  // the client's MAC is known, so replies leave without ARP
  }

  // A neighbour on `port` resolved, as if it had answered ARP.
  static void learn(uint16_t port, uint32_t ip, const MacAddr& mac) {
    NeighTable::Io io;
    io.send_request = [](uint16_t, uint32_t, const MacAddr*) {};
    io.drop = [](rte_mbuf* m, bool) { rte_pktmbuf_free(m); };
    io.send_held = [](rte_mbuf* m, const MacAddr&) { rte_pktmbuf_free(m); };
    dp_->neigh.learn(port, ip, mac, true, rte_rdtsc(), io);
  }

  // Peer 0 "laptop" (tag users) allowed anything on the office LAN; the caller publishes it in
  // dp_->policy and stores nullptr before it goes.
  static std::unique_ptr<policy::CompiledPolicy> office_policy() {
    namespace pt = policy::test;
    config::Config cfg = pt::base_config(false);
    pt::add_peer(cfg, "laptop", {"users"});
    pt::add_policy(cfg, "office", {"users"}, {"Menlo Park Office"}, {}, {"allow any"});
    std::string err;
    auto pol = policy::CompiledPolicy::build(cfg, {}, 1, &err);
    EXPECT_NE(nullptr, pol) << err;
    return pol;
  }
  void TearDown() override {
    PeerSlot& s = dp_->peers.slot(0);
    dp_->peers.retire_keypair(s.current.exchange(nullptr));
    dp_->peers.retire_keypair(s.next.exchange(nullptr));
    dp_->rcu.synchronize();
    drain_all();
  }

  static void drain_all() {
    void* m;
    for (auto* r : {tx_[0], tx_[1], rx_[0], rx_[1], dp_->to_cp_packets})
      while (r != nullptr && rte_ring_dequeue(r, &m) == 0) rte_pktmbuf_free(static_cast<rte_mbuf*>(m));
    CpEvent e;
    while (rte_ring_dequeue_elem(dp_->to_cp_events, &e, sizeof e) == 0) {
    }
  }

  Worker& worker() { return *dp_->workers[0]; }
  uint64_t drops(Drop d) { return worker().drops[unsigned(d)].get(); }

  void inject(int port, const Bytes& frame) {
    rte_mbuf* m = test::mbuf_from(dp_->pool, frame);
    ASSERT_EQ(0, rte_ring_enqueue(rx_[port], m));
    worker().poll_once();
  }
  std::optional<Bytes> sent(int port) {
    void* m;
    if (rte_ring_dequeue(tx_[port], &m) != 0) return std::nullopt;
    Bytes b = test::bytes_of(static_cast<rte_mbuf*>(m));
    rte_pktmbuf_free(static_cast<rte_mbuf*>(m));
    return b;
  }
  rte_mbuf* to_control() {
    void* m;
    return rte_ring_dequeue(dp_->to_cp_packets, &m) == 0 ? static_cast<rte_mbuf*>(m) : nullptr;
  }

  const uint8_t* port_mac(int p) { return dp_->ports[p].mac.b; }

  // A session with peer 0 as the control thread would install it. `as_next`: a responder
  // keypair not yet confirmed by the initiator's first message.
  Keypair* install_peer(bool as_next = false, bool initiator = true) {
    PeerSlot& s = dp_->peers.slot(0);
    s.virtual_address.store(kPeerVa);
    s.owner.store(0);
    s.endpoint.store(pack_endpoint(kClient, kClientPort));
    s.active.store(true);
    Keypair* kp = PeerTable::new_keypair();
    memcpy(kp->send_key, send_key_, 32);
    memcpy(kp->recv_key, recv_key_, 32);
    kp->local_index = 0x11223344;
    kp->remote_index = 0x55667788;
    kp->peer = 0;
    kp->initiator = initiator;
    kp->birth_tsc = rte_rdtsc();
    EXPECT_TRUE(dp_->peers.add_index(kp));
    (as_next ? s.next : s.current).store(kp);
    return kp;
  }

  // What the peer would send: a transport message sealed with our receive key.
  Bytes tunnel_frame(const Bytes& inner, uint64_t counter, uint16_t sport = kClientPort,
                     uint32_t index = 0x11223344) {
    crypto::Aead aead(crypto::AeadBackend::sodium);  // the other backend, to cross-check
    Bytes msg(wg::transport_sealed_len(inner.size(), 1420));
    EXPECT_EQ(msg.size(), wg::transport_seal(aead, recv_key_, index, counter, inner.data(), inner.size(), 1420,
                                             msg.data()));
    return eth(port_mac(0), kClientMac, RTE_ETHER_TYPE_IPV4, udp(kClient, sport, kGwWan, kPort, msg));
  }

  // Opens a transport message the gateway sent (its UDP payload) with the peer's view of the keys.
  Bytes open_sent(const Bytes& frame, uint32_t* receiver, uint64_t* counter) {
    const uint8_t* msg = frame.data() + 14 + 20 + 8;
    size_t len = frame.size() - 14 - 20 - 8;
    EXPECT_TRUE(wg::transport_parse(msg, len, receiver, counter));
    Bytes out(len);
    crypto::Aead aead(crypto::AeadBackend::sodium);
    ssize_t n = wg::transport_open(aead, send_key_, msg, len, out.data());
    EXPECT_GE(n, 0);
    out.resize(n < 0 ? 0 : size_t(n));
    return out;
  }

  static inline Dataplane* dp_ = nullptr;
  static inline std::string port_name_[2];
  static inline rte_ring* rx_[2];
  static inline rte_ring* tx_[2];
  static inline uint8_t send_key_[32];
  static inline uint8_t recv_key_[32];
};

TEST_F(WorkerTest, AnswersArpForItsAddressAndLearnsTheAsker) {
  inject(0, arp_request(kStranger, kGwWan));

  auto out = sent(0);
  ASSERT_TRUE(out);
  ASSERT_GE(out->size(), 14 + sizeof(rte_arp_hdr));
  auto* r = reinterpret_cast<const rte_arp_hdr*>(out->data() + 14);
  EXPECT_EQ(RTE_BE16(RTE_ARP_OP_REPLY), r->arp_opcode);
  EXPECT_EQ(0, memcmp(r->arp_data.arp_sha.addr_bytes, port_mac(0), 6));
  EXPECT_EQ(rte_cpu_to_be_32(kGwWan), r->arp_data.arp_sip);
  EXPECT_EQ(rte_cpu_to_be_32(kStranger), r->arp_data.arp_tip);
  EXPECT_EQ(0, memcmp(out->data(), kClientMac.b, 6));  // unicast back to the asker

  CpEvent e;
  ASSERT_EQ(0, rte_ring_dequeue_elem(dp_->to_cp_events, &e, sizeof e));
  EXPECT_EQ(CpEvent::neigh_learn_create, e.type);
  EXPECT_EQ(kStranger, e.ip);
  EXPECT_EQ(0, memcmp(e.mac, kClientMac.b, 6));
}

TEST_F(WorkerTest, IgnoresArpForOtherAddresses) {
  uint64_t before = drops(Drop::arp_not_for_us);
  inject(0, arp_request(kStranger, 0xC0000263));
  EXPECT_FALSE(sent(0));
  EXPECT_EQ(before + 1, drops(Drop::arp_not_for_us));
}

TEST_F(WorkerTest, AnswersPingOnPortAddressWithValidChecksums) {
  Bytes req = icmp_echo(0x4242, 7, 56);
  inject(0, eth(port_mac(0), kClientMac, RTE_ETHER_TYPE_IPV4, ipv4(kClient, kGwWan, IPPROTO_ICMP, req)));
  auto out = sent(0);
  ASSERT_TRUE(out);
  ASSERT_EQ(14u + 20 + 64, out->size());
  EXPECT_EQ(0, memcmp(out->data(), kClientMac.b, 6));
  auto* ip = reinterpret_cast<const rte_ipv4_hdr*>(out->data() + 14);
  EXPECT_EQ(0xffff, rte_raw_cksum(ip, 20));
  EXPECT_EQ(kGwWan, ip_src(ip));
  EXPECT_EQ(kClient, ip_dst(ip));
  const uint8_t* icmp = out->data() + 34;
  EXPECT_EQ(RTE_IP_ICMP_ECHO_REPLY, icmp[0]);
  EXPECT_TRUE(icmp_checksum_ok(icmp, 64));
  EXPECT_EQ(0, memcmp(icmp + 4, req.data() + 4, 60));  // id, seq and data unchanged
}

TEST_F(WorkerTest, UnresolvedNextHopGoesToControlThread) {
  inject(0, eth(port_mac(0), kClientMac, RTE_ETHER_TYPE_IPV4,
                ipv4(kStranger, kGwWan, IPPROTO_ICMP, icmp_echo(1, 1, 8))));
  EXPECT_FALSE(sent(0));
  rte_mbuf* m = to_control();
  ASSERT_NE(nullptr, m);
  EXPECT_EQ(CpKind::neigh_wait, meta(m)->cp_kind);
  EXPECT_EQ(kStranger, meta(m)->nexthop);
  EXPECT_EQ(0, meta(m)->port);
  rte_pktmbuf_free(m);
}

TEST_F(WorkerTest, DropsMalformedAndForeignFrames) {
  uint64_t bad_ck = drops(Drop::ip_bad_checksum), not_us = drops(Drop::eth_not_for_us),
           short_eth = drops(Drop::eth_malformed), nolisten = drops(Drop::no_listener),
           no_conn = drops(Drop::ct_no_conn);
  Bytes ip = ipv4(kClient, kGwWan, IPPROTO_ICMP, icmp_echo(1, 1, 8));
  ip[10] ^= 0xff;
  inject(0, eth(port_mac(0), kClientMac, RTE_ETHER_TYPE_IPV4, ip));
  const uint8_t other[6] = {0x02, 9, 9, 9, 9, 9};
  inject(0, eth(other, kClientMac, RTE_ETHER_TYPE_IPV4, ipv4(kClient, kGwWan, IPPROTO_ICMP, icmp_echo(1, 1, 8))));
  inject(0, Bytes{1, 2, 3});
  inject(0, eth(port_mac(0), kClientMac, RTE_ETHER_TYPE_IPV4, udp(kClient, 1, kGwWan, 53, Bytes(10))));
  // Unsolicited traffic to a SNAT port: devices behind the gateway never open flows.
  inject(0, eth(port_mac(0), kClientMac, RTE_ETHER_TYPE_IPV4, udp(kClient, 1, kGwWan, 9999, Bytes(10))));
  EXPECT_FALSE(sent(0));
  EXPECT_EQ(no_conn + 1, drops(Drop::ct_no_conn));
  EXPECT_EQ(bad_ck + 1, drops(Drop::ip_bad_checksum));
  EXPECT_EQ(not_us + 1, drops(Drop::eth_not_for_us));
  EXPECT_EQ(short_eth + 1, drops(Drop::eth_malformed));
  EXPECT_EQ(nolisten + 1, drops(Drop::no_listener));
}

TEST_F(WorkerTest, DatagramCutShortByTheFrameIsCountedAsTruncated) {
  // What net_af_packet hands over when the kernel reassembled a datagram larger than framesz=.
  Bytes ip = ipv4(0xC633640A, kGwLan, IPPROTO_UDP, Bytes(3000));
  ip.resize(1900);
  const uint64_t cut = drops(Drop::ip_truncated), bad = drops(Drop::ip_malformed);
  inject(1, eth(port_mac(1), kClientMac, RTE_ETHER_TYPE_IPV4, ip));
  EXPECT_EQ(cut + 1, drops(Drop::ip_truncated));
  EXPECT_EQ(bad, drops(Drop::ip_malformed));
  ip[0] = 0x65;  // not IPv4: malformed
  inject(1, eth(port_mac(1), kClientMac, RTE_ETHER_TYPE_IPV4, ip));
  EXPECT_EQ(bad + 1, drops(Drop::ip_malformed));
}

TEST_F(WorkerTest, PingsTheVirtualAddressThroughTheTunnel) {
  install_peer();
  Bytes inner = ipv4(kPeerVa, kGwVa, IPPROTO_ICMP, icmp_echo(9, 1, 56));
  inject(0, tunnel_frame(inner, 0));
  auto out = sent(0);
  ASSERT_TRUE(out);
  auto* ip = reinterpret_cast<const rte_ipv4_hdr*>(out->data() + 14);
  auto* uh = reinterpret_cast<const rte_udp_hdr*>(out->data() + 34);
  EXPECT_EQ(kGwWan, ip_src(ip));
  EXPECT_EQ(kClient, ip_dst(ip));
  EXPECT_EQ(kPort, rte_be_to_cpu_16(uh->src_port));
  EXPECT_EQ(kClientPort, rte_be_to_cpu_16(uh->dst_port));
  EXPECT_EQ(0xffff, rte_raw_cksum(ip, 20));
  EXPECT_TRUE(udp_checksum_ok(out->data() + 14));

  uint32_t receiver = 0;
  uint64_t counter = 99;
  Bytes reply = open_sent(*out, &receiver, &counter);
  EXPECT_EQ(0x55667788u, receiver);
  EXPECT_EQ(0u, counter);
  ASSERT_EQ(96u, reply.size());  // 84 bytes padded to 16
  auto* rip = reinterpret_cast<const rte_ipv4_hdr*>(reply.data());
  EXPECT_EQ(kGwVa, ip_src(rip));
  EXPECT_EQ(kPeerVa, ip_dst(rip));
  EXPECT_EQ(RTE_IP_ICMP_ECHO_REPLY, reply[20]);
  EXPECT_TRUE(icmp_checksum_ok(reply.data() + 20, 64));

  const PeerSlot& s = dp_->peers.slot(0);
  EXPECT_GE(s.rx_packets.get(), 1u);
  EXPECT_GE(s.tx_packets.get(), 1u);
}

TEST_F(WorkerTest, ReplayedAndTamperedMessagesAreDropped) {
  install_peer();
  Bytes inner = ipv4(kPeerVa, kGwVa, IPPROTO_ICMP, icmp_echo(9, 1, 8));
  Bytes f = tunnel_frame(inner, 5);
  Bytes tampered = f;
  tampered.back() ^= 1;
  uint64_t replay = drops(Drop::wg_replay), bad = drops(Drop::wg_decrypt_failed);
  inject(0, tampered);
  EXPECT_FALSE(sent(0));
  EXPECT_EQ(bad + 1, drops(Drop::wg_decrypt_failed));
  inject(0, f);  // a failed forgery must not burn the counter
  EXPECT_TRUE(sent(0));
  inject(0, f);
  EXPECT_FALSE(sent(0));
  EXPECT_EQ(replay + 1, drops(Drop::wg_replay));
}

TEST_F(WorkerTest, SpoofedInnerSourceIsDropped) {
  install_peer();
  uint64_t spoof = drops(Drop::wg_inner_source);
  inject(0, tunnel_frame(ipv4(0x64400009, kGwVa, IPPROTO_ICMP, icmp_echo(1, 1, 8)), 0));
  EXPECT_FALSE(sent(0));
  EXPECT_EQ(spoof + 1, drops(Drop::wg_inner_source));
  EXPECT_GE(dp_->peers.slot(0).inner_source_drops.get(), 1u);
}

TEST_F(WorkerTest, KeepaliveIsConsumed) {
  install_peer();
  uint64_t ka = worker().keepalives_rx.get();
  inject(0, tunnel_frame({}, 0));
  EXPECT_FALSE(sent(0));
  EXPECT_EQ(ka + 1, worker().keepalives_rx.get());
}

TEST_F(WorkerTest, EndpointFollowsTheLastAuthenticatedPacket) {
  install_peer();
  Bytes inner = ipv4(kPeerVa, kGwVa, IPPROTO_ICMP, icmp_echo(9, 1, 8));
  inject(0, tunnel_frame(inner, 0, 40001));
  auto out = sent(0);
  ASSERT_TRUE(out);
  EXPECT_EQ(40001, rte_be_to_cpu_16(reinterpret_cast<const rte_udp_hdr*>(out->data() + 34)->dst_port));
  EXPECT_EQ(pack_endpoint(kClient, 40001), dp_->peers.slot(0).endpoint.load());
  // A forged packet from elsewhere does not move it.
  Bytes forged = tunnel_frame(inner, 1, 40002);
  forged.back() ^= 1;
  inject(0, forged);
  EXPECT_EQ(pack_endpoint(kClient, 40001), dp_->peers.slot(0).endpoint.load());
}

TEST_F(WorkerTest, ResponderKeypairIsConfirmedByFirstMessage) {
  Keypair* kp = install_peer(/*as_next=*/true, /*initiator=*/false);
  inject(0, tunnel_frame(ipv4(kPeerVa, kGwVa, IPPROTO_ICMP, icmp_echo(1, 1, 8)), 0));
  EXPECT_TRUE(kp->received_data.load());
  EXPECT_TRUE(sent(0));  // the reply already uses the confirmed keypair
  CpEvent e;
  ASSERT_EQ(0, rte_ring_dequeue_elem(dp_->to_cp_events, &e, sizeof e));
  EXPECT_EQ(CpEvent::keypair_confirmed, e.type);
  EXPECT_EQ(kp->local_index, e.ip);
}

TEST_F(WorkerTest, HandshakesGoToControlThreadAndGarbageIsCounted) {
  uint64_t malformed = drops(Drop::wg_malformed), unknown = drops(Drop::wg_unknown_index);
  Bytes init(wg::kInitiationLen);
  init[0] = 1;
  inject(0, eth(port_mac(0), kClientMac, RTE_ETHER_TYPE_IPV4, udp(kClient, 5555, kGwWan, kPort, init)));
  rte_mbuf* m = to_control();
  ASSERT_NE(nullptr, m);
  EXPECT_EQ(CpKind::handshake, meta(m)->cp_kind);
  EXPECT_EQ(kClient, meta(m)->src_addr);
  EXPECT_EQ(5555, meta(m)->src_port);
  EXPECT_EQ(wg::kInitiationLen, m->data_len);
  rte_pktmbuf_free(m);

  Bytes truncated(init.begin(), init.begin() + 40);
  inject(0, eth(port_mac(0), kClientMac, RTE_ETHER_TYPE_IPV4, udp(kClient, 5555, kGwWan, kPort, truncated)));
  inject(0, eth(port_mac(0), kClientMac, RTE_ETHER_TYPE_IPV4, udp(kClient, 5555, kGwWan, kPort, Bytes{7, 7, 7})));
  Bytes unknown_idx(48);
  unknown_idx[0] = 4;
  unknown_idx[4] = 0x99;
  inject(0, eth(port_mac(0), kClientMac, RTE_ETHER_TYPE_IPV4, udp(kClient, 5555, kGwWan, kPort, unknown_idx)));
  EXPECT_EQ(nullptr, to_control());
  EXPECT_EQ(malformed + 2, drops(Drop::wg_malformed));
  EXPECT_EQ(unknown + 1, drops(Drop::wg_unknown_index));
}

TEST_F(WorkerTest, NoKeypairStagesPacketOnControlThread) {
  PeerSlot& s = dp_->peers.slot(0);
  s.virtual_address.store(kPeerVa);
  s.owner.store(0);
  s.active.store(true);
  rte_mbuf* m = test::mbuf_from(dp_->pool, ipv4(kGwVa, kPeerVa, IPPROTO_ICMP, icmp_echo(1, 1, 8)));
  worker().wg_output(0, &m, 1);
  rte_mbuf* c = to_control();
  ASSERT_NE(nullptr, c);
  EXPECT_EQ(CpKind::peer_wait, meta(c)->cp_kind);
  EXPECT_EQ(0u, meta(c)->peer);
  rte_pktmbuf_free(c);
}

// A peer the control thread removed: its slot is inactive while its keypairs wait for their
// grace period. Packets from it and for it are dropped and counted, never forwarded or staged.
TEST_F(WorkerTest, RemovedPeerPacketsAreDroppedAndCounted) {
  install_peer();
  PeerSlot& s = dp_->peers.slot(0);
  s.active.store(false);
  const uint64_t removed0 = drops(Drop::peer_removed);
  const uint64_t rx0 = s.rx_packets.get();
  inject(0, tunnel_frame(ipv4(kPeerVa, kGwVa, IPPROTO_ICMP, icmp_echo(9, 1, 56)), 0));
  EXPECT_FALSE(sent(0));
  EXPECT_EQ(removed0 + 1, drops(Drop::peer_removed));
  EXPECT_EQ(rx0, s.rx_packets.get()) << "not even decrypted";

  rte_mbuf* m = test::mbuf_from(dp_->pool, ipv4(kGwVa, kPeerVa, IPPROTO_ICMP, icmp_echo(1, 1, 8)));
  worker().wg_output(0, &m, 1);
  EXPECT_EQ(nullptr, to_control()) << "nothing staged for a removed peer";
  EXPECT_FALSE(sent(0));
  EXPECT_EQ(removed0 + 2, drops(Drop::peer_removed));
  s.active.store(true);
}

TEST_F(WorkerTest, LargeDatagramsToAPeerAreFragmentedForTheTunnel) {
  install_peer();
  // A LAN host's 3000-byte echo reply as the kernel reassembled it for AF_PACKET, after NAT.
  Bytes reply = icmp_echo(9, 1, 3000);
  reply[0] = RTE_IP_ICMP_ECHO_REPLY;
  reply[2] = reply[3] = 0;
  const uint16_t c = uint16_t(~rte_raw_cksum(reply.data(), reply.size()));
  memcpy(&reply[2], &c, 2);
  const Bytes whole = ipv4(0xC633640A, kPeerVa, IPPROTO_ICMP, reply);
  uint64_t frags0 = worker().fragments_out.get();
  worker().now_tsc = rte_rdtsc();  // as poll_once would: the keypair is fresh
  rte_mbuf* m = test::mbuf_from(dp_->pool, whole);
  worker().wg_output(0, &m, 1);
  worker().tx_flush();
  Bytes payload;
  unsigned n = 0;
  bool more = true;
  while (auto out = sent(0)) {
    uint32_t receiver = 0;
    uint64_t counter = 0;
    Bytes inner = open_sent(*out, &receiver, &counter);
    ASSERT_GE(inner.size(), 20u);
    auto* ip = reinterpret_cast<const rte_ipv4_hdr*>(inner.data());
    const uint16_t tl = rte_be_to_cpu_16(ip->total_length);
    EXPECT_LE(tl, 1420);
    EXPECT_EQ(0xffff, rte_raw_cksum(ip, 20));
    const uint16_t field = rte_be_to_cpu_16(ip->fragment_offset);
    EXPECT_EQ(size_t(field & 0x1fff) * 8, payload.size());
    more = (field & 0x2000) != 0;
    payload.insert(payload.end(), inner.begin() + 20, inner.begin() + tl);
    ++n;
  }
  EXPECT_EQ(3u, n);
  EXPECT_FALSE(more);
  EXPECT_EQ(Bytes(whole.begin() + 20, whole.end()), payload);
  EXPECT_EQ(frags0 + 3, worker().fragments_out.get());

  // With DF set it cannot be split (nat_input answers those with frag needed): dropped.
  Bytes df = whole;
  auto* ip = reinterpret_cast<rte_ipv4_hdr*>(df.data());
  ip->fragment_offset = RTE_BE16(RTE_IPV4_HDR_DF_FLAG);
  ip->hdr_checksum = 0;
  ip->hdr_checksum = rte_ipv4_cksum(ip);
  const uint64_t too_big = drops(Drop::wg_too_big);
  m = test::mbuf_from(dp_->pool, df);
  worker().wg_output(0, &m, 1);
  worker().tx_flush();
  EXPECT_FALSE(sent(0));
  EXPECT_EQ(too_big + 1, drops(Drop::wg_too_big));
}

// Fragments both ways through SNAT: a peer's 3000-byte ping arrives as three tunnel messages
// in one burst (the later fragments follow the first one's connection), the LAN host's reply
// comes back in 1500-byte fragments that are matched to the connection by their first one and
// re-fragmented for the tunnel; reassembled, each side sees the other's datagram.
TEST_F(WorkerTest, FragmentsFollowTheirFirstBothWays) {
  auto pol = office_policy();
  ASSERT_NE(nullptr, pol);
  dp_->policy.store(pol.get());
  constexpr uint32_t kLanHost = 0xC633640A;  // 198.51.100.10
  const MacAddr lan_mac{{0x02, 0x1a, 0, 0, 0, 0x0a}};
  learn(1, kLanHost, lan_mac);
  install_peer();
  const uint64_t no_first = drops(Drop::frag_no_first);

  // Peer -> LAN: three fragments, one burst.
  const Bytes request = ipv4(kPeerVa, kLanHost, IPPROTO_ICMP, icmp_echo(9, 1, 3000));
  const unsigned n_req = ip_fragment_count(request.data(), uint32_t(request.size()), 1420);
  ASSERT_EQ(3u, n_req);
  for (unsigned i = 0; i < n_req; ++i) {
    Bytes frag(1420);
    frag.resize(ip_fragment_build(request.data(), uint32_t(request.size()), 1420, i, frag.data(), 1420));
    ASSERT_EQ(0, rte_ring_enqueue(rx_[0], test::mbuf_from(dp_->pool, tunnel_frame(frag, i))));
  }
  worker().poll_once();
  Bytes out_payload(request.size() - 20);
  uint16_t snat_id = 0;
  unsigned n_out = 0;
  while (auto f = sent(1)) {
    ++n_out;
    auto* ip = reinterpret_cast<const rte_ipv4_hdr*>(f->data() + 14);
    EXPECT_EQ(kGwLan, ip_src(ip));
    EXPECT_EQ(kLanHost, ip_dst(ip));
    EXPECT_EQ(0xffff, rte_raw_cksum(ip, 20));
    const size_t off = size_t(rte_be_to_cpu_16(ip->fragment_offset) & 0x1fff) * 8;
    const size_t len = rte_be_to_cpu_16(ip->total_length) - 20u;
    ASSERT_LE(off + len, out_payload.size());
    memcpy(out_payload.data() + off, f->data() + 34, len);
    if (off == 0) snat_id = uint16_t(f->data()[38] << 8 | f->data()[39]);
  }
  ASSERT_EQ(3u, n_out);
  EXPECT_EQ(no_first, drops(Drop::frag_no_first));
  EXPECT_TRUE(icmp_checksum_ok(out_payload.data(), out_payload.size()));  // SNAT kept it whole
  EXPECT_TRUE(std::equal(out_payload.begin() + 8, out_payload.end(), request.begin() + 28));

  // LAN -> peer: the reply to the SNAT address, in 1500-byte fragments, one burst.
  Bytes echo_reply = out_payload;
  echo_reply[0] = RTE_IP_ICMP_ECHO_REPLY;
  echo_reply[2] = echo_reply[3] = 0;
  const uint16_t c = uint16_t(~rte_raw_cksum(echo_reply.data(), echo_reply.size()));
  memcpy(&echo_reply[2], &c, 2);
  const Bytes reply = ipv4(kLanHost, kGwLan, IPPROTO_ICMP, echo_reply);
  const unsigned n_rep = ip_fragment_count(reply.data(), uint32_t(reply.size()), 1500);
  ASSERT_EQ(3u, n_rep);
  for (unsigned i = 0; i < n_rep; ++i) {
    Bytes frag(1500);
    frag.resize(ip_fragment_build(reply.data(), uint32_t(reply.size()), 1500, i, frag.data(), 1500));
    ASSERT_EQ(0, rte_ring_enqueue(rx_[1], test::mbuf_from(dp_->pool, eth(port_mac(1), lan_mac, RTE_ETHER_TYPE_IPV4, frag))));
  }
  worker().poll_once();
  Bytes in_payload(reply.size() - 20);
  unsigned n_in = 0;
  while (auto f = sent(0)) {
    ++n_in;
    uint32_t receiver;
    uint64_t counter;
    const Bytes inner = open_sent(*f, &receiver, &counter);
    ASSERT_GE(inner.size(), 20u);
    auto* ip = reinterpret_cast<const rte_ipv4_hdr*>(inner.data());
    EXPECT_EQ(kLanHost, ip_src(ip));
    EXPECT_EQ(kPeerVa, ip_dst(ip));
    EXPECT_EQ(0xffff, rte_raw_cksum(ip, 20));
    const size_t tl = rte_be_to_cpu_16(ip->total_length);
    EXPECT_LE(tl, 1420u);
    const size_t off = size_t(rte_be_to_cpu_16(ip->fragment_offset) & 0x1fff) * 8;
    ASSERT_LE(off + tl - 20, in_payload.size());
    memcpy(in_payload.data() + off, inner.data() + 20, tl - 20);
  }
  EXPECT_EQ(5u, n_in);  // 1500 + 1500 + 68 -> 2 + 2 + 1 for the tunnel's 1420
  EXPECT_EQ(no_first, drops(Drop::frag_no_first));
  EXPECT_EQ(9, in_payload[4] << 8 | in_payload[5]);  // the peer's echo identifier again
  EXPECT_TRUE(icmp_checksum_ok(in_payload.data(), in_payload.size()));
  EXPECT_TRUE(std::equal(in_payload.begin() + 8, in_payload.end(), request.begin() + 28));
  EXPECT_NE(0, snat_id);

  dp_->policy.store(nullptr);
}

// A LAN port with a smaller MTU than the tunnel: DF packets get frag-needed from the gateway's
// virtual address with the port's MTU, the others leave in fragments.
TEST_F(WorkerTest, LanPortMtuBelowTheTunnelsFragmentsOrAnswersFragNeeded) {
  auto pol = office_policy();
  ASSERT_NE(nullptr, pol);
  dp_->policy.store(pol.get());
  constexpr uint32_t kLanHost = 0xC633640A;  // 198.51.100.10
  learn(1, kLanHost, MacAddr{{0x02, 0x1a, 0, 0, 0, 0x0a}});
  install_peer();
  const uint16_t saved = dp_->ports[1].l3_mtu;
  dp_->ports[1].l3_mtu = 1400;

  Bytes big = ipv4(kPeerVa, kLanHost, IPPROTO_ICMP, icmp_echo(9, 1, 1392));  // 1420 bytes
  inject(0, tunnel_frame(big, 0));
  std::vector<Bytes> out;
  while (auto f = sent(1)) out.push_back(*f);
  ASSERT_EQ(2u, out.size());
  EXPECT_EQ(14u + 1396, out[0].size());  // 20 + 1376 (a multiple of 8)
  EXPECT_EQ(14u + 20 + 1400 - 1376, out[1].size());

  auto* ip = reinterpret_cast<rte_ipv4_hdr*>(big.data());
  ip->fragment_offset = RTE_BE16(RTE_IPV4_HDR_DF_FLAG);
  ip->hdr_checksum = 0;
  ip->hdr_checksum = rte_ipv4_cksum(ip);
  const uint64_t fn = drops(Drop::frag_needed);
  inject(0, tunnel_frame(big, 1));
  EXPECT_FALSE(sent(1));
  EXPECT_EQ(fn + 1, drops(Drop::frag_needed));
  auto err_frame = sent(0);
  ASSERT_TRUE(err_frame);
  uint32_t receiver;
  uint64_t counter;
  const Bytes icmp = open_sent(*err_frame, &receiver, &counter);
  ASSERT_GE(icmp.size(), 28u + 28);
  auto* eip = reinterpret_cast<const rte_ipv4_hdr*>(icmp.data());
  EXPECT_EQ(kGwVa, ip_src(eip));
  EXPECT_EQ(kPeerVa, ip_dst(eip));
  EXPECT_EQ(3, icmp[20]);
  EXPECT_EQ(4, icmp[21]);
  EXPECT_EQ(1400, icmp[26] << 8 | icmp[27]);

  dp_->ports[1].l3_mtu = saved;
  dp_->policy.store(nullptr);
}

// Two workers over two-queue ports: peer 0 belongs to worker 0, but its tunnel packets and the
// LAN's replies arrive on worker 1's queues. Worker 1 hands them over; reply fragments after the
// first carry no port and follow the first one (frags_steer), in order on the same ring.
class TwoWorkerTest : public WorkerTest {
 protected:
  static void SetUpTestSuite() {
    test::ensure_eal();
    std::string names[2];
    for (int p = 0; p < 2; ++p) {
      for (int q = 0; q < 2; ++q) {
        std::string n = "mw_rx" + std::to_string(p) + std::to_string(q);
        rxq_[p][q] = rte_ring_create(n.c_str(), 256, 0, RING_F_SP_ENQ | RING_F_SC_DEQ);
        n = "mw_tx" + std::to_string(p) + std::to_string(q);
        txq_[p][q] = rte_ring_create(n.c_str(), 256, 0, RING_F_SP_ENQ | RING_F_SC_DEQ);
      }
      std::string n = "mw_port" + std::to_string(p);
      int id = rte_eth_from_rings(n.c_str(), rxq_[p], 2, txq_[p], 2, 0);
      ASSERT_GE(id, 0);
      char name[RTE_ETH_NAME_MAX_LEN];
      ASSERT_EQ(0, rte_eth_dev_get_name_by_port(uint16_t(id), name));
      names[p] = name;
    }
    Settings s;
    s.workers = 2;
    s.virtual_address = kGwVa;
    s.listen_port = kPort;
    s.rx_queue_size = 256;
    s.tx_queue_size = 256;
    s.mbuf_pool_size = 2047;
    s.mbuf_data_room = 4096;
    s.max_peers = 16;
    s.aead = crypto::AeadBackend::openssl;
    s.ports = {{"wan", PortRole::underlay, names[0], kGwWan, 24, 0},
               {"lan", PortRole::lan, names[1], kGwLan, 24, 0}};
    dp_ = new Dataplane();
    std::string err;
    ASSERT_TRUE(dp_->init(s, &err)) << err;
  }
  static void TearDownTestSuite() {
    delete dp_;
    dp_ = nullptr;
  }
  void TearDown() override {
    WorkerTest::TearDown();
    void* m;
    for (auto& port : txq_)
      for (auto* r : port)
        while (rte_ring_dequeue(r, &m) == 0) rte_pktmbuf_free(static_cast<rte_mbuf*>(m));
  }

  Worker& w(unsigned i) { return *dp_->workers[i]; }
  void enqueue(int port, int queue, const Bytes& frame) {
    ASSERT_EQ(0, rte_ring_enqueue(rxq_[port][queue], test::mbuf_from(dp_->pool, frame)));
  }
  std::vector<Bytes> sent_q(int port, int queue) {
    std::vector<Bytes> out;
    void* m;
    while (rte_ring_dequeue(txq_[port][queue], &m) == 0) {
      out.push_back(test::bytes_of(static_cast<rte_mbuf*>(m)));
      rte_pktmbuf_free(static_cast<rte_mbuf*>(m));
    }
    return out;
  }

  static inline rte_ring* rxq_[2][2];
  static inline rte_ring* txq_[2][2];
};

TEST_F(TwoWorkerTest, PacketsLandingOnTheOtherWorkerAreHandedToTheOwner) {
  auto pol = office_policy();
  ASSERT_NE(nullptr, pol);
  dp_->policy.store(pol.get());
  constexpr uint32_t kLanHost = 0xC633640A;  // 198.51.100.10
  const MacAddr lan_mac{{0x02, 0x1a, 0, 0, 0, 0x0a}};
  learn(1, kLanHost, lan_mac);
  install_peer();  // owner: worker 0
  ASSERT_EQ(0u, dp_->peers.slot(0).owner.load());

  // The peer's fragmented 3000-byte ping arrives on worker 1's queue: handed to worker 0.
  const Bytes request = ipv4(kPeerVa, kLanHost, IPPROTO_ICMP, icmp_echo(9, 1, 3000));
  for (unsigned i = 0; i < 3; ++i) {
    Bytes frag(1420);
    frag.resize(ip_fragment_build(request.data(), uint32_t(request.size()), 1420, i, frag.data(), 1420));
    enqueue(0, 1, tunnel_frame(frag, i));
  }
  const uint64_t handed1 = w(1).handed_off.get();
  w(1).poll_once();
  EXPECT_EQ(handed1 + 3, w(1).handed_off.get());
  EXPECT_TRUE(sent_q(1, 1).empty());
  w(0).poll_once();
  const std::vector<Bytes> out = sent_q(1, 0);
  ASSERT_EQ(3u, out.size());
  uint16_t snat_id = 0;
  for (const Bytes& f : out) {
    auto* ip = reinterpret_cast<const rte_ipv4_hdr*>(f.data() + 14);
    EXPECT_EQ(kGwLan, ip_src(ip));
    if ((rte_be_to_cpu_16(ip->fragment_offset) & 0x1fff) == 0) snat_id = uint16_t(f[38] << 8 | f[39]);
  }
  // Worker 0's slice of the SNAT identifiers: its replies belong to it.
  ASSERT_EQ(0u, ConnTable::owner_worker(snat_id, 2));

  // The LAN host's reply, 1500-byte fragments, on worker 1's LAN queue.
  Bytes echo_reply = icmp_echo(snat_id, 1, 3000);
  echo_reply[0] = RTE_IP_ICMP_ECHO_REPLY;
  echo_reply[2] = echo_reply[3] = 0;
  const uint16_t c = uint16_t(~rte_raw_cksum(echo_reply.data(), echo_reply.size()));
  memcpy(&echo_reply[2], &c, 2);
  const Bytes reply = ipv4(kLanHost, kGwLan, IPPROTO_ICMP, echo_reply);
  for (unsigned i = 0; i < 3; ++i) {
    Bytes frag(1500);
    frag.resize(ip_fragment_build(reply.data(), uint32_t(reply.size()), 1500, i, frag.data(), 1500));
    enqueue(1, 1, eth(port_mac(1), lan_mac, RTE_ETHER_TYPE_IPV4, frag));
  }
  const uint64_t no_first0 = w(0).drops[unsigned(Drop::frag_no_first)].get();
  const uint64_t no_first1 = w(1).drops[unsigned(Drop::frag_no_first)].get();
  w(1).poll_once();
  EXPECT_EQ(handed1 + 6, w(1).handed_off.get());
  w(0).poll_once();
  const std::vector<Bytes> tunnel = sent_q(0, 0);
  EXPECT_EQ(5u, tunnel.size());  // 1500 + 1500 + 68 -> 2 + 2 + 1 for the tunnel's 1420
  Bytes payload(reply.size() - 20);
  for (const Bytes& f : tunnel) {
    uint32_t receiver;
    uint64_t counter;
    const Bytes inner = open_sent(f, &receiver, &counter);
    ASSERT_GE(inner.size(), 20u);
    auto* ip = reinterpret_cast<const rte_ipv4_hdr*>(inner.data());
    EXPECT_EQ(kPeerVa, ip_dst(ip));
    const size_t tl = rte_be_to_cpu_16(ip->total_length);
    const size_t off = size_t(rte_be_to_cpu_16(ip->fragment_offset) & 0x1fff) * 8;
    ASSERT_LE(off + tl - 20, payload.size());
    memcpy(payload.data() + off, inner.data() + 20, tl - 20);
  }
  EXPECT_EQ(9, payload[4] << 8 | payload[5]);
  EXPECT_TRUE(icmp_checksum_ok(payload.data(), payload.size()));
  EXPECT_EQ(no_first0, w(0).drops[unsigned(Drop::frag_no_first)].get());
  EXPECT_EQ(no_first1, w(1).drops[unsigned(Drop::frag_no_first)].get());
  EXPECT_TRUE(sent_q(0, 1).empty());

  dp_->policy.store(nullptr);
}

// Lcores for the control thread and every worker, each on a CPU this process may use, however
// few there are; explicit -l/-c/--lcores in eal_args win.
TEST(EalArgv, LcoresCoverEveryWorkerOnAllowedCpus) {
  cpu_set_t allowed;
  ASSERT_EQ(0, sched_getaffinity(0, sizeof allowed, &allowed));
  for (unsigned workers : {1u, 2u, 7u}) {
    Settings s;
    s.workers = workers;
    const std::vector<std::string> a = eal_argv(s);
    auto at = std::find_if(a.begin(), a.end(), [](const std::string& x) { return x == "-l" || x == "--lcores"; });
    ASSERT_NE(a.end(), at);
    ASSERT_NE(a.end(), at + 1);
    const std::string& v = *(at + 1);
    if (*at == "-l") {
      EXPECT_EQ("0-" + std::to_string(workers), v);
      for (unsigned c = 0; c <= workers; ++c) EXPECT_TRUE(CPU_ISSET(c, &allowed));
      continue;
    }
    // --lcores 0@c0,1@c1,...: lcores 0..workers in order, each on an allowed CPU.
    std::stringstream in(v);
    std::string item;
    unsigned lcore = 0;
    while (std::getline(in, item, ',')) {
      const size_t atsign = item.find('@');
      ASSERT_NE(std::string::npos, atsign) << v;
      EXPECT_EQ(std::to_string(lcore), item.substr(0, atsign));
      EXPECT_TRUE(CPU_ISSET(std::stoul(item.substr(atsign + 1)), &allowed)) << v;
      ++lcore;
    }
    EXPECT_EQ(workers + 1, lcore) << v;
  }
  Settings s;
  s.workers = 3;
  s.eal_args = {"-l", "4-7"};
  const std::vector<std::string> a = eal_argv(s);
  EXPECT_EQ(1, std::count(a.begin(), a.end(), "-l"));
  EXPECT_EQ(0, std::count(a.begin(), a.end(), "--lcores"));
}

}  // namespace
}  // namespace sluice::dp
