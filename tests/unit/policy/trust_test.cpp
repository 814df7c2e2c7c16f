// Trust requirements: evaluation against a peer's facts, attestations with expiry, the classes
// CompiledPolicy precomputes for every combination, re-pointing peers without a rebuild, and
// what explain says when a requirement is what denies.
#include "controlplane/policy/trust.h"

#include <gtest/gtest.h>

#include <chrono>
#include <iostream>

#include "controlplane/policy/compiled.h"
#include "tests/unit/policy/builder.h"
#include "tests/unit/policy/eal.h"
#include "tests/unit/policy/reference.h"

namespace sluice::policy {
namespace {

using test::add_peer;
using test::add_policy;
using test::base_config;
using test::ip;
using test::pfx;

constexpr int64_t kSec = 1'000'000'000;

TEST(Attestations, ExpireRevokeAndNextExpiry) {
  Attestations a;
  EXPECT_EQ(a.next_expiry(), INT64_MAX);
  a.set("laptop", "mfa", 100 * kSec, 103 * kSec);
  a.set("laptop", "managed", 100 * kSec, 0);
  a.set("phone", "mfa", 100 * kSec, 110 * kSec);
  EXPECT_EQ(a.next_expiry(), 103 * kSec);
  EXPECT_TRUE(a.holds("laptop", "mfa", 102 * kSec));
  EXPECT_FALSE(a.holds("laptop", "mfa", 103 * kSec));  // expiry is exclusive even before expire()
  EXPECT_TRUE(a.expire(102 * kSec).empty());
  auto gone = a.expire(103 * kSec);
  ASSERT_EQ(gone.size(), 1u);
  EXPECT_EQ(gone[0], (Attestations::Key{"laptop", "mfa"}));
  EXPECT_EQ(a.next_expiry(), 110 * kSec);
  EXPECT_TRUE(a.holds("laptop", "managed", 1'000'000 * kSec));  // no expiry
  EXPECT_TRUE(a.revoke("laptop", "managed"));
  EXPECT_FALSE(a.revoke("laptop", "managed"));
  EXPECT_FALSE(a.holds("laptop", "managed", 100 * kSec));
  // Attesting again replaces the expiry.
  a.set("phone", "mfa", 105 * kSec, 0);
  EXPECT_EQ(a.next_expiry(), INT64_MAX);
  EXPECT_TRUE(a.expire(200 * kSec).empty());
}

TEST(Requirements, SourceIpsAndAttributes) {
  config::Peer peer;
  peer.name = "laptop";
  peer.attributes["managed"] = true;
  peer.attributes["mfa_text"] = std::string("true");  // only the boolean counts
  Attestations att;
  PeerFacts f{&peer, ip("192.0.2.10"), &att, 50 * kSec};

  config::TrustRequirements none;
  EXPECT_TRUE(requirement_empty(none));
  EXPECT_TRUE(requirement_holds(none, f));
  EXPECT_EQ(requirement_unmet(none, f), "");

  config::TrustRequirements src;
  src.source_ips = {pfx("192.0.2.0/28"), pfx("203.0.113.0/24")};
  EXPECT_TRUE(requirement_holds(src, f));
  f.endpoint_addr = ip("192.0.2.20");
  EXPECT_FALSE(requirement_holds(src, f));
  EXPECT_EQ(requirement_unmet(src, f),
            "requires source_ips [192.0.2.0/28, 203.0.113.0/24]; peer endpoint 192.0.2.20 is outside");
  f.endpoint_addr = std::nullopt;
  EXPECT_FALSE(requirement_holds(src, f));
  EXPECT_EQ(requirement_unmet(src, f), "requires source_ips [192.0.2.0/28, 203.0.113.0/24]; peer endpoint is unknown");
  f.endpoint_addr = ip("203.0.113.7");
  EXPECT_TRUE(requirement_holds(src, f));

  config::TrustRequirements attrs;
  attrs.attributes = {"managed", "mfa"};
  EXPECT_FALSE(requirement_holds(attrs, f));
  EXPECT_EQ(requirement_unmet(attrs, f), "requires attributes [managed, mfa]; [mfa] is not attested for peer 'laptop'");
  att.set("laptop", "mfa", 50 * kSec, 53 * kSec);
  EXPECT_TRUE(requirement_holds(attrs, f));
  f.now_ns = 53 * kSec;
  EXPECT_FALSE(requirement_holds(attrs, f));
  att.set("laptop", "mfa", 53 * kSec, 0);
  EXPECT_TRUE(requirement_holds(attrs, f));
  config::TrustRequirements text;
  text.attributes = {"mfa_text"};
  EXPECT_FALSE(requirement_holds(text, f));

  config::TrustRequirements both;
  both.source_ips = {pfx("192.0.2.10/32")};
  both.attributes = {"posture"};
  EXPECT_EQ(requirement_text(both), "source_ips [192.0.2.10/32], attributes [posture]");
  EXPECT_EQ(requirement_unmet(both, f),
            "requires source_ips [192.0.2.10/32]; peer endpoint 203.0.113.7 is outside; and requires attributes "
            "[posture]; [posture] is not attested for peer 'laptop'");
}

TEST(Requirements, DurationsAndTimes) {
  EXPECT_EQ(parse_duration("15m"), 15 * 60 * kSec);
  EXPECT_EQ(parse_duration("3s"), 3 * kSec);
  EXPECT_EQ(parse_duration("1h30m"), 90 * 60 * kSec);
  EXPECT_EQ(parse_duration("500ms"), kSec / 2);
  EXPECT_EQ(parse_duration("2d"), 2 * 86400 * kSec);
  for (const char* bad : {"", "15", "m", "0s", "-3s", "3x", "1.5h", "99999999999999h"}) {
    EXPECT_FALSE(parse_duration(bad).has_value()) << bad;
  }
  EXPECT_EQ(parse_rfc3339("1970-01-01T00:00:00Z"), 0);
  EXPECT_EQ(parse_rfc3339("2026-11-21T23:00:00Z"), int64_t(1795302000) * kSec);
  EXPECT_EQ(parse_rfc3339("2026-11-22T00:00:00+01:00"), int64_t(1795302000) * kSec);
  EXPECT_EQ(parse_rfc3339("2026-11-21t22:30:00.25-00:30"), int64_t(1795302000) * kSec + kSec / 4);
  for (const char* bad : {"", "2026-11-21", "2026-11-21T23:00:00", "2026-13-01T00:00:00Z", "2026-02-31T00:00:00Z",
                          "2026-11-21T23:00:00Zx", "2026-11-21T23:00:00+0100", "2026-11-21T24:00:00Z"}) {
    EXPECT_FALSE(parse_rfc3339(bad).has_value()) << bad;
  }
  EXPECT_EQ(format_rfc3339(int64_t(1795302000) * kSec + 7), "2026-11-21T23:00:00Z");
}

class TrustClassTest : public ::testing::Test {
 protected:
  void SetUp() override {
    test::ensure_eal();
    add_peer(cfg_, "laptop", {"users"});
    add_peer(cfg_, "phone", {"users"});
    add_peer(cfg_, "printer-admin", {"admins"});
    add_policy(cfg_, "basic", {"users"}, {"198.51.100.0/24"}, {}, {"allow icmp"});
    add_policy(cfg_, "office", {"users"}, {"198.51.100.0/24"}, {}, {"allow any"});
    add_policy(cfg_, "lab", {"users", "admins"}, {"203.0.113.0/24"}, {}, {"allow tcp 22", "deny any"});
    cfg_.policies[1].require.source_ips = {pfx("192.0.2.10/32")};
    cfg_.policies[2].require.attributes = {"mfa"};
  }

  std::unique_ptr<CompiledPolicy> build(const AppliesFn& applies = {}) {
    std::string err;
    auto cp = CompiledPolicy::build(cfg_, applies, ++gen_, &err);
    if (!cp) throw std::runtime_error("build: " + err);
    return cp;
  }

  static bool allowed(const CompiledPolicy& cp, uint32_t peer, const std::string& dst, uint8_t proto, uint16_t port) {
    FlowKey k = cp.flow_key(peer, ip(dst), proto, port);
    Verdict v;
    cp.classify(&k, 1, &v);
    return v.allow;
  }

  config::Config cfg_ = base_config();
  uint64_t gen_ = 0;
};

TEST_F(TrustClassTest, EveryCombinationHasAClassAndMatchesARebuild) {
  auto cp = build();
  ASSERT_EQ(cp->requirements().size(), 2u);
  EXPECT_EQ(cp->policy_requirement(0), -1);
  EXPECT_EQ(cp->policy_requirement(1), 0);
  EXPECT_EQ(cp->policy_requirement(2), 1);
  EXPECT_EQ(cp->peer_requirements(0), (std::vector<uint16_t>{0, 1}));
  EXPECT_EQ(cp->peer_requirements(2), (std::vector<uint16_t>{1}));
  // Users: 4 combinations; admins: lab or nothing (class 0). Plus class 0.
  EXPECT_EQ(cp->class_count(), 1u + 4u + 1u);

  for (int mask = 0; mask < 4; mask++) {
    const std::vector<bool> held{(mask & 1) != 0, (mask & 2) != 0};
    // The same facts given to a build as `applies`: same policies, hence same decisions.
    AppliesFn applies = [&](const config::Peer&, const config::Policy& pol) {
      return pol.require.source_ips.empty() ? (pol.require.attributes.empty() || held[1]) : held[0];
    };
    auto rebuilt = build(applies);
    for (uint32_t peer = 0; peer < 3; peer++) {
      auto cls = cp->class_with(peer, held);
      ASSERT_TRUE(cls.has_value());
      EXPECT_EQ(cp->class_policies(*cls), rebuilt->class_policies(rebuilt->class_of(peer))) << mask << " " << peer;
    }
  }
}

TEST_F(TrustClassTest, WithClassesRepointsPeersAndSharesTables) {
  auto cp = build();  // no `applies`: every policy applies to its tags
  EXPECT_TRUE(allowed(*cp, 0, "198.51.100.10", kProtoTcp, 443));
  EXPECT_TRUE(allowed(*cp, 0, "203.0.113.5", kProtoTcp, 22));

  // laptop roams outside 192.0.2.10/32 and has no mfa; phone keeps everything.
  std::vector<uint32_t> classes{*cp->class_with(0, {false, false}), cp->class_of(1), cp->class_of(2)};
  auto next = cp->with_classes(classes, 77);
  EXPECT_EQ(next->generation(), 77u);
  EXPECT_EQ(next->class_of(0), classes[0]);
  EXPECT_EQ(next->class_policies(next->class_of(0)), (std::vector<uint16_t>{0}));
  EXPECT_EQ(next->stats().rte_rules, cp->stats().rte_rules);
  cp.reset();  // the old generation goes (RCU retire): the tables must stay for the new one
  EXPECT_FALSE(allowed(*next, 0, "198.51.100.10", kProtoTcp, 443));
  EXPECT_TRUE(allowed(*next, 0, "198.51.100.10", kProtoIcmp, 0));  // basic has no requirement
  EXPECT_FALSE(allowed(*next, 0, "203.0.113.5", kProtoTcp, 22));
  EXPECT_TRUE(allowed(*next, 1, "198.51.100.10", kProtoTcp, 443));
  EXPECT_TRUE(allowed(*next, 2, "203.0.113.5", kProtoTcp, 22));

  // Back again, from the re-pointed generation.
  auto back = next->with_classes({*next->class_with(0, {true, true}), next->class_of(1), next->class_of(2)}, 78);
  next.reset();
  EXPECT_TRUE(allowed(*back, 0, "198.51.100.10", kProtoTcp, 443));
  EXPECT_TRUE(allowed(*back, 0, "203.0.113.5", kProtoTcp, 22));
  // A peer with no precomputed combination left out: unknown peers get nullopt.
  EXPECT_FALSE(back->class_with(9, {true, true}).has_value());
}

TEST_F(TrustClassTest, BuildStartsFromApplies) {
  config::Peer& laptop = cfg_.peers[0];
  laptop.attributes["mfa"] = true;
  Attestations att;
  AppliesFn applies = [&](const config::Peer& peer, const config::Policy& pol) {
    PeerFacts f{&peer, peer.name == "laptop" ? std::optional<uint32_t>(ip("192.0.2.10")) : std::nullopt, &att, 0};
    return requirement_holds(pol.require, f);
  };
  auto cp = build(applies);
  EXPECT_EQ(cp->class_policies(cp->class_of(0)), (std::vector<uint16_t>{0, 1, 2}));
  EXPECT_EQ(cp->class_policies(cp->class_of(1)), (std::vector<uint16_t>{0}));
  EXPECT_EQ(cp->class_of(2), 0u);
  EXPECT_EQ(test::reference_verdict(cfg_, applies, 1, ip("198.51.100.10"), kProtoTcp, 80).allow, false);
}

TEST_F(TrustClassTest, ExplainNamesTheRequirementThatDenies) {
  auto cp = build();
  auto roamed = cp->with_classes({*cp->class_with(0, {false, false}), cp->class_of(1), cp->class_of(2)}, 2);
  config::Peer& laptop = cfg_.peers[0];
  Attestations att;
  PeerFacts f{&laptop, ip("192.0.2.20"), &att, 0};
  UnmetFn unmet = [&](const config::TrustRequirements& r) { return requirement_unmet(r, f); };

  Explanation e = roamed->explain(0, ip("198.51.100.10"), kProtoTcp, 443, unmet);
  EXPECT_FALSE(e.allow);
  EXPECT_EQ(e.code, Reason::requirement_unmet);
  EXPECT_EQ(e.reason,
            "denied: policy 'office' would allow it, but it requires source_ips [192.0.2.10/32]; peer endpoint "
            "192.0.2.20 is outside");
  EXPECT_NE(std::find(e.considered.begin(), e.considered.end(),
                      "office: not applied: requires source_ips [192.0.2.10/32]; peer endpoint 192.0.2.20 is outside"),
            e.considered.end());

  // The lab policy would deny tcp 80 anyway: its requirement is listed, not blamed.
  e = roamed->explain(0, ip("203.0.113.5"), kProtoTcp, 80, unmet);
  EXPECT_EQ(e.code, Reason::outside_policies);
  EXPECT_EQ(e.considered, (std::vector<std::string>{
                              "basic: destination outside its subnets and filter",
                              "lab: not applied: requires attributes [mfa]; [mfa] is not attested for peer 'laptop'"}));
  e = roamed->explain(0, ip("203.0.113.5"), kProtoTcp, 22, unmet);
  EXPECT_EQ(e.code, Reason::requirement_unmet);
  EXPECT_EQ(e.reason, "denied: policy 'lab' would allow it, but it requires attributes [mfa]; [mfa] is not attested "
                      "for peer 'laptop'");

  // Allowed flows and explain without `unmet` are unchanged.
  e = roamed->explain(0, ip("198.51.100.10"), kProtoIcmp, 0, unmet);
  EXPECT_TRUE(e.allow);
  EXPECT_EQ(e.code, Reason::allowed_by_rule);
  e = roamed->explain(0, ip("198.51.100.10"), kProtoTcp, 443);
  EXPECT_EQ(e.code, Reason::default_deny);
  EXPECT_EQ(std::string(to_string(Reason::requirement_unmet)), "requirement_unmet");
}

TEST_F(TrustClassTest, ManyRequirementsOnOnePeerAreNotEnumerated) {
  for (int i = 0; i < 8; i++) {
    add_policy(cfg_, "extra" + std::to_string(i), {"users"}, {"203.0.113.0/24"}, {}, {"allow any"});
    cfg_.policies.back().require.attributes = {"a" + std::to_string(i)};
  }
  auto cp = build();
  EXPECT_EQ(cp->peer_requirements(0).size(), 10u);
  // Only the peers' own sets: users apply everything, admins lab. A missing combination asks
  // for a rebuild.
  std::vector<bool> held(cp->requirements().size(), true);
  EXPECT_TRUE(cp->class_with(0, held).has_value());
  held[5] = false;
  EXPECT_FALSE(cp->class_with(0, held).has_value());
}

// What a revocation costs: re-pointing one peer (with_classes) against building again. The
// figures are printed for RESULTS-style reporting; the assertion only needs an order of magnitude.
TEST_F(TrustClassTest, RepointingIsCheaperThanARebuild) {
  cfg_ = base_config();
  for (int k = 0; k < 200; k++) {
    add_policy(cfg_, "p" + std::to_string(k), {"t" + std::to_string(k % 10)}, {"203.0.113.0/24"},
               {"203.0.113." + std::to_string(k % 250)},
               {"deny tcp 22", "allow tcp 80,443,8000-8100", "allow udp 53", "deny udp", "allow icmp"});
    if (k % 3 == 0) cfg_.policies.back().require.attributes = {"mfa"};
    if (k % 3 == 1) cfg_.policies.back().require.source_ips = {pfx("192.0.2.0/24")};
  }
  for (int i = 0; i < 1000; i++) add_peer(cfg_, "peer" + std::to_string(i), {"t" + std::to_string(i % 10)});
  auto t0 = std::chrono::steady_clock::now();
  auto cp = build();
  const double build_us = std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count();
  std::vector<uint32_t> classes;
  for (uint32_t i = 0; i < 1000; i++) classes.push_back(cp->class_of(i));
  t0 = std::chrono::steady_clock::now();
  classes[7] = *cp->class_with(7, {false, true});
  auto next = cp->with_classes(classes, 99);
  const double repoint_us = std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count();
  std::cout << "[ figures  ] 200 policies, 1000 peers, " << cp->stats().rte_rules << " rte rules, "
            << cp->class_count() << " classes: build " << build_us << " us, re-point one peer " << repoint_us
            << " us\n";
  EXPECT_NE(next->class_of(7), cp->class_of(7));
  EXPECT_LT(repoint_us * 5, build_us);
}

}  // namespace
}  // namespace sluice::policy
