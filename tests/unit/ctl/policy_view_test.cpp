// What `sluicectl policies` and the "Gateway for" / "ACLs" lines of `sluicectl status` are built from,
// and how sluicectl prints them.
#include "controlplane/policy_view.h"

#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "controlplane/ctl/format.h"

namespace sluice::cp {
namespace {

using nlohmann::json;

config::Prefix prefix(const char* text) { return *config::parse_prefix(text); }
uint32_t addr(const char* text) { return *config::parse_ipv4(text); }

// Two subnets; printers (users, filtered, ordered ACL with trust requirements), lab (devs, whole subnet,
// default allow-any) and nothing (users, an empty ACL).
config::Config sample_config() {
  config::Config c;
  config::Policy printers;
  printers.name = "printers";
  printers.senders = {"users"};
  printers.subnet_refs = {"Office LAN"};
  printers.subnets = {prefix("198.51.100.0/24")};
  printers.filter = {{addr("198.51.100.10"), addr("198.51.100.10")},
                     {addr("198.51.100.20"), addr("198.51.100.29")},
                     {addr("198.51.100.64"), addr("198.51.100.79")}};
  printers.acl = {{config::AclAction::deny, config::Protocol::tcp, {{22, 22}}},
                  {config::AclAction::allow, config::Protocol::tcp, {{80, 80}, {9100, 9100}}},
                  {config::AclAction::allow, config::Protocol::udp, {{161, 162}}},
                  {config::AclAction::allow, config::Protocol::icmp, {}}};
  printers.require.source_ips = {prefix("192.0.2.0/24")};
  printers.require.attributes = {"mfa"};
  config::Policy lab;
  lab.name = "lab";
  lab.senders = {"devs"};
  lab.subnet_refs = {"203.0.113.0/24", "Office LAN"};
  lab.subnets = {prefix("203.0.113.0/24"), prefix("198.51.100.0/24")};
  lab.acl = {{config::AclAction::allow, config::Protocol::any, {}}};
  lab.gateway_priority = config::GatewayPriority::ordered;
  config::Policy nothing;
  nothing.name = "nothing";
  nothing.senders = {"users"};
  nothing.subnet_refs = {"Office LAN"};
  nothing.subnets = {prefix("198.51.100.0/24")};
  c.policies = {printers, lab, nothing};
  return c;
}

TEST(RangeText, AddressesBlocksAndRanges) {
  EXPECT_EQ(range_text({addr("198.51.100.10"), addr("198.51.100.10")}), "198.51.100.10");
  EXPECT_EQ(range_text({addr("198.51.100.64"), addr("198.51.100.79")}), "198.51.100.64/28");
  EXPECT_EQ(range_text({addr("198.51.100.20"), addr("198.51.100.29")}), "198.51.100.20-198.51.100.29");
  EXPECT_EQ(range_text({addr("198.51.100.8"), addr("198.51.100.23")}), "198.51.100.8-198.51.100.23");
  EXPECT_EQ(range_text({0, 0xFFFFFFFF}), "0.0.0.0/0");
  EXPECT_EQ(range_text({addr("198.51.100.0"), addr("198.51.100.1")}), "198.51.100.0/31");
}

TEST(GatewayFor, FiltersElseSubnetsWithoutRepeats) {
  const config::Config c = sample_config();
  EXPECT_EQ(gateway_for(c, {0}),
            (json{"198.51.100.10", "198.51.100.20-198.51.100.29", "198.51.100.64/28"}));
  EXPECT_EQ(gateway_for(c, {1, 2}), (json{"203.0.113.0/24", "198.51.100.0/24 (Office LAN)"}));
  EXPECT_EQ(gateway_for(c, {}), json::array());
  EXPECT_EQ(gateway_for(c, {7}), json::array());  // an index the configuration lacks: ignored
}

TEST(PeerAcls, RulesOfTheAppliedPoliciesInOrder) {
  const config::Config c = sample_config();
  const json acls = peer_acls(c, {0, 1, 2});
  ASSERT_EQ(acls.size(), 5u);  // 4 of printers, 1 of lab, none of nothing
  EXPECT_EQ(acls[0], (json{{"policy", "printers"}, {"index", 0}, {"action", "deny"}, {"protocol", "tcp"},
                           {"ports", {"22"}}, {"from", "peer"}, {"to", "printers"}}));
  EXPECT_EQ(acls[2]["ports"], (json{"161-162"}));
  EXPECT_FALSE(acls[3].contains("ports"));
  EXPECT_EQ(acls[4]["policy"], "lab");
  EXPECT_EQ(acls[4]["index"], 0);
}

TEST(PoliciesView, PeersAppliedAndHeldBack) {
  const config::Config c = sample_config();
  const std::vector<PeerRef> peers = {{"laptop-1", 0, {"users"}}, {"dev-box", 1, {"devs", "users"}},
                                      {"phone", 2, {"guests"}}};
  // laptop-1 fails printers' trust requirements; dev-box passes them.
  const auto applied = [](uint32_t id) -> std::vector<uint16_t> {
    if (id == 0) return {2};
    if (id == 1) return {0, 1, 2};
    return {};
  };
  const json v = policies_view(c, peers, applied);
  ASSERT_EQ(v["policies"].size(), 3u);
  const json& printers = v["policies"][0];
  EXPECT_EQ(printers["index"], 0);
  EXPECT_EQ(printers["name"], "printers");
  EXPECT_EQ(printers["senders"], (json{"users"}));
  EXPECT_EQ(printers["subnets"], (json{{{"name", "Office LAN"}, {"prefix", "198.51.100.0/24"}}}));
  EXPECT_EQ(printers["filter"], (json{"198.51.100.10", "198.51.100.20-198.51.100.29", "198.51.100.64/28"}));
  ASSERT_EQ(printers["acl"].size(), 4u);
  EXPECT_EQ(printers["acl"][1], (json{{"index", 1}, {"action", "allow"}, {"protocol", "tcp"},
                                      {"ports", {"80", "9100"}}, {"text", "allow tcp 80,9100"}}));
  EXPECT_EQ(printers["acl"][3]["text"], "allow icmp");
  EXPECT_EQ(printers["require"], (json{{"source_ips", {"192.0.2.0/24"}}, {"attributes", {"mfa"}}}));
  EXPECT_EQ(printers["gateway_priority"], "balanced");
  EXPECT_EQ(printers["peers"], (json{"dev-box"}));
  EXPECT_EQ(printers["peers_failing_require"], (json{"laptop-1"}));
  EXPECT_EQ(v["policies"][1]["peers"], (json{"dev-box"}));
  EXPECT_EQ(v["policies"][1]["gateway_priority"], "ordered");
  EXPECT_EQ(v["policies"][1]["peers_failing_require"], json::array());
  EXPECT_EQ(v["policies"][2]["peers"], (json{"laptop-1", "dev-box"}));
  EXPECT_EQ(v["policies"][2]["acl"], json::array());

  // Without a published policy nobody is in any policy; tagged peers show as held back.
  const json none = policies_view(c, peers, nullptr);
  EXPECT_EQ(none["policies"][0]["peers"], json::array());
  EXPECT_EQ(none["policies"][0]["peers_failing_require"], (json{"laptop-1", "dev-box"}));
  EXPECT_EQ(policies_view(config::Config{}, peers, applied), (json{{"policies", json::array()}}));
}

TEST(FormatPolicies, OneBlockPerPolicy) {
  const config::Config c = sample_config();
  const std::vector<PeerRef> peers = {{"laptop-1", 0, {"users"}}, {"dev-box", 1, {"devs", "users"}}};
  json v = policies_view(c, peers, [](uint32_t id) -> std::vector<uint16_t> {
    return id == 0 ? std::vector<uint16_t>{2} : std::vector<uint16_t>{0, 1, 2};
  });
  v["policy_generation"] = 3;
  const std::string expected =
      "Policy: printers\n"
      "   Senders . . . . . . : users\n"
      "   Subnets . . . . . . : 198.51.100.0/24 (Office LAN)\n"
      "   Filter. . . . . . . : 198.51.100.10, 198.51.100.20-198.51.100.29, 198.51.100.64/28\n"
      "   ACL . . . . . . . . : 0: deny tcp 22\n"
      "                         1: allow tcp 80,9100\n"
      "                         2: allow udp 161-162\n"
      "                         3: allow icmp\n"
      "   Require . . . . . . : source IPs 192.0.2.0/24; attributes mfa\n"
      "   Gateway priority. . : balanced\n"
      "   Peers . . . . . . . : dev-box\n"
      "   Not trusted . . . . : laptop-1\n"
      "\n"
      "Policy: lab\n"
      "   Senders . . . . . . : devs\n"
      "   Subnets . . . . . . : 203.0.113.0/24, 198.51.100.0/24 (Office LAN)\n"
      "   Filter. . . . . . . : none (the whole subnets)\n"
      "   ACL . . . . . . . . : 0: allow any\n"
      "   Require . . . . . . : none\n"
      "   Gateway priority. . : ordered\n"
      "   Peers . . . . . . . : dev-box\n"
      "\n"
      "Policy: nothing\n"
      "   Senders . . . . . . : users\n"
      "   Subnets . . . . . . : 198.51.100.0/24 (Office LAN)\n"
      "   Filter. . . . . . . : none (the whole subnets)\n"
      "   ACL . . . . . . . . : none (allows nothing)\n"
      "   Require . . . . . . : none\n"
      "   Gateway priority. . : balanced\n"
      "   Peers . . . . . . . : laptop-1, dev-box\n";
  EXPECT_EQ(ctl::format_policies(v), expected);
  EXPECT_EQ(ctl::format_policies(v["policies"]), expected);
  EXPECT_EQ(ctl::format_result("policies", v), expected);
  EXPECT_EQ(ctl::format_policies(json{{"policies", json::array()}}), "No policies.\n");
}

TEST(FormatStatus, GatewayForAndAclsAsTheGatewaySendsThem) {
  const config::Config c = sample_config();
  json peer = {{"name", "dev-box"}, {"tags", {"devs"}}};
  peer["gateway_for"] = gateway_for(c, {0, 1});
  peer["acls"] = peer_acls(c, {1});
  EXPECT_EQ(ctl::format_status(json{{"peers", {peer}}}),
            "Peer: dev-box\n"
            "   Tags. . . . . . . . : devs\n"
            "   Gateway for . . . . : 198.51.100.10, 198.51.100.20-198.51.100.29, 198.51.100.64/28, "
            "203.0.113.0/24, 198.51.100.0/24 (Office LAN)\n"
            "   ACLs. . . . . . . . : allow [any] from peer -> lab\n");
  peer["gateway_for"] = gateway_for(c, {});
  peer["acls"] = peer_acls(c, {});
  EXPECT_EQ(ctl::format_status(json{{"peers", {peer}}}),
            "Peer: dev-box\n"
            "   Tags. . . . . . . . : devs\n"
            "   Gateway for . . . . : none\n"
            "   ACLs. . . . . . . . : none\n");
  peer["acls"] = peer_acls(c, {0});
  EXPECT_NE(ctl::format_status(json{{"peers", {peer}}})
                .find("ACLs. . . . . . . . : deny [tcp/22] from peer -> printers, allow [tcp/80,9100] from peer "
                      "-> printers, allow [udp/161-162] from peer -> printers, allow [icmp] from peer -> printers\n"),
            std::string::npos);
}

}  // namespace
}  // namespace sluice::cp
