// Policy classification cost on a worker and compile cost on the control thread, with a
// synthetic configuration of 10k ACL rules: 500 policies x 20 rules over 200 subnets (40% with
// subnet filters of addresses, ranges and CIDRs; port lists and ranges), 16 sender tags and
// 1000 peers drawn from 24 tag combinations ("personas").
//
//   BM_Classify/N       N flows per rte_acl_classify call; items/s = flows per second
//   BM_RouteBulk/32     rte_lpm_lookup_bulk for a burst of 32 destinations
//   BM_Build/P/N        the whole CompiledPolicy::build for N policies x 20 rules (what a reload
//                       pays before publishing); counters give rte rules, classes, memory.
//                       Real time: run it on an otherwise idle machine.
#include <benchmark/benchmark.h>
#include <rte_eal.h>
#include <time.h>
#include <unistd.h>

#include <map>
#include <random>
#include <stdexcept>

#include "controlplane/policy/compiled.h"

namespace sluice::policy {
namespace {

constexpr int kPolicies = 500;  // x kRulesPerPolicy = 10k rules
constexpr int kRulesPerPolicy = 20;
constexpr int kSubnets = 200;
constexpr int kTags = 16;
constexpr int kPersonas = 24;
constexpr int kPeers = 1000;

void ensure_eal() {
  static const bool ok = [] {
    std::vector<std::string> args = {"bench-policy", "--no-huge", "-m", "1024", "--no-pci", "--no-shconf",
                                      "--file-prefix=sluice-bench-policy-" + std::to_string(getpid()), "-l", "0",
                                      "--log-level=lib.eal:error"};
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    return rte_eal_init(int(argv.size()), argv.data()) >= 0;
  }();
  if (!ok) throw std::runtime_error("rte_eal_init failed");
}

uint32_t subnet_base(int i) { return (172u << 24 | 16u << 16) + uint32_t(i) * 256; }  // 172.16.i.0/24

config::Config make_config(bool common_ports, int policies) {
  std::mt19937_64 rng(42);
  auto pick = [&](size_t n) { return size_t(rng() % n); };
  config::Config c;
  config::Port wan, lan;
  wan.name = "wan";
  wan.role = config::PortRole::underlay;
  wan.address = {0xC0000202, 24};  // 192.0.2.2/24
  wan.gateway = 0xC00002FE;
  lan.name = "lan";
  lan.role = config::PortRole::lan;
  lan.address = {0x0A000001, 16};  // 10.0.0.1/16
  c.dataplane.ports = {wan, lan};
  for (int i = 0; i < kSubnets; i++) {
    c.subnets.push_back({{subnet_base(i), 24}, "net" + std::to_string(i), false, 0x0A0000FEu});
  }
  c.subnets.push_back({{0, 0}, "Internet", false, std::nullopt});

  std::vector<std::vector<std::string>> personas(kPersonas);
  for (auto& p : personas) {
    size_t n = 1 + pick(3);
    for (size_t i = 0; i < n; i++) p.push_back("tag" + std::to_string(pick(kTags)));
  }
  for (int i = 0; i < kPeers; i++) {
    config::Peer peer;
    peer.name = "peer" + std::to_string(i);
    peer.virtual_address = 0x64400002u + uint32_t(i);
    peer.tags = personas[size_t(i) % kPersonas];
    c.peers.push_back(std::move(peer));
  }

  for (int p = 0; p < policies; p++) {
    config::Policy pol;
    pol.name = "policy" + std::to_string(p);
    pol.senders = {"tag" + std::to_string(p % kTags)};
    size_t nsub = 1 + pick(2);
    for (size_t s = 0; s < nsub; s++) {
      int i = int(pick(kSubnets));
      pol.subnet_refs.push_back("net" + std::to_string(i));
      pol.subnets.push_back({subnet_base(i), 24});
    }
    if (pick(10) < 4) {
      const config::Prefix& s = pol.subnets[0];
      uint32_t a = s.addr + uint32_t(pick(200));
      pol.filter.push_back({a, a});                               // an address
      pol.filter.push_back({a + 3, a + 3 + uint32_t(pick(40))});  // a range
      uint32_t blk = s.addr + uint32_t(pick(8)) * 32;
      pol.filter.push_back({blk, blk + 15});                      // a /28
    }
    for (int r = 0; r < kRulesPerPolicy; r++) {
      config::AclRule rule;
      rule.action = pick(3) == 0 ? config::AclAction::deny : config::AclAction::allow;
      switch (pick(6)) {
        case 0: rule.protocol = config::Protocol::udp; break;
        case 1: rule.protocol = config::Protocol::icmp; break;
        default: rule.protocol = config::Protocol::tcp;
      }
      if (rule.protocol != config::Protocol::icmp) {
        size_t n = 1 + pick(3);
        for (size_t i = 0; i < n; i++) {
          if (common_ports) {
            // What ACLs name in practice: well-known services and a few ranges.
            static const config::PortRange kCommon[] = {
                {22, 22}, {80, 80}, {443, 443}, {53, 53}, {3389, 3389}, {445, 445}, {139, 139}, {25, 25},
                {587, 587}, {993, 993}, {5432, 5432}, {3306, 3306}, {1433, 1433}, {6379, 6379}, {8080, 8080},
                {8443, 8443}, {123, 123}, {161, 162}, {514, 514}, {631, 631}, {9100, 9100}, {5060, 5061},
                {10000, 20000}, {1024, 65535}, {8000, 8999}, {389, 389}, {636, 636}, {88, 88}, {135, 135},
                {5900, 5910}};
            rule.ports.push_back(kCommon[pick(std::size(kCommon))]);
          } else {
            uint16_t a = uint16_t(1 + pick(10000));
            rule.ports.push_back({a, uint16_t(pick(2) ? a : a + pick(100))});
          }
        }
      }
      pol.acl.push_back(rule);
    }
    c.policies.push_back(std::move(pol));
  }
  // Some Internet egress too: "all but SSH" for one tag.
  config::Policy inet;
  inet.name = "internet-but-ssh";
  inet.senders = {"tag0"};
  inet.subnet_refs = {"Internet"};
  inet.subnets = {{0, 0}};
  inet.acl = {{config::AclAction::deny, config::Protocol::tcp, {{22, 22}}}, {config::AclAction::allow, config::Protocol::any, {}}};
  c.policies.push_back(std::move(inet));
  return c;
}

const config::Config& bench_config(bool common_ports = true, int policies = kPolicies) {
  static std::map<std::pair<bool, int>, config::Config> cache;
  auto it = cache.find({common_ports, policies});
  if (it == cache.end()) {
    it = cache.emplace(std::make_pair(common_ports, policies), make_config(common_ports, policies)).first;
  }
  return it->second;
}

const CompiledPolicy& compiled() {
  static const std::unique_ptr<CompiledPolicy> cp = [] {
    ensure_eal();
    std::string err;
    auto p = CompiledPolicy::build(bench_config(), {}, 1, &err);
    if (!p) throw std::runtime_error(err);
    return p;
  }();
  return *cp;
}

// Flows of random peers: 90% to addresses inside the 200 subnets, 10% anywhere (Internet);
// 70% tcp, 20% udp, 10% icmp; ports 1-10100. rte_acl walks the same number of trie levels
// whatever the outcome, so the mix matters little.
std::vector<FlowKey> make_flows(const CompiledPolicy& cp, size_t n) {
  std::mt19937_64 rng(7);
  std::vector<FlowKey> flows(n);
  for (auto& f : flows) {
    f.sender_class = cp.class_of(uint32_t(rng() % kPeers));
    f.dst = rng() % 10 == 0 ? uint32_t(rng()) : subnet_base(int(rng() % kSubnets)) + uint32_t(rng() % 256);
    uint32_t k = uint32_t(rng() % 10);
    f.proto = k < 7 ? kProtoTcp : k < 9 ? kProtoUdp : kProtoIcmp;
    f.dport = uint16_t(1 + rng() % 10100);
  }
  return flows;
}

void BM_Classify(benchmark::State& state) {
  const CompiledPolicy& cp = compiled();
  const unsigned burst = unsigned(state.range(0));
  std::vector<FlowKey> flows = make_flows(cp, 8192);
  std::vector<Verdict> out(burst);
  size_t at = 0, allowed = 0;
  for (auto _ : state) {
    cp.classify(&flows[at], burst, out.data());
    for (unsigned i = 0; i < burst; i++) allowed += out[i].allow;
    benchmark::DoNotOptimize(out.data());
    at = (at + burst) % (flows.size() - burst);
  }
  state.SetItemsProcessed(int64_t(state.iterations()) * burst);
  state.counters["rte_rules"] = double(cp.stats().rte_rules);
  state.counters["categories"] = cp.stats().categories;
  state.counters["allowed"] = double(allowed) / double(state.iterations() * burst);
}
BENCHMARK(BM_Classify)->Arg(1)->Arg(32)->Arg(64);

void BM_RouteBulk(benchmark::State& state) {
  const CompiledPolicy& cp = compiled();
  std::vector<FlowKey> flows = make_flows(cp, 8192);
  std::vector<uint32_t> dsts;
  for (const auto& f : flows) dsts.push_back(f.dst);
  const Route* out[32];
  size_t at = 0;
  for (auto _ : state) {
    cp.route_bulk(&dsts[at], 32, out);
    benchmark::DoNotOptimize(out);
    at = (at + 32) % (dsts.size() - 32);
  }
  state.SetItemsProcessed(int64_t(state.iterations()) * 32);
}
BENCHMARK(BM_RouteBulk);

void BM_Build(benchmark::State& state) {
  ensure_eal();
  const config::Config& cfg = bench_config(state.range(0) == 0, int(state.range(1)));
  uint64_t gen = 100;
  CompiledPolicy::Stats st;
  double cpu = 0;
  for (auto _ : state) {
    timespec c0{}, c1{};
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &c0);
    std::string err;
    auto cp = CompiledPolicy::build(cfg, {}, gen++, &err);
    if (!cp) {
      state.SkipWithError(err.c_str());
      return;
    }
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &c1);
    cpu += double(c1.tv_sec - c0.tv_sec) + double(c1.tv_nsec - c0.tv_nsec) * 1e-9;
    st = cp->stats();
  }
  state.counters["acl_rules"] = double(st.acl_rules);
  state.counters["rte_rules"] = double(st.rte_rules);
  state.counters["classes"] = double(st.classes);
  state.counters["class_runs"] = double(st.class_runs);
  state.counters["categories"] = st.categories;
  state.counters["acl_MiB"] = double(st.acl_bytes) / (1 << 20);
  state.counters["rte_acl_build_s"] = st.acl_build_seconds;
  state.counters["port_classes"] = double(st.port_classes);
  // CPU seconds of the whole process per build (the Time column is wall clock): what the build
  // costs, less sensitive to a loaded machine.
  state.counters["process_cpu_s"] = cpu / double(state.iterations());
}
// {ports, policies}: ports 0 = from a list of common services, 1 = random ports and ranges
// (worst case); policies x 20 rules = configured rules (500: 10k).
BENCHMARK(BM_Build)
    ->Args({0, kPolicies})
    ->Args({1, kPolicies})
    ->Args({0, kPolicies / 4})
    ->Args({0, kPolicies * 2})
    ->Unit(benchmark::kMillisecond)
    ->Iterations(3)
    ->UseRealTime();

}  // namespace
}  // namespace sluice::policy

BENCHMARK_MAIN();
