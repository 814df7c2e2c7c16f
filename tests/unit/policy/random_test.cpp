// classify() against the reference evaluator and explain() on random configurations and flows:
// overlapping policies, deny-then-allow across policies, filters with ranges, port lists,
// trust requirements, empty ACLs.
#include <gtest/gtest.h>

#include <random>

#include "controlplane/policy/compiled.h"
#include "tests/unit/policy/builder.h"
#include "tests/unit/policy/eal.h"
#include "tests/unit/policy/reference.h"

namespace sluice::policy {
namespace {

using test::ip;
using test::pfx;

struct RandomCase {
  config::Config cfg;
  AppliesFn applies;
  std::vector<uint32_t> interesting;  // addresses at and around every subnet and filter edge
};

RandomCase make_case(std::mt19937_64& rng) {
  auto pick = [&](size_t n) { return size_t(rng() % n); };
  auto chance = [&](double p) { return std::uniform_real_distribution<double>(0, 1)(rng) < p; };
  RandomCase rc;
  config::Config& c = rc.cfg;
  c = test::base_config(chance(0.5));
  c.subnets.push_back({pfx("10.20.0.0/16"), "via-16", false, ip("198.51.100.253")});
  c.subnets.push_back({pfx("10.30.4.0/23"), "via-23", false, ip("198.51.100.252")});
  c.subnets.push_back({pfx("198.51.100.128/26"), "office-slice", false, std::nullopt});

  std::vector<config::Prefix> routed;
  for (const auto& s : c.subnets) routed.push_back(s.prefix);

  const std::vector<std::string> tags = {"t0", "t1", "t2", "t3", "t4", "t5"};
  for (int i = 0; i < 30; i++) {
    std::vector<std::string> t;
    for (const auto& tag : tags) {
      if (chance(0.3)) t.push_back(tag);
    }
    test::add_peer(c, "peer" + std::to_string(i), t);
  }

  auto random_inside = [&](const config::Prefix& p) {
    uint64_t size = uint64_t(p.broadcast()) - p.network() + 1;
    if (size > (1u << 16)) {  // keep /0 and /8 samples near the other subnets so flows hit them
      return ip("198.51.100.0") + uint32_t(rng() % 512);
    }
    return p.network() + uint32_t(rng() % size);
  };
  auto random_port_ranges = [&]() {
    std::vector<config::PortRange> out;
    size_t n = 1 + pick(3);
    for (size_t i = 0; i < n; i++) {
      uint16_t a = uint16_t(chance(0.1) ? 65535 : pick(100));
      uint16_t b = chance(0.5) ? a : uint16_t(std::min<size_t>(65535, a + pick(30)));
      if (chance(0.05)) {
        a = 0;
        b = 65535;
      }
      out.push_back({a, b});
    }
    return out;
  };

  size_t npol = 1 + pick(16);  // at most 16: the colouring can never run out of categories
  for (size_t p = 0; p < npol; p++) {
    config::Policy pol;
    pol.name = "pol" + std::to_string(p);
    pol.senders.push_back(tags[pick(tags.size())]);
    if (chance(0.4)) pol.senders.push_back(tags[pick(tags.size())]);
    size_t nsub = 1 + pick(3);
    for (size_t s = 0; s < nsub; s++) {
      config::Prefix sub = routed[pick(routed.size())];
      if (chance(0.3) && sub.len < 30) {  // a prefix inside a routed subnet, as policies may name
        uint8_t len = uint8_t(std::min<size_t>(32, std::max<int>(sub.len, 24) + pick(6)));
        config::Prefix inner{random_inside(sub), len};
        sub = config::Prefix{inner.network(), len};
        if (!std::any_of(routed.begin(), routed.end(), [&](const config::Prefix& r) { return r.contains(sub); })) {
          continue;
        }
      }
      pol.subnet_refs.push_back(config::to_string(sub));
      pol.subnets.push_back(sub);
    }
    if (pol.subnets.empty()) pol.subnets.push_back(routed[0]);
    if (chance(0.5)) {
      size_t nf = 1 + pick(4);
      for (size_t f = 0; f < nf; f++) {
        const config::Prefix& sub = pol.subnets[pick(pol.subnets.size())];
        uint32_t a = random_inside(sub), b = random_inside(sub);
        if (a > b) std::swap(a, b);
        switch (pick(3)) {
          case 0: pol.filter.push_back({a, a}); break;
          case 1: pol.filter.push_back({a, uint32_t(std::min<uint64_t>(b, uint64_t(a) + pick(40)))}); break;
          default: {
            uint8_t len = uint8_t(std::min<size_t>(32, std::max<int>(sub.len, 26) + pick(6)));
            config::Prefix blk{a, len};
            pol.filter.push_back({blk.network(), blk.broadcast()});
          }
        }
      }
    }
    size_t nrules = chance(0.1) ? 0 : 1 + pick(5);
    for (size_t r = 0; r < nrules; r++) {
      config::AclRule rule;
      rule.action = chance(0.5) ? config::AclAction::allow : config::AclAction::deny;
      size_t proto = pick(10);
      rule.protocol = proto == 0 ? config::Protocol::any
                      : proto < 5 ? config::Protocol::tcp
                      : proto < 8 ? config::Protocol::udp
                                  : config::Protocol::icmp;
      if ((rule.protocol == config::Protocol::tcp || rule.protocol == config::Protocol::udp) && chance(0.7)) {
        rule.ports = random_port_ranges();
      }
      pol.acl.push_back(rule);
    }
    c.policies.push_back(std::move(pol));
  }

  uint64_t salt = rng();
  rc.applies = [salt](const config::Peer& peer, const config::Policy& pol) {
    return (std::hash<std::string>()(peer.name + "/" + pol.name) ^ salt) % 5 != 0;
  };

  auto edges = [&](uint32_t first, uint32_t last) {
    for (uint32_t a : {first - 1, first, first + 1, last - 1, last, last + 1}) rc.interesting.push_back(a);
  };
  for (const auto& p : routed) edges(p.network(), p.broadcast());
  for (const auto& pol : c.policies) {
    for (const auto& s : pol.subnets) edges(s.network(), s.broadcast());
    for (const auto& f : pol.filter) edges(f.first, f.last);
  }
  for (int i = 0; i < 64; i++) rc.interesting.push_back(uint32_t(rng()));
  for (int i = 0; i < 64; i++) rc.interesting.push_back(ip("198.51.100.0") + uint32_t(rng() % 256));
  return rc;
}

Verdict from_explanation(const Explanation& e) {
  return Verdict{e.allow, e.policy_index < 0 ? kNoPolicy : uint16_t(e.policy_index),
                 e.rule < 0 ? kNoRule : uint16_t(e.rule)};
}

TEST(PolicyRandom, ClassifyAgreesWithReferenceAndExplain) {
  test::ensure_eal();
  std::mt19937_64 rng(2024);
  const uint8_t protos[] = {kProtoTcp, kProtoTcp, kProtoUdp, kProtoUdp, kProtoIcmp, 47, 0};
  size_t flows = 0, allowed = 0, denied_by_rule = 0, default_deny = 0;
  unsigned max_categories = 0;
  size_t split_groups = 0;  // seeds where some group's classes are not one run
  for (int seed = 0; seed < 40; seed++) {
    RandomCase rc = make_case(rng);
    std::string err;
    auto cp = CompiledPolicy::build(rc.cfg, rc.applies, uint64_t(seed), &err);
    ASSERT_TRUE(cp) << err;
    max_categories = std::max(max_categories, cp->stats().categories);
    split_groups += cp->stats().class_runs > cp->stats().groups;

    constexpr size_t kFlows = 2000;
    std::vector<FlowKey> keys(kFlows);
    std::vector<uint32_t> peers(kFlows);
    for (size_t i = 0; i < kFlows; i++) {
      peers[i] = uint32_t(rng() % rc.cfg.peers.size());
      uint16_t port = uint16_t(rng() % 4 == 0 ? rng() : rng() % 110);
      if (rng() % 50 == 0) port = 65535;
      keys[i] = FlowKey{cp->class_of(peers[i]), rc.interesting[rng() % rc.interesting.size()],
                        protos[rng() % std::size(protos)], port};
    }
    std::vector<Verdict> got(kFlows);
    // Bursts of varied sizes, one above kMaxBurst.
    const unsigned bursts[] = {1, 32, 64, 100, 7};
    for (size_t done = 0, b = 0; done < kFlows; b++) {
      unsigned n = unsigned(std::min<size_t>(bursts[b % std::size(bursts)], kFlows - done));
      cp->classify(&keys[done], n, &got[done]);
      done += n;
    }

    for (size_t i = 0; i < kFlows; i++) {
      const FlowKey& k = keys[i];
      Verdict want = test::reference_verdict(rc.cfg, rc.applies, peers[i], k.dst, k.proto, k.dport);
      Explanation e = cp->explain(peers[i], k.dst, k.proto, k.dport);
      ASSERT_EQ(got[i], want) << "seed " << seed << " peer " << peers[i] << " dst " << config::to_string(k.dst)
                              << " proto " << int(k.proto) << " dport " << k.dport << ": " << e.reason;
      ASSERT_EQ(from_explanation(e), want) << e.reason;
      flows++;
      allowed += want.allow;
      denied_by_rule += !want.allow && want.rule != kNoRule;
      default_deny += !want.allow && want.policy != kNoPolicy && want.rule == kNoRule;
    }
  }
  // The generator must exercise every outcome, not just "no policy".
  EXPECT_GT(allowed, flows / 20);
  EXPECT_GT(denied_by_rule, flows / 50);
  EXPECT_GT(default_deny, flows / 100);
  EXPECT_GE(max_categories, 8u);  // overlapping policies in several categories
  EXPECT_GT(split_groups, 0u);    // rules repeated over several class runs
  std::printf("random flows: %zu, allowed %zu, denied by rule %zu, default deny %zu\n", flows, allowed,
              denied_by_rule, default_deny);
}

}  // namespace
}  // namespace sluice::policy
