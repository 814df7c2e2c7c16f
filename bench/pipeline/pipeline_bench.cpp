// The whole worker pipeline on bursts of real mbufs, against the raw AEAD rate in the same run.
//
//   BM_Inbound/size:N   peer -> LAN: RX burst of transport messages from the peers -> decrypt ->
//                       connection lookup (1M established flows) -> SNAT -> TX staging
//   BM_Return/size:N    LAN -> peer: RX burst of replies -> reverse SNAT -> encrypt -> TX staging
//
// SLUICE_BENCH_PEERS (default 100000) sets the number of peers: one Dataplane per process.
// Setup: two net_ring ports, 10k policy rules compiled to rte_acl, PEERS peers with a keypair
// each, 1M connections in the worker's table, the LAN hosts' MACs known. Each iteration copies
// 32 prepared frames into fresh mbufs (what a NIC's DMA does), runs one Worker::poll_once() and
// frees what the worker transmitted. Between bursts the 32 keypairs' replay windows are reset so
// the same prepared messages stay acceptable (a 520-byte memset each, counted in the time).
// Counters: raw_aead_pps is the AEAD alone (open for inbound, seal for return) on the same
// payload size, measured in the same process just before; ratio = pipeline pps / raw_aead_pps.
#include <benchmark/benchmark.h>
#include <rte_eal.h>
#include <rte_eth_ring.h>
#include <rte_ethdev.h>
#include <rte_cycles.h>
#include <sodium.h>
#include <unistd.h>

#include <ctime>
#include <memory>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "controlplane/policy/compiled.h"
#include "dataplane/dataplane.h"
#include "dataplane/mbuf_meta.h"
#include "dataplane/nat.h"
#include "dataplane/packet.h"
#include "dataplane/wg/transport.h"
#include "dataplane/worker.h"

namespace {

using namespace sluice;
using Bytes = std::vector<uint8_t>;

constexpr uint32_t kGwWan = 0xC0000202;   // 192.0.2.2
constexpr uint32_t kClient = 0xC000020A;  // 192.0.2.10: every peer's endpoint (distinct ports)
constexpr uint32_t kGwLan = 0xC6336401;   // 198.51.100.1
constexpr uint32_t kLanBase = 0xC633640A; // 198.51.100.10.. : the LAN hosts
constexpr unsigned kLanHosts = 200;
constexpr uint32_t kVaBase = 0x64400002;  // 100.64.0.2..
constexpr uint32_t kConnections = 1u << 20;
constexpr unsigned kBurst = 32;
constexpr unsigned kPrepared = 1024;      // distinct prepared frames per benchmark

dp::MacAddr mac_of(uint32_t ip) { return dp::MacAddr{{0x02, 0x42, uint8_t(ip >> 24), uint8_t(ip >> 16), uint8_t(ip >> 8), uint8_t(ip)}}; }

Bytes frame(const dp::MacAddr& dst, const dp::MacAddr& src, const Bytes& ip) {
  Bytes b(14 + ip.size());
  memcpy(b.data(), dst.b, 6);
  memcpy(b.data() + 6, src.b, 6);
  b[12] = 0x08;
  b[13] = 0x00;
  memcpy(b.data() + 14, ip.data(), ip.size());
  return b;
}

Bytes udp_packet(uint32_t src, uint16_t sport, uint32_t dst, uint16_t dport, size_t payload) {
  Bytes p(20 + 8 + payload);
  auto* ip = reinterpret_cast<rte_ipv4_hdr*>(p.data());
  ip->version_ihl = RTE_IPV4_VHL_DEF;
  ip->total_length = rte_cpu_to_be_16(uint16_t(p.size()));
  ip->time_to_live = 64;
  ip->next_proto_id = IPPROTO_UDP;
  ip->src_addr = rte_cpu_to_be_32(src);
  ip->dst_addr = rte_cpu_to_be_32(dst);
  ip->hdr_checksum = rte_ipv4_cksum(ip);
  auto* u = reinterpret_cast<rte_udp_hdr*>(ip + 1);
  u->src_port = rte_cpu_to_be_16(sport);
  u->dst_port = rte_cpu_to_be_16(dport);
  u->dgram_len = rte_cpu_to_be_16(uint16_t(8 + payload));
  for (size_t i = 0; i < payload; ++i) p[28 + i] = uint8_t(i);
  u->dgram_cksum = rte_ipv4_udptcp_cksum(ip, u);
  return p;
}

// 500 policies x 20 rules on the LAN's hosts for 20 tags, plus the policy every peer has.
config::Config policy_config(uint32_t peers) {
  std::mt19937_64 rng(7);
  config::Config c;
  config::Port wan, lan;
  wan.name = "wan";
  wan.role = config::PortRole::underlay;
  wan.address = {kGwWan, 24};
  lan.name = "lan";
  lan.role = config::PortRole::lan;
  lan.address = {kGwLan, 24};
  c.dataplane.ports = {wan, lan};
  c.subnets.push_back({{kGwLan & 0xffffff00, 24}, "office", false, std::nullopt});
  for (uint32_t i = 0; i < peers; ++i) {
    config::Peer p;
    p.name = "peer" + std::to_string(i);
    p.virtual_address = kVaBase + i;
    p.tags = {"all", "tag" + std::to_string(i % 20)};
    c.peers.push_back(std::move(p));
  }
  for (int n = 0; n < 500; ++n) {
    config::Policy pol;
    pol.name = "p" + std::to_string(n);
    pol.senders = {"tag" + std::to_string(n % 20)};
    pol.subnet_refs = {"office"};
    pol.subnets = {{kGwLan & 0xffffff00, 24}};
    uint32_t a = kLanBase + uint32_t(rng() % 200);
    pol.filter = {{a, a + uint32_t(rng() % 30)}};
    for (int r = 0; r < 20; ++r) {
      config::AclRule rule;
      rule.action = rng() % 3 ? config::AclAction::allow : config::AclAction::deny;
      rule.protocol = rng() % 2 ? config::Protocol::tcp : config::Protocol::udp;
      uint16_t port = uint16_t(1 + rng() % 10000);
      rule.ports = {{port, uint16_t(port + rng() % 50)}};
      pol.acl.push_back(rule);
    }
    c.policies.push_back(std::move(pol));
  }
  config::Policy all;
  all.name = "everyone";
  all.senders = {"all"};
  all.subnet_refs = {"office"};
  all.subnets = {{kGwLan & 0xffffff00, 24}};
  c.policies.push_back(std::move(all));
  return c;
}

struct Lab {
  std::unique_ptr<dp::Dataplane> dp;
  std::unique_ptr<const policy::CompiledPolicy> pol;
  rte_ring* rx[2];
  rte_ring* tx[2];
  uint32_t peers = 0;
  uint8_t key[32];  // every peer's keys (the AEAD cost does not depend on which key)
  std::vector<dp::Conn*> conns;  // per prepared flow
};

uint32_t bench_peers() {
  const char* v = getenv("SLUICE_BENCH_PEERS");
  return v != nullptr ? uint32_t(std::stoul(v)) : 100000;
}

Lab& lab() {
  static std::unique_ptr<Lab> lab;
  if (lab) return *lab;
  const uint32_t peers = bench_peers();
  dp::Settings s;
  s.eal_args = {"--no-huge", "-m", "1536", "--no-pci", "-l", "0-1", "--no-shconf",
                "--file-prefix=sluice-bench-" + std::to_string(getpid()), "--log-level=lib.eal:error"};
  std::string err;
  if (!dp::eal_init(s, &err)) throw std::runtime_error(err);
  auto l = std::make_unique<Lab>();
  l->peers = peers;
  for (int i = 0; i < 2; ++i) {
    std::string n = "pb_rx" + std::to_string(i);
    l->rx[i] = rte_ring_create(n.c_str(), 1024, 0, RING_F_SP_ENQ | RING_F_SC_DEQ);
    n = "pb_tx" + std::to_string(i);
    l->tx[i] = rte_ring_create(n.c_str(), 1024, 0, RING_F_SP_ENQ | RING_F_SC_DEQ);
  }
  std::string names[2];
  for (int i = 0; i < 2; ++i) {
    std::string n = "pb_port" + std::to_string(i);
    int id = rte_eth_from_rings(n.c_str(), &l->rx[i], 1, &l->tx[i], 1, 0);
    char name[RTE_ETH_NAME_MAX_LEN];
    rte_eth_dev_get_name_by_port(uint16_t(id), name);
    names[i] = name;
  }
  s.workers = 1;
  s.virtual_address = 0x64400001;
  s.rx_queue_size = 1024;
  s.tx_queue_size = 1024;
  s.mbuf_pool_size = 8191;
  s.max_peers = peers;
  s.conn_capacity = kConnections + kConnections / 4;
  s.ports = {{"wan", dp::PortRole::underlay, names[0], kGwWan, 24, 0}, {"lan", dp::PortRole::lan, names[1], kGwLan, 24, 0}};
  l->dp = std::make_unique<dp::Dataplane>();
  if (!l->dp->init(s, &err)) throw std::runtime_error(err);

  config::Config cfg = policy_config(peers);
  auto pol = policy::CompiledPolicy::build(cfg, {}, 1, &err);
  if (!pol) throw std::runtime_error("policy: " + err);
  l->dp->policy.store(pol.get());
  l->pol = std::move(pol);

  randombytes_buf(l->key, sizeof l->key);
  for (uint32_t p = 0; p < peers; ++p) {
    dp::PeerSlot& slot = l->dp->peers.slot(p);
    slot.virtual_address.store(kVaBase + p);
    slot.owner.store(0);
    slot.endpoint.store(dp::pack_endpoint(kClient, uint16_t(10000 + p % 50000)));
    slot.active.store(true);
    dp::Keypair* kp = dp::PeerTable::new_keypair();
    memcpy(kp->send_key, l->key, 32);
    memcpy(kp->recv_key, l->key, 32);
    kp->local_index = 0x10000000u + p;
    kp->remote_index = 0x20000000u + p;
    kp->peer = p;
    kp->initiator = false;
    kp->birth_tsc = rte_rdtsc();
    kp->received_data.store(true);
    l->dp->peers.add_index(kp);
    slot.current.store(kp);
    l->dp->peers.add_address(kVaBase + p, p);
  }
  dp::NeighTable::Io io;
  io.send_request = [](uint16_t, uint32_t, const dp::MacAddr*) {};
  io.drop = [](rte_mbuf* m, bool) { rte_pktmbuf_free(m); };
  io.send_held = [](rte_mbuf* m, const dp::MacAddr&) { rte_pktmbuf_free(m); };
  const uint64_t now = rte_rdtsc();
  l->dp->neigh.learn(0, kClient, mac_of(kClient), true, now, io);
  for (unsigned h = 0; h < kLanHosts; ++h) l->dp->neigh.learn(1, kLanBase + h, mac_of(kLanBase + h), true, now, io);

  // 1M established UDP flows: peer p, port, to a LAN host; the first kPrepared are the ones the
  // benchmark's packets use, spread over the table.
  dp::Worker& w = *l->dp->workers[0];
  std::mt19937 rng(1);
  for (uint32_t i = 0; i < kConnections; ++i) {
    dp::FlowKey k{};
    const uint32_t peer = i % peers;
    k.src = kVaBase + peer;
    // Unique per (peer, sport); remote endpoints spread over 200 hosts x 1000 ports so that no
    // endpoint needs more SNAT ports than a slice has (the table refuses that, correctly).
    k.sport = uint16_t(1024 + (i / peers) % 60000);
    k.dst = kLanBase + i % kLanHosts;
    k.dport = uint16_t(5000 + (i / kLanHosts) % 1000);
    k.proto = IPPROTO_UDP;
    dp::Conn* c = w.ct.insert(k, peer, kGwLan, now);
    if (c == nullptr) throw std::runtime_error("connection table filled up at " + std::to_string(i));
    c->verdict = dp::Verdict::allow;
    c->policy_gen = 1;
    c->out_port = 1;
    c->next_hop = k.dst;
    w.ct.track(*c, dp::FlowDir::orig, 0, now);
    w.ct.track(*c, dp::FlowDir::reply, 0, now);
    if (i < kPrepared * 997 && i % 997 == 0) l->conns.push_back(c);
  }
  lab = std::move(l);
  return *lab;
}

// Raw AEAD rate on `size`-byte payloads, measured now: the reference for the ratio.
double raw_aead_pps(size_t size, bool open) {
  crypto::Aead aead;
  uint8_t key[32];
  randombytes_buf(key, sizeof key);
  Bytes buf(size + 16), out(size + 16);
  aead.seal(key, 1, buf.data(), size, buf.data());
  // Thread CPU time, as Google Benchmark rates the pipeline: the ratio compares like with like.
  auto cpu_now = [] {
    timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return double(ts.tv_sec) + double(ts.tv_nsec) * 1e-9;
  };
  const int n = 200000;  // long enough (about 0.1-0.4 s) for a steady reference
  const double t0 = cpu_now();
  for (int i = 0; i < n; ++i) {
    if (open)
      benchmark::DoNotOptimize(aead.open(key, 1, buf.data(), size + 16, out.data()));
    else
      benchmark::DoNotOptimize(aead.seal(key, uint64_t(i), buf.data(), size, out.data()));
  }
  return n / (cpu_now() - t0);
}

void run(benchmark::State& state, Lab& l, const std::vector<Bytes>& frames, int in_port, int out_port,
         const std::vector<dp::Keypair*>& reset, double reference) {
  dp::Worker& w = *l.dp->workers[0];
  rte_mbuf* pkts[kBurst];
  void* out[kBurst * 2];
  size_t next = 0;
  uint64_t sent = 0, wanted = 0;
  for (auto _ : state) {
    if (rte_pktmbuf_alloc_bulk(l.dp->pool, pkts, kBurst) != 0) {
      state.SkipWithError("mbuf pool empty");
      break;
    }
    for (unsigned i = 0; i < kBurst; ++i) {
      const Bytes& f = frames[(next + i) % frames.size()];
      memcpy(rte_pktmbuf_append(pkts[i], uint16_t(f.size())), f.data(), f.size());
    }
    rte_ring_sp_enqueue_burst(l.rx[in_port], reinterpret_cast<void**>(pkts), kBurst, nullptr);
    w.poll_once();
    unsigned n = rte_ring_sc_dequeue_burst(l.tx[out_port], out, kBurst * 2, nullptr);
    sent += n;
    wanted += kBurst;
    rte_pktmbuf_free_bulk(reinterpret_cast<rte_mbuf**>(out), n);
    for (unsigned i = 0; i < kBurst; ++i) {
      dp::Keypair* kp = reset[(next + i) % reset.size()];
      if (kp != nullptr) kp->replay.reset();
    }
    next += kBurst;
  }
  state.SetItemsProcessed(int64_t(sent));
  state.counters["delivered"] = wanted ? double(sent) / double(wanted) : 0;
  state.counters["raw_aead_pps"] = reference;
  state.counters["ratio"] = benchmark::Counter(double(sent) / reference, benchmark::Counter::kIsRate);
}

void BM_Inbound(benchmark::State& state) {
  const size_t size = size_t(state.range(0));  // inner packet bytes
  Lab& l = lab();
  crypto::Aead aead;
  std::vector<Bytes> frames;
  std::vector<dp::Keypair*> reset;
  for (dp::Conn* c : l.conns) {
    Bytes inner = udp_packet(c->src, c->sport, c->dst, c->dport, size - 28);
    Bytes msg(wg::transport_sealed_len(inner.size(), 1420));
    wg::transport_seal(aead, l.key, 0x10000000u + c->peer, 1, inner.data(), inner.size(), 1420, msg.data());
    const uint16_t eport = uint16_t(10000 + c->peer % 50000);
    Bytes outer = udp_packet(kClient, eport, kGwWan, 51820, msg.size());
    memcpy(outer.data() + 28, msg.data(), msg.size());
    auto* ip = reinterpret_cast<rte_ipv4_hdr*>(outer.data());
    auto* u = reinterpret_cast<rte_udp_hdr*>(ip + 1);
    u->dgram_cksum = 0;
    u->dgram_cksum = rte_ipv4_udptcp_cksum(ip, u);
    frames.push_back(frame(l.dp->ports[0].mac, mac_of(kClient), outer));
    reset.push_back(l.dp->peers.keypair_by_index(0x10000000u + c->peer));
  }
  run(state, l, frames, 0, 1, reset, raw_aead_pps(size, true));
}

void BM_Return(benchmark::State& state) {
  const size_t size = size_t(state.range(0));
  Lab& l = lab();
  std::vector<Bytes> frames;
  std::vector<dp::Keypair*> reset;  // sending needs no reset: the send counter just grows
  for (dp::Conn* c : l.conns)
    frames.push_back(frame(l.dp->ports[1].mac, mac_of(c->dst), udp_packet(c->dst, c->dport, c->snat_addr, c->snat_port, size - 28)));
  reset.push_back(nullptr);
  run(state, l, frames, 1, 0, reset, raw_aead_pps(size, false));
}

BENCHMARK(BM_Inbound)->ArgName("size")->Arg(64)->Arg(512)->Arg(1420);
BENCHMARK(BM_Return)->ArgName("size")->Arg(64)->Arg(512)->Arg(1420);

}  // namespace

BENCHMARK_MAIN();
