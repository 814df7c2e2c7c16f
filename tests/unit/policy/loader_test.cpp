// A configuration as the loader reads it (gateway.yaml), compiled: the spec's policy shapes,
// an absent `acl:` and the default route.
#include <gtest/gtest.h>
#include <sodium.h>
#include <stdlib.h>

#include <filesystem>
#include <fstream>

#include "controlplane/config/keys.h"
#include "controlplane/policy/compiled.h"
#include "tests/unit/policy/builder.h"
#include "tests/unit/policy/eal.h"
#include "tests/unit/policy/reference.h"

namespace sluice::policy {
namespace {

using test::ip;

std::string random_key_text() {
  if (sodium_init() < 0) throw std::runtime_error("sodium_init");
  config::Key k;
  randombytes_buf(k.data(), k.size());
  return config::encode_key(k);
}

constexpr const char* kYaml = R"(
gateway:
  private_key_file: gateway.key
  virtual_address: 100.64.0.1
dataplane:
  ports:
    - {name: wan, role: underlay, device: "net_null0", address: 192.0.2.2/24, gateway: 192.0.2.254}
    - {name: lan, role: lan, device: "net_null1", address: 198.51.100.1/24}
subnets:
  - {prefix: 198.51.100.0/24, name: Menlo Park Office, preferred: true}
  - {prefix: 203.0.113.0/24, name: Lab, via: 198.51.100.254}
  - {prefix: 0.0.0.0/0, name: Internet}
peers:
  - {name: laptop-1, public_key: "PEER1", virtual_address: 100.64.0.2, tags: [users, devs], attributes: {mfa: true}}
  - {name: laptop-2, public_key: "PEER2", virtual_address: 100.64.0.3, tags: [users]}
  - {name: kiosk, public_key: "PEER3", virtual_address: 100.64.0.4, tags: [kiosks]}
policies:
  - name: office-printers
    senders: [users]
    subnets: [Menlo Park Office]
    filter: [198.51.100.10, 198.51.100.20-198.51.100.29, 198.51.100.64/28]
    acl:
      - {action: deny, protocol: tcp, ports: [22]}
      - {action: allow, protocol: any}
    require:
      attributes: [mfa]
  - name: lab
    senders: [devs]
    subnets: [Lab, 198.51.100.128/25]
  - name: internet-but-ssh
    senders: [users, kiosks]
    subnets: [Internet]
    acl:
      - {action: deny, protocol: tcp, ports: [22]}
      - {action: allow, protocol: any}
)";

TEST(PolicyLoader, CompilesWhatTheLoaderReads) {
  test::ensure_eal();
  std::string dir = (std::filesystem::temp_directory_path() / "sluice-policy-XXXXXX").string();
  ASSERT_NE(mkdtemp(dir.data()), nullptr);
  std::ofstream(dir + "/gateway.key") << random_key_text() << "\n";
  std::string yaml = kYaml;
  for (const char* k : {"PEER1", "PEER2", "PEER3"}) {
    config::Key priv{};
    randombytes_buf(priv.data(), priv.size());
    yaml.replace(yaml.find(k), 5, config::encode_key(*config::public_key_from_private(priv)));
  }
  config::LoadResult r = config::load_string(yaml, "gateway.yaml", dir);
  std::filesystem::remove_all(dir);
  ASSERT_TRUE(r.config) << r.errors[0].to_string();
  const config::Config& cfg = *r.config;
  ASSERT_EQ(cfg.policies[1].acl.size(), 1u);  // absent acl = [allow any]

  // Trust requirements as the control thread would evaluate them (attributes only here).
  AppliesFn requirements = [](const config::Peer& peer, const config::Policy& pol) {
    for (const auto& a : pol.require.attributes) {
      auto it = peer.attributes.find(a);
      if (it == peer.attributes.end() || it->second != config::AttributeValue(true)) return false;
    }
    return true;
  };
  std::string err;
  auto cp = CompiledPolicy::build(cfg, requirements, 7, &err);
  ASSERT_TRUE(cp) << err;
  // none, {0,1,2} (laptop-1), {2} (laptop-2 without mfa, kiosk), and the combinations a change of
  // mfa could need: {1,2} (laptop-1 without), {0,2} (laptop-2 with).
  EXPECT_EQ(cp->stats().classes, 5u);
  EXPECT_EQ(cp->class_policies(cp->class_of(0)), (std::vector<uint16_t>{0, 1, 2}));
  EXPECT_EQ(cp->class_policies(*cp->class_with(0, {false})), (std::vector<uint16_t>{1, 2}));
  EXPECT_EQ(cp->class_policies(*cp->class_with(1, {true})), (std::vector<uint16_t>{0, 2}));
  EXPECT_EQ(cp->class_of(1), cp->class_of(2));

  struct Case {
    uint32_t peer;
    const char* dst;
    uint8_t proto;
    uint16_t port;
    bool allow;
    Reason code;
  } cases[] = {
      {0, "198.51.100.25", kProtoTcp, 631, true, Reason::allowed_by_rule},
      {0, "198.51.100.25", kProtoTcp, 22, false, Reason::denied_by_rule},  // office denies, Internet denies
      {0, "198.51.100.30", kProtoTcp, 631, true, Reason::allowed_by_rule},  // Internet (0/0) allows
      {0, "198.51.100.200", kProtoTcp, 22, true, Reason::allowed_by_rule},  // lab (allow any) wins
      {1, "198.51.100.25", kProtoTcp, 22, false, Reason::denied_by_rule},   // no mfa: Internet decides
      {1, "203.0.113.9", kProtoUdp, 53, true, Reason::allowed_by_rule},
      {2, "8.8.8.8", kProtoTcp, 22, false, Reason::denied_by_rule},
      {2, "8.8.8.8", kProtoTcp, 443, true, Reason::allowed_by_rule},
  };
  for (const Case& c : cases) {
    FlowKey k{cp->class_of(c.peer), ip(c.dst), c.proto, c.port};
    Verdict v;
    cp->classify(&k, 1, &v);
    Explanation e = cp->explain(c.peer, k.dst, c.proto, c.port);
    EXPECT_EQ(v.allow, c.allow) << c.dst << " " << e.reason;
    EXPECT_EQ(e.allow, c.allow) << e.reason;
    EXPECT_EQ(e.code, c.code) << e.reason;
    EXPECT_EQ(test::reference_verdict(cfg, requirements, c.peer, k.dst, c.proto, c.port), v) << e.reason;
  }
  Explanation e = cp->explain(0, ip("198.51.100.200"), kProtoTcp, 22);
  EXPECT_EQ(e.policy, "lab");
  EXPECT_EQ(e.reason, "allowed by rule 1 (allow any) of policy 'lab'");
  ASSERT_EQ(e.considered.size(), 3u);
  EXPECT_EQ(e.considered[0], "office-printers: destination outside its subnets and filter");
  EXPECT_EQ(e.considered[2], "internet-but-ssh: rule 1 (deny tcp 22) matches");
  EXPECT_EQ(cp->explain(2, ip("8.8.8.8"), kProtoTcp, 22).reason,
            "denied by rule 1 (deny tcp 22) of policy 'internet-but-ssh', and no other policy allows");
  EXPECT_EQ(cp->explain(9, ip("8.8.8.8"), kProtoTcp, 22).code, Reason::unknown_peer);
}

}  // namespace
}  // namespace sluice::policy
