// Connection tracking and NAT per-packet costs: bulk lookups of 32 on tables of 1k, 100k and
// 1M connections, insert+expire churn at a steady size, and the header rewrites.
#include <benchmark/benchmark.h>

#include <cstring>
#include <map>
#include <memory>
#include <random>
#include <vector>

#include "dataplane/conntrack.h"
#include "dataplane/nat.h"

namespace sluice::dp {
namespace {

constexpr uint32_t kSnat = 0xC6336401;

FlowKey random_key(std::mt19937_64& rng) {
  FlowKey k;
  k.src = 0x64400000 | uint32_t(rng() % 4096);  // 4096 peers
  k.dst = uint32_t(rng());
  k.sport = uint16_t(rng());
  k.dport = uint16_t(rng() % 2 ? 443 : rng());
  k.proto = rng() % 4 ? kProtoTcp : kProtoUdp;
  return k;
}

constexpr size_t kSample = 1 << 20;

struct Filled {
  ConnTable table;
  std::vector<FlowKey> orig, reply;  // random sample of present keys, in random order
};

Filled& filled(uint32_t n) {
  static std::map<uint32_t, std::unique_ptr<Filled>> tables;
  auto& f = tables[n];
  if (f) return *f;
  f = std::make_unique<Filled>();
  ConnTable::Config cfg;
  cfg.capacity = n;
  cfg.seed = 1;
  f->table.init(cfg);
  std::mt19937_64 rng(n);
  std::vector<FlowKey> all;
  while (f->table.size() < n) {
    FlowKey k = random_key(rng);
    ConnTable::InsertResult r;
    if (f->table.insert(k, 0, kSnat, 0, &r) && r == ConnTable::InsertResult::created) all.push_back(k);
  }
  // A sample as large as the 1M table, so that it does not fit in cache either.
  for (size_t i = 0; i < kSample; i++) {
    const FlowKey& k = all[rng() % all.size()];
    f->orig.push_back(k);
    f->reply.push_back(f->table.lookup(k, FlowDir::orig)->reply_key());
  }
  return *f;
}

void BM_LookupBulk32(benchmark::State& st) {
  Filled& f = filled(uint32_t(st.range(0)));
  const FlowDir dir = st.range(1) ? FlowDir::reply : FlowDir::orig;
  const std::vector<FlowKey>& keys = dir == FlowDir::orig ? f.orig : f.reply;
  Conn* out[32];
  size_t at = 0, found = 0;
  for (auto _ : st) {
    f.table.lookup_bulk(&keys[at], 32, dir, out);
    for (Conn* c : out) found += c != nullptr;
    benchmark::DoNotOptimize(out);
    at = (at + 32) & (kSample - 1);
  }
  if (found != size_t(st.iterations()) * 32) st.SkipWithError("missed a present key");
  st.SetItemsProcessed(st.iterations() * 32);
  st.SetLabel(dir == FlowDir::orig ? "orig" : "reply");
}
BENCHMARK(BM_LookupBulk32)->ArgsProduct({{1000, 100000, 1000000}, {0, 1}});

void BM_LookupOne(benchmark::State& st) {
  Filled& f = filled(uint32_t(st.range(0)));
  size_t at = 0;
  for (auto _ : st) {
    benchmark::DoNotOptimize(f.table.lookup(f.orig[at], FlowDir::orig));
    at = (at + 1) & (f.orig.size() - 1);
  }
  st.SetItemsProcessed(st.iterations());
}
BENCHMARK(BM_LookupOne)->Arg(1000)->Arg(100000)->Arg(1000000);

// Misses (new flows) walk the home bucket only, unless it overflowed.
void BM_LookupBulk32Miss(benchmark::State& st) {
  Filled& f = filled(uint32_t(st.range(0)));
  std::mt19937_64 rng(99);
  std::vector<FlowKey> keys(1 << 16);
  for (auto& k : keys) k = random_key(rng);
  Conn* out[32];
  size_t at = 0;
  for (auto _ : st) {
    f.table.lookup_bulk(&keys[at], 32, FlowDir::orig, out);
    benchmark::DoNotOptimize(out);
    at = (at + 32) & (keys.size() - 1);
  }
  st.SetItemsProcessed(st.iterations() * 32);
}
BENCHMARK(BM_LookupBulk32Miss)->Arg(1000)->Arg(1000000);

// Steady churn: each iteration looks up 32 new UDP flows in bulk (all miss), inserts them
// (port allocation included), advances the clock one tick and runs expire() with a budget of
// 128. Flows live n/64 ticks:
// about n/2 are live, plus those the clock hand has not reached yet.
FlowKey churn_key(uint64_t i) {
  FlowKey k;
  k.src = 0x64400000 | uint32_t(i & 4095);
  k.dst = uint32_t(i * 2654435761u);  // a bijection: never the same key twice
  k.sport = uint16_t(i >> 32);
  k.dport = 443;
  k.proto = kProtoUdp;
  return k;
}

void BM_InsertExpireChurn(benchmark::State& st) {
  const uint32_t n = uint32_t(st.range(0));
  ConnTable t;
  ConnTable::Config cfg;
  cfg.capacity = n;
  cfg.seed = 2;
  cfg.timeouts.udp_unreplied = 1;
  cfg.ticks_per_sec = n / 64;
  if (!t.init(cfg)) return st.SkipWithError("init");
  uint64_t now = 0, i = 0;
  for (uint64_t w = 0; w < 4 * cfg.ticks_per_sec; w++) {  // warm up to the steady state
    for (int j = 0; j < 32; j++) t.insert(churn_key(i++), 0, kSnat, now);
    t.expire(++now, 128);
  }
  const uint64_t full0 = t.stats().full_drops.get(), exp0 = t.stats().expired.get();
  for (auto _ : st) {
    // As a worker meets a burst of new flows: the bulk lookup misses, then each is inserted.
    FlowKey keys[32];
    Conn* found[32];
    for (int j = 0; j < 32; j++) keys[j] = churn_key(i++);
    t.lookup_bulk(keys, 32, FlowDir::orig, found);
    for (int j = 0; j < 32; j++) {
      if (found[j] == nullptr) benchmark::DoNotOptimize(t.insert(keys[j], 0, kSnat, now));
    }
    t.expire(++now, 128);
  }
  st.SetItemsProcessed(st.iterations() * 32);
  st.counters["size"] = double(t.size());
  st.counters["full_drops"] = double(t.stats().full_drops.get() - full0);
  st.counters["expired_per_iter"] = double(t.stats().expired.get() - exp0) / double(st.iterations());
}
BENCHMARK(BM_InsertExpireChurn)->Arg(1000)->Arg(100000)->Arg(1000000);

std::vector<uint8_t> tcp_packet(uint16_t len) {
  std::vector<uint8_t> p(len, 0);
  p[0] = 0x45;
  p[2] = uint8_t(len >> 8), p[3] = uint8_t(len);
  p[8] = 64;
  p[9] = kProtoTcp;
  const uint8_t src[4] = {100, 64, 0, 2}, dst[4] = {198, 51, 100, 10};
  memcpy(p.data() + 12, src, 4);
  memcpy(p.data() + 16, dst, 4);
  p[20] = 0x15, p[21] = 0xb3, p[23] = 80;
  p[32] = 0x50;
  p[33] = kTcpAck;
  return p;
}

void BM_SnatOut(benchmark::State& st) {
  std::vector<uint8_t> p = tcp_packet(64);
  uint16_t port = 1024;
  for (auto _ : st) {
    benchmark::DoNotOptimize(snat_out(p.data(), uint32_t(p.size()), kSnat, port++));
    benchmark::ClobberMemory();
  }
  st.SetItemsProcessed(st.iterations());
}
BENCHMARK(BM_SnatOut);

void BM_SnatOutTtlMss(benchmark::State& st) {
  std::vector<uint8_t> p = tcp_packet(64);
  uint16_t port = 1024;
  for (auto _ : st) {
    p[8] = 64;
    benchmark::DoNotOptimize(ip_ttl_decrement(p.data()));
    benchmark::DoNotOptimize(tcp_clamp_mss(p.data(), uint32_t(p.size())));  // not a SYN: a check
    benchmark::DoNotOptimize(snat_out(p.data(), uint32_t(p.size()), kSnat, port++));
    benchmark::ClobberMemory();
  }
  st.SetItemsProcessed(st.iterations());
}
BENCHMARK(BM_SnatOutTtlMss);

// The whole per-burst conntrack+NAT work for 32 packets of known, established flows going out:
// parse, lookup_bulk, track, TTL, rewrite. The 32 packet buffers stay hot (as an RX burst's
// headers would be); the flows come from the large sample, so entries are mostly cold.
void BM_OutboundBurst32(benchmark::State& st) {
  Filled& f = filled(uint32_t(st.range(0)));
  static bool established[2] = {false, false};
  bool& done = established[st.range(0) > 1000];
  for (size_t i = 0; !done && i < f.orig.size(); i++) {
    Conn* c = f.table.lookup(f.orig[i], FlowDir::orig);
    f.table.track(*c, FlowDir::reply, kTcpSyn | kTcpAck, 0);
    f.table.track(*c, FlowDir::orig, kTcpAck, 0);
  }
  done = true;
  std::vector<std::vector<uint8_t>> pkts(32, tcp_packet(64));
  size_t at = 0;
  uint64_t now = 0;
  unsigned bad = 0;
  for (auto _ : st) {
    FlowKey keys[32];
    uint8_t flags[32];
    Conn* conns[32];
    for (unsigned j = 0; j < 32; j++) {
      uint8_t* p = pkts[j].data();
      const FlowKey& k = f.orig[at + j];
      const uint32_t src = __builtin_bswap32(k.src), dst = __builtin_bswap32(k.dst);
      const uint16_t sp = __builtin_bswap16(k.sport), dp = __builtin_bswap16(k.dport);
      memcpy(p + 12, &src, 4);
      memcpy(p + 16, &dst, 4);
      memcpy(p + 20, &sp, 2);
      memcpy(p + 22, &dp, 2);
      p[8] = 64;
      p[9] = k.proto;
      parse_flow(p, 64, &keys[j], &flags[j]);
    }
    f.table.lookup_bulk(keys, 32, FlowDir::orig, conns);
    ++now;
    for (unsigned j = 0; j < 32; j++) {
      uint8_t* p = pkts[j].data();
      Conn* c = conns[j];
      bad += !f.table.track(*c, FlowDir::orig, kTcpAck, now);
      ip_ttl_decrement(p);
      snat_out(p, 64, c->snat_addr, c->snat_port);
    }
    at = (at + 32) & (kSample - 1);
  }
  if (bad) st.SkipWithError("track refused a packet");
  st.SetItemsProcessed(st.iterations() * 32);
}
BENCHMARK(BM_OutboundBurst32)->Arg(1000)->Arg(1000000);

}  // namespace
}  // namespace sluice::dp

BENCHMARK_MAIN();
