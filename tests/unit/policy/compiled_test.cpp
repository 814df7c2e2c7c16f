#include "controlplane/policy/compiled.h"

#include <gtest/gtest.h>

#include "tests/unit/policy/builder.h"
#include "tests/unit/policy/eal.h"
#include "tests/unit/policy/reference.h"

namespace sluice::policy {
namespace {

using test::add_peer;
using test::add_policy;
using test::base_config;
using test::ip;

class PolicyTest : public ::testing::Test {
 protected:
  void SetUp() override { test::ensure_eal(); }

  const CompiledPolicy& build(const AppliesFn& applies = {}) {
    std::string err;
    cp_ = CompiledPolicy::build(cfg_, applies, ++gen_, &err);
    if (!cp_) throw std::runtime_error("build: " + err);
    applies_ = applies;
    return *cp_;
  }

  // Classifies one flow of a configured peer and checks explain() and the reference agree.
  Verdict check(const std::string& peer, const std::string& dst, uint8_t proto, uint16_t dport = 0) {
    size_t i = 0;
    while (i < cfg_.peers.size() && cfg_.peers[i].name != peer) i++;
    if (i == cfg_.peers.size()) throw std::runtime_error("no peer " + peer);
    FlowKey k{cp_->class_of(uint32_t(i)), ip(dst), proto, dport};
    Verdict v;
    cp_->classify(&k, 1, &v);
    Explanation e = cp_->explain(uint32_t(i), ip(dst), proto, dport);
    EXPECT_EQ(e.allow, v.allow) << e.reason;
    EXPECT_EQ(e.policy_index, v.policy == kNoPolicy ? -1 : int(v.policy)) << e.reason;
    EXPECT_EQ(e.rule, v.rule == kNoRule ? -1 : int(v.rule)) << e.reason;
    EXPECT_EQ(test::reference_verdict(cfg_, applies_, i, ip(dst), proto, dport), v) << e.reason;
    last_ = e;
    return v;
  }
  bool allowed(const std::string& peer, const std::string& dst, uint8_t proto, uint16_t dport = 0) {
    return check(peer, dst, proto, dport).allow;
  }

  config::Config cfg_ = base_config();
  std::unique_ptr<CompiledPolicy> cp_;
  AppliesFn applies_;
  Explanation last_;
  uint64_t gen_ = 0;
};

TEST_F(PolicyTest, FirstMatchWithinPolicyWins) {
  add_peer(cfg_, "p", {"users"});
  add_policy(cfg_, "lab", {"users"}, {"203.0.113.0/24"}, {}, {"allow tcp 80", "deny tcp 80-90", "allow udp", "deny any"});
  build();
  EXPECT_EQ(check("p", "203.0.113.5", kProtoTcp, 80), (Verdict{true, 0, 0}));
  EXPECT_EQ(check("p", "203.0.113.5", kProtoTcp, 85), (Verdict{false, 0, 1}));
  EXPECT_EQ(check("p", "203.0.113.5", kProtoUdp, 85), (Verdict{true, 0, 2}));
  EXPECT_EQ(check("p", "203.0.113.5", kProtoIcmp), (Verdict{false, 0, 3}));
  EXPECT_EQ(last_.code, Reason::denied_by_rule);
  EXPECT_EQ(last_.rule_text, "deny any");
}

TEST_F(PolicyTest, DenyBeforeAllowAndPortsOnlyForTcpUdp) {
  add_peer(cfg_, "p", {"users"});
  add_policy(cfg_, "office", {"users"}, {"Menlo Park Office"}, {}, {"deny tcp 22,3389", "allow any"});
  build();
  EXPECT_FALSE(allowed("p", "198.51.100.7", kProtoTcp, 22));
  EXPECT_EQ(last_.reason, "denied by rule 1 (deny tcp 22,3389) of policy 'office', and no other policy allows");
  EXPECT_FALSE(allowed("p", "198.51.100.7", kProtoTcp, 3389));
  EXPECT_TRUE(allowed("p", "198.51.100.7", kProtoTcp, 23));
  EXPECT_TRUE(allowed("p", "198.51.100.7", kProtoUdp, 22));
  EXPECT_TRUE(allowed("p", "198.51.100.7", kProtoIcmp, 22));
  EXPECT_TRUE(allowed("p", "198.51.100.7", 47));  // GRE: only `any` rules match it
}

TEST_F(PolicyTest, DefaultDenyWhenNoRuleMatches) {
  add_peer(cfg_, "p", {"users"});
  add_policy(cfg_, "web", {"users"}, {"203.0.113.0/24"}, {}, {"allow tcp 443", "allow udp 53"});
  add_policy(cfg_, "nothing", {"users"}, {"203.0.113.128/25"}, {}, {});
  build();
  EXPECT_TRUE(allowed("p", "203.0.113.9", kProtoTcp, 443));
  EXPECT_EQ(check("p", "203.0.113.9", kProtoTcp, 80), (Verdict{false, 0, kNoRule}));
  EXPECT_EQ(last_.code, Reason::default_deny);
  EXPECT_EQ(check("p", "203.0.113.200", kProtoIcmp), (Verdict{false, 0, kNoRule}));
  EXPECT_EQ(last_.considered.size(), 2u);
}

TEST_F(PolicyTest, UnionAcrossPoliciesDenyDoesNotOverrideAllow) {
  add_peer(cfg_, "user", {"users"});
  add_peer(cfg_, "admin", {"users", "admins"});
  add_policy(cfg_, "no-ssh", {"users"}, {"203.0.113.0/24"}, {}, {"deny tcp 22", "allow any"});
  add_policy(cfg_, "ssh", {"admins"}, {"203.0.113.0/24"}, {}, {"allow tcp 22", "deny any"});
  build();
  EXPECT_EQ(check("user", "203.0.113.5", kProtoTcp, 22), (Verdict{false, 0, 0}));
  EXPECT_EQ(check("admin", "203.0.113.5", kProtoTcp, 22), (Verdict{true, 1, 0}));
  EXPECT_EQ(last_.policy, "ssh");
  // Policy 1 denies udp, policy 0 allows it: the allow wins.
  EXPECT_EQ(check("admin", "203.0.113.5", kProtoUdp, 53), (Verdict{true, 0, 1}));
  EXPECT_NE(cp_->class_of(0), cp_->class_of(1));
}

TEST_F(PolicyTest, SubnetFilterAddressRangeCidr) {
  add_peer(cfg_, "p", {"users"});
  add_policy(cfg_, "office-printers", {"users"}, {"198.51.100.0/24"},
             {"198.51.100.10", "198.51.100.20-198.51.100.29", "198.51.100.64/28"}, {"allow any"});
  build();
  for (const char* a : {"198.51.100.10", "198.51.100.20", "198.51.100.25", "198.51.100.29", "198.51.100.64",
                        "198.51.100.79"}) {
    EXPECT_TRUE(allowed("p", a, kProtoTcp, 631)) << a;
  }
  for (const char* a : {"198.51.100.9", "198.51.100.11", "198.51.100.19", "198.51.100.30", "198.51.100.63",
                        "198.51.100.80", "198.51.100.1"}) {
    EXPECT_EQ(check("p", a, kProtoTcp, 631), (Verdict{false, kNoPolicy, kNoRule})) << a;
    EXPECT_EQ(last_.code, Reason::outside_policies) << a;
  }
  // Three address ranges, one rule each, and no default deny behind `allow any`.
  EXPECT_EQ(cp_->stats().rte_rules, 3u);
}

TEST_F(PolicyTest, ShadowedRulesAndPortsEmitNothing) {
  add_peer(cfg_, "p", {"users"});
  // Rule 2 is shadowed by rule 1 entirely, rule 3 in part (port 80), rule 5 by rule 4 (icmp).
  add_policy(cfg_, "office", {"users"}, {"198.51.100.0/24"}, {},
             {"allow tcp 22,80", "deny tcp 22", "deny tcp 80,443", "allow icmp", "deny icmp"});
  build();
  // tcp 22, tcp 80 (rule 1), tcp 443 (rule 3), icmp (rule 4), default deny: one destination range.
  EXPECT_EQ(cp_->stats().rte_rules, 5u);
  EXPECT_EQ(check("p", "198.51.100.7", kProtoTcp, 22), (Verdict{true, 0, 0}));
  EXPECT_EQ(check("p", "198.51.100.7", kProtoTcp, 80), (Verdict{true, 0, 0}));
  EXPECT_EQ(check("p", "198.51.100.7", kProtoTcp, 443), (Verdict{false, 0, 2}));
  EXPECT_EQ(check("p", "198.51.100.7", kProtoTcp, 444), (Verdict{false, 0, kNoRule}));
  EXPECT_EQ(check("p", "198.51.100.7", kProtoIcmp, 0), (Verdict{true, 0, 3}));
  EXPECT_EQ(check("p", "198.51.100.7", kProtoUdp, 22), (Verdict{false, 0, kNoRule}));
}

TEST_F(PolicyTest, PeersWithSameTagsShareAClass) {
  add_peer(cfg_, "a", {"users"});
  add_peer(cfg_, "b", {"users", "unrelated"});
  add_peer(cfg_, "c", {"devs"});
  add_peer(cfg_, "d", {"users", "devs"});
  add_peer(cfg_, "e", {});
  add_policy(cfg_, "users-office", {"users"}, {"198.51.100.0/24"}, {}, {"allow any"});
  add_policy(cfg_, "devs-lab", {"devs"}, {"203.0.113.0/24"}, {}, {"allow tcp 22"});
  const auto& cp = build();
  EXPECT_EQ(cp.class_of(0), cp.class_of(1));
  EXPECT_NE(cp.class_of(0), cp.class_of(2));
  EXPECT_NE(cp.class_of(3), cp.class_of(0));
  EXPECT_NE(cp.class_of(3), cp.class_of(2));
  EXPECT_EQ(cp.class_of(4), 0u);
  EXPECT_EQ(cp.class_of(99), 0u);
  EXPECT_EQ(cp.class_count(), 4u);  // none, {0}, {1}, {0,1}
  EXPECT_EQ(cp.class_policies(cp.class_of(3)), (std::vector<uint16_t>{0, 1}));
  EXPECT_EQ(cp.find_class({0, 1}), cp.class_of(3));
  EXPECT_FALSE(cp.find_class({0, 1, 2}).has_value());

  EXPECT_TRUE(allowed("a", "198.51.100.5", kProtoTcp, 22));
  EXPECT_FALSE(allowed("a", "203.0.113.5", kProtoTcp, 22));
  EXPECT_FALSE(allowed("c", "198.51.100.5", kProtoTcp, 22));
  EXPECT_TRUE(allowed("c", "203.0.113.5", kProtoTcp, 22));
  EXPECT_TRUE(allowed("d", "198.51.100.5", kProtoTcp, 80));
  EXPECT_TRUE(allowed("d", "203.0.113.5", kProtoTcp, 22));
  EXPECT_FALSE(allowed("e", "198.51.100.5", kProtoTcp, 22));
  EXPECT_EQ(last_.code, Reason::no_policy_for_peer);
}

TEST_F(PolicyTest, NoAclMeansAllowAny) {
  // The loader turns an absent `acl:` into [allow any]; see LoaderExampleFromTheSpec too.
  add_peer(cfg_, "p", {"users"});
  add_policy(cfg_, "lab", {"users"}, {"203.0.113.0/24"}, {}, {"allow any"});
  build();
  for (uint8_t proto : {kProtoTcp, kProtoUdp, kProtoIcmp, uint8_t(47)}) {
    EXPECT_TRUE(allowed("p", "203.0.113.200", proto, 9999));
  }
}

TEST_F(PolicyTest, RequirementsPredicateRemovesPolicyFromClass) {
  add_peer(cfg_, "with-mfa", {"users"});
  add_peer(cfg_, "without-mfa", {"users"});
  cfg_.peers[0].attributes["mfa"] = true;
  add_policy(cfg_, "basic", {"users"}, {"198.51.100.0/24"}, {}, {"allow icmp"});
  add_policy(cfg_, "sensitive", {"users"}, {"203.0.113.0/24"}, {}, {"allow any"});
  cfg_.policies[1].require.attributes = {"mfa"};
  AppliesFn requirements = [](const config::Peer& peer, const config::Policy& pol) {
    for (const auto& a : pol.require.attributes) {
      auto it = peer.attributes.find(a);
      if (it == peer.attributes.end() || it->second != config::AttributeValue(true)) return false;
    }
    return true;
  };
  const auto& cp = build(requirements);
  EXPECT_NE(cp.class_of(0), cp.class_of(1));
  EXPECT_EQ(cp.class_policies(cp.class_of(1)), (std::vector<uint16_t>{0}));
  EXPECT_TRUE(allowed("with-mfa", "203.0.113.1", kProtoTcp, 443));
  EXPECT_FALSE(allowed("without-mfa", "203.0.113.1", kProtoTcp, 443));
  EXPECT_EQ(last_.code, Reason::outside_policies);
  EXPECT_TRUE(allowed("without-mfa", "198.51.100.1", kProtoIcmp));

  // The fact changes (e.g. over the control socket): the next generation has one class again.
  cfg_.peers[1].attributes["mfa"] = true;
  const auto& cp2 = build(requirements);
  EXPECT_EQ(cp2.class_of(0), cp2.class_of(1));
  EXPECT_TRUE(allowed("without-mfa", "203.0.113.1", kProtoTcp, 443));
}

TEST_F(PolicyTest, DefaultRouteAllowAllButSsh) {
  add_peer(cfg_, "p", {"users"});
  add_policy(cfg_, "internet", {"users"}, {"0.0.0.0/0"}, {}, {"deny tcp 22", "allow any"});
  const auto& cp = build();
  EXPECT_FALSE(allowed("p", "8.8.8.8", kProtoTcp, 22));
  EXPECT_TRUE(allowed("p", "8.8.8.8", kProtoTcp, 443));
  EXPECT_TRUE(allowed("p", "8.8.8.8", kProtoUdp, 22));
  EXPECT_FALSE(allowed("p", "198.51.100.20", kProtoTcp, 22));  // 0/0 holds the office too
  EXPECT_TRUE(allowed("p", "203.0.113.20", kProtoIcmp));
  const Route* r = cp.route(ip("8.8.8.8"));
  ASSERT_NE(r, nullptr);
  EXPECT_EQ(r->port, 0);
  EXPECT_EQ(r->via, ip("192.0.2.254"));
  EXPECT_TRUE(r->snat_underlay);
  EXPECT_EQ(r->snat_addr, ip("192.0.2.2"));
  EXPECT_EQ(cp.subnets()[r->subnet_index].name, "Internet");
  ASSERT_TRUE(last_.route.has_value());
}

TEST_F(PolicyTest, RoutesLanViaDefaultAndUnlistedLanPort) {
  cfg_ = base_config(false);
  config::Port lan2;
  lan2.name = "lan2";
  lan2.role = config::PortRole::lan;
  lan2.address = test::pfx("10.1.2.3/16");
  cfg_.dataplane.ports.push_back(lan2);
  cfg_.subnets.push_back({test::pfx("10.1.200.0/30"), "tiny", false, std::nullopt});
  add_peer(cfg_, "p", {"users"});
  add_policy(cfg_, "all", {"users"}, {"198.51.100.0/24", "203.0.113.0/24", "10.1.0.0/16"}, {}, {"allow any"});
  const auto& cp = build();

  const Route* lan = cp.route(ip("198.51.100.7"));
  ASSERT_NE(lan, nullptr);
  EXPECT_EQ(lan->port, 1);
  EXPECT_EQ(lan->via, 0u);
  EXPECT_FALSE(lan->snat_underlay);
  EXPECT_EQ(lan->snat_addr, ip("198.51.100.1"));
  EXPECT_EQ(cp.subnets()[lan->subnet_index].name, "Menlo Park Office");

  const Route* lab = cp.route(ip("203.0.113.77"));
  ASSERT_NE(lab, nullptr);
  EXPECT_EQ(lab->port, 1);
  EXPECT_EQ(lab->via, ip("198.51.100.254"));
  EXPECT_EQ(lab->snat_addr, ip("198.51.100.1"));
  EXPECT_EQ(cp.subnets()[lab->subnet_index].name, "Lab");

  const Route* unlisted = cp.route(ip("10.1.99.1"));
  ASSERT_NE(unlisted, nullptr);
  EXPECT_EQ(unlisted->port, 2);
  EXPECT_EQ(unlisted->via, 0u);
  EXPECT_EQ(unlisted->snat_addr, ip("10.1.2.3"));
  EXPECT_EQ(cp.subnets()[unlisted->subnet_index].name, "10.1.0.0/16");
  EXPECT_EQ(cp.subnets()[unlisted->subnet_index].config_index, -1);

  const Route* tiny = cp.route(ip("10.1.200.2"));  // longest prefix inside the LAN2 network
  ASSERT_NE(tiny, nullptr);
  EXPECT_EQ(cp.subnets()[tiny->subnet_index].name, "tiny");
  EXPECT_EQ(tiny->port, 2);

  EXPECT_EQ(cp.route(ip("8.8.8.8")), nullptr);
  EXPECT_FALSE(allowed("p", "8.8.8.8", kProtoTcp, 443));
  EXPECT_EQ(last_.code, Reason::no_route);

  uint32_t dsts[] = {ip("198.51.100.7"), ip("8.8.8.8"), ip("203.0.113.77"), ip("10.1.200.2"), ip("10.1.99.1")};
  const Route* out[5];
  cp.route_bulk(dsts, 5, out);
  for (int i = 0; i < 5; i++) EXPECT_EQ(out[i], cp.route(dsts[i])) << i;
}

TEST_F(PolicyTest, DisjointPoliciesShareCategorySlots) {
  // 40 policies for one tag: more than 16, but their destinations are disjoint.
  add_peer(cfg_, "p", {"users"});
  for (int i = 0; i < 40; i++) {
    std::string net = "203.0.113." + std::to_string(i * 4) + "/30";
    add_policy(cfg_, "pol" + std::to_string(i), {"users"}, {net}, {},
               {i % 2 ? "allow tcp " + std::to_string(1000 + i) : "deny udp", "allow icmp"});
  }
  const auto& cp = build();
  EXPECT_EQ(cp.stats().categories, 1u);
  for (int i = 0; i < 40; i++) {
    std::string a = "203.0.113." + std::to_string(i * 4 + 1);
    EXPECT_EQ(allowed("p", a, kProtoTcp, uint16_t(1000 + i)), i % 2 == 1) << i;
    EXPECT_TRUE(allowed("p", a, kProtoIcmp));
  }
}

TEST_F(PolicyTest, TooManyOverlappingPoliciesFailWithClearError) {
  add_peer(cfg_, "laptop-1", {"users"});
  for (int i = 0; i < 17; i++) {
    add_policy(cfg_, "pol" + std::to_string(i), {"users"}, {"203.0.113.0/24"}, {}, {"allow tcp " + std::to_string(i + 1)});
  }
  std::string err;
  EXPECT_EQ(CompiledPolicy::build(cfg_, {}, 1, &err), nullptr);
  EXPECT_NE(err.find("policy 'pol16' gets no rte_acl category"), std::string::npos) << err;
  EXPECT_NE(err.find("e.g. peer 'laptop-1'"), std::string::npos) << err;
  EXPECT_NE(err.find("'pol16'"), std::string::npos) << err;
  EXPECT_NE(err.find("'pol0'"), std::string::npos) << err;

  // Exactly 16 fit (16 categories).
  cfg_.policies.pop_back();
  const auto& cp = build();
  EXPECT_EQ(cp.stats().categories, 16u);
  for (int i = 0; i < 16; i++) EXPECT_EQ(check("laptop-1", "203.0.113.9", kProtoTcp, uint16_t(i + 1)), (Verdict{true, uint16_t(i), 0}));
  EXPECT_FALSE(allowed("laptop-1", "203.0.113.9", kProtoTcp, 17));
}

TEST_F(PolicyTest, UnroutedPolicySubnetIsABuildError) {
  cfg_ = base_config(false);
  add_policy(cfg_, "odd", {"users"}, {"10.0.0.0/8"}, {}, {"allow any"});
  std::string err;
  EXPECT_EQ(CompiledPolicy::build(cfg_, {}, 1, &err), nullptr);
  EXPECT_EQ(err, "policy 'odd': subnet 10.0.0.0/8 is not routed by this gateway");
}

TEST_F(PolicyTest, EmptyConfigurationDeniesEverything) {
  add_peer(cfg_, "p", {"users"});
  const auto& cp = build();
  EXPECT_EQ(cp.stats().rte_rules, 0u);
  EXPECT_EQ(check("p", "198.51.100.2", kProtoTcp, 1), (Verdict{false, kNoPolicy, kNoRule}));
}

TEST_F(PolicyTest, GenerationsCoexistAndLargeBurstsChunk) {
  add_peer(cfg_, "p", {"users"});
  add_policy(cfg_, "web", {"users"}, {"203.0.113.0/24"}, {}, {"allow tcp 80"});
  std::string err;
  auto g1 = CompiledPolicy::build(cfg_, {}, 41, &err);
  ASSERT_TRUE(g1) << err;
  cfg_.policies[0].acl = {test::rule("allow tcp 443")};
  auto g2 = CompiledPolicy::build(cfg_, {}, 42, &err);  // same config shape: names must not clash
  ASSERT_TRUE(g2) << err;
  EXPECT_EQ(g1->generation(), 41u);
  EXPECT_EQ(g2->generation(), 42u);
  EXPECT_GT(g2->memory_bytes(), 0u);
  EXPECT_EQ(g2->stats().classes, 2u);
  EXPECT_EQ(g2->stats().acl_rules, 1u);

  std::vector<FlowKey> keys(150);
  for (size_t i = 0; i < keys.size(); i++) {
    keys[i] = FlowKey{1, ip("203.0.113.1") + uint32_t(i % 7), kProtoTcp, uint16_t(i % 2 ? 80 : 443)};
  }
  std::vector<Verdict> v1(keys.size()), v2(keys.size());
  g1->classify(keys.data(), unsigned(keys.size()), v1.data());
  g2->classify(keys.data(), unsigned(keys.size()), v2.data());
  for (size_t i = 0; i < keys.size(); i++) {
    EXPECT_EQ(v1[i].allow, i % 2 == 1) << i;
    EXPECT_EQ(v2[i].allow, i % 2 == 0) << i;
  }
}

}  // namespace
}  // namespace sluice::policy
