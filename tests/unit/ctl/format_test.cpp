#include "controlplane/ctl/format.h"

#include <string>

#include <gtest/gtest.h>

namespace sluice::ctl {
namespace {

using nlohmann::json;

json sample_status() {
  return json::parse(R"({
    "gateway": {"name": "menlo-park-1", "public_key": "R2F0ZXdheUtleQ==", "listen_port": 51820,
                "virtual_address": "100.64.0.1", "uptime_s": 12.5, "workers": 1,
                "future_field": {"ignored": true}},
    "ports": [{"name": "wan", "role": "underlay", "address": "192.0.2.2/24",
               "mac": "02:00:00:00:00:01", "rx_packets": 10, "tx_packets": 1, "rx_bytes": 3545,
               "tx_bytes": 512, "rx_errors": 0, "tx_errors": 2}],
    "peers": [
      {"name": "laptop-1", "public_key": "TGFwdG9wS2V5", "state": "up",
       "endpoint": "192.0.2.10:40000", "virtual_address": "100.64.0.2", "tags": ["users", "devs"],
       "latest_handshake_age_s": 3.2, "last_activity_age_s": 0.5, "rx_bytes": 3545,
       "tx_bytes": 4169, "rx_packets": 12, "tx_packets": 14,
       "gateway_for": ["198.51.100.0/24", "203.0.113.0/24"],
       "acls": [{"action": "allow", "protocol": "icmp", "from": "peer", "to": "local"},
                {"action": "deny", "protocol": "tcp", "ports": [22]}]},
      {"name": "phone", "public_key": "UGhvbmU=", "state": "down", "endpoint": null,
       "virtual_address": "100.64.0.3", "tags": [], "latest_handshake_age_s": null,
       "last_activity_age_s": null, "rx_bytes": 0, "tx_bytes": 0, "rx_packets": 0, "tx_packets": 0}
    ],
    "handshakes": {"initiation_ok": 3, "bad_mac1": 0, "replayed": 1},
    "drops": {"wg_malformed": 0, "no_route": 7}
  })");
}

TEST(FormatStatus, FullOutput) {
  const std::string expected =
      "Gateway: menlo-park-1\n"
      "   Public key. . . . . : R2F0ZXdheUtleQ==\n"
      "   Listening . . . . . : udp/51820\n"
      "   Virtual address . . : 100.64.0.1\n"
      "   Uptime. . . . . . . : 12 seconds\n"
      "   Workers . . . . . . : 1\n"
      "\n"
      "Port: wan\n"
      "   Role. . . . . . . . : underlay\n"
      "   Address . . . . . . : 192.0.2.2/24\n"
      "   MAC address . . . . : 02:00:00:00:00:01\n"
      "   Received. . . . . . : 3.462 KB, 10 packets, 0 errors\n"
      "   Sent. . . . . . . . : 512 B, 1 packet, 2 errors\n"
      "\n"
      "Peer: laptop-1\n"
      "   Peer state. . . . . : Up\n"
      "   Public key. . . . . : TGFwdG9wS2V5\n"
      "   Endpoint. . . . . . : Udp/192.0.2.10:40000\n"
      "   Latest handshake. . : 3.2 seconds ago\n"
      "   Last activity . . . : 0.50 seconds ago\n"
      "   Transfer. . . . . . : 3.462 KB received, 4.071 KB sent\n"
      "   Packets . . . . . . : 12 received, 14 sent\n"
      "   Virtual address . . : 100.64.0.2\n"
      "   Tags. . . . . . . . : users, devs\n"
      "   Gateway for . . . . : 198.51.100.0/24, 203.0.113.0/24\n"
      "   ACLs. . . . . . . . : allow [icmp] from peer -> local, deny [tcp/22]\n"
      "\n"
      "Peer: phone\n"
      "   Peer state. . . . . : Down\n"
      "   Public key. . . . . : UGhvbmU=\n"
      "   Endpoint. . . . . . : none\n"
      "   Latest handshake. . : never\n"
      "   Last activity . . . : never\n"
      "   Transfer. . . . . . : 0 B received, 0 B sent\n"
      "   Packets . . . . . . : 0 received, 0 sent\n"
      "   Virtual address . . : 100.64.0.3\n"
      "   Tags. . . . . . . . : none\n"
      "\n"
      "Counters\n"
      "   handshake initiation_ok . : 3\n"
      "   handshake replayed. . . . : 1\n"
      "   drop no_route . . . . . . : 7\n";
  EXPECT_EQ(format_status(sample_status()), expected);
}

TEST(FormatStatus, MissingFieldsAreLeftOut) {
  const json status = {{"gateway", {{"name", "gw"}}}, {"peers", {{{"name", "bare"}}}}};
  EXPECT_EQ(format_status(status), "Gateway: gw\n\nPeer: bare\n");
  EXPECT_EQ(format_status(json::object()), "");
  EXPECT_EQ(format_status(json::array()), "");
}

TEST(FormatStatus, NoCountersBlockWhenAllZero) {
  json status = sample_status();
  status["handshakes"] = {{"initiation_ok", 0}};
  status["drops"] = {{"wg_malformed", 0}};
  EXPECT_EQ(format_status(status).find("Counters"), std::string::npos);
}

TEST(FormatStatus, PeerNamedByKeyWhenUnnamed) {
  const json status = {{"peers", {{{"public_key", "abc="}, {"state", "handshaking"}}}}};
  EXPECT_EQ(format_status(status),
            "Peer: abc=\n"
            "   Peer state. . . . . : Handshaking\n"
            "   Public key. . . . . : abc=\n");
}

TEST(FieldLine, DotLeadersMatchTheSeed) {
  EXPECT_EQ(field_line("Peer state", "Up"), "   Peer state. . . . . : Up\n");
  EXPECT_EQ(field_line("Certificate", "x"), "   Certificate . . . . : x\n");
  EXPECT_EQ(field_line("Endpoint", "x"), "   Endpoint. . . . . . : x\n");
  EXPECT_EQ(field_line("Last activity", "x"), "   Last activity . . . : x\n");
  EXPECT_EQ(field_line("Dns", "x"), "   Dns . . . . . . . . : x\n");
  EXPECT_EQ(field_line("A label longer than twenty", "x"), "   A label longer than twenty : x\n");
}

TEST(Units, Bytes) {
  EXPECT_EQ(format_bytes(0), "0 B");
  EXPECT_EQ(format_bytes(1023), "1023 B");
  EXPECT_EQ(format_bytes(1024), "1.000 KB");
  EXPECT_EQ(format_bytes(3545), "3.462 KB");
  EXPECT_EQ(format_bytes(4169), "4.071 KB");
  EXPECT_EQ(format_bytes(1024.0 * 1024 * 2.5), "2.500 MB");
  EXPECT_EQ(format_bytes(1024.0 * 1024 * 1024 * 5), "5.000 GB");
  EXPECT_EQ(format_bytes(-1), "0 B");
}

TEST(Units, Ages) {
  EXPECT_EQ(format_age(0.5), "0.50 seconds");
  EXPECT_EQ(format_age(0.75), "0.75 seconds");
  EXPECT_EQ(format_age(3.2), "3.2 seconds");
  EXPECT_EQ(format_age(150), "2.5 minutes");
  EXPECT_EQ(format_age(7200), "2.0 hours");
  EXPECT_EQ(format_age(3 * 86400), "3.0 days");
}

TEST(Units, Durations) {
  EXPECT_EQ(format_duration(12.5), "12 seconds");
  EXPECT_EQ(format_duration(1), "1 second");
  EXPECT_EQ(format_duration(60), "1 minute");
  EXPECT_EQ(format_duration(75), "1 minute 15 seconds");
  EXPECT_EQ(format_duration(3725), "1 hour 2 minutes");
  EXPECT_EQ(format_duration(90061), "1 day 1 hour");
}

TEST(FormatPeers, Table) {
  const std::string expected =
      "NAME      STATE  ENDPOINT          VIRTUAL ADDRESS  HANDSHAKE  RX        TX\n"
      "laptop-1  up     192.0.2.10:40000  100.64.0.2       3.2s ago   3.462 KB  4.071 KB\n"
      "phone     down   -                 100.64.0.3       never      0 B       0 B\n";
  EXPECT_EQ(format_peers(sample_status()["peers"]), expected);
  EXPECT_EQ(format_peers(json{{"peers", sample_status()["peers"]}}), expected);
  EXPECT_EQ(format_peers(json::array()), "No peers.\n");
}

TEST(FormatAttestations, Table) {
  const json result = {{"attestations",
                        {{{"peer", "laptop"}, {"attribute", "managed"}, {"source", "config"}, {"expires", nullptr},
                          {"expires_in_s", nullptr}},
                         {{"peer", "laptop"}, {"attribute", "mfa"}, {"source", "control"},
                          {"expires", "2026-11-21T23:15:00Z"}, {"expires_in_s", 899.2}}}}};
  EXPECT_EQ(format_result("attestations", result),
            "PEER    ATTRIBUTE  SOURCE   EXPIRES\n"
            "laptop  managed    config   never\n"
            "laptop  mfa        control  2026-11-21T23:15:00Z (in 15 minutes)\n");
  EXPECT_EQ(format_attestations(json{{"attestations", json::array()}}), "No attestations.\n");
}

TEST(FormatGeneric, ObjectsListsAndTables) {
  const json result = {
      {"applied", true},
      {"changes", {"peer laptop-2 added", "policy lab removed"}},
      {"subnets", {{{"prefix", "198.51.100.0/24"}, {"name", "Menlo Park Office"}, {"preferred", true}},
                   {{"prefix", "0.0.0.0/0"}, {"name", "Internet"}}}},
      {"dns", {{"enabled", false}}},
      {"empty", json::array()}};
  EXPECT_EQ(format_generic(result),
            "applied: true\n"
            "changes: peer laptop-2 added, policy lab removed\n"
            "dns:\n"
            "  enabled: false\n"
            "empty: none\n"
            "subnets:\n"
            "  NAME               PREFERRED  PREFIX\n"
            "  Menlo Park Office  true       198.51.100.0/24\n"
            "  Internet           -          0.0.0.0/0\n");
}

TEST(FormatGeneric, SingleListResult) {
  EXPECT_EQ(format_generic(json{{"connections", json::array()}}), "No connections.\n");
  EXPECT_EQ(format_generic(json{{"entries", {{{"name", "a"}, {"ports", {80, 443}}}}}}),
            "NAME  PORTS\n"
            "a     80,443\n");
  EXPECT_EQ(format_generic(json{"x", 2}), "x\n2\n");
  EXPECT_EQ(format_generic(json("done")), "done\n");
  EXPECT_EQ(format_generic(json()), "");
}

TEST(FormatResult, PicksTheRenderer) {
  EXPECT_EQ(format_result("status", sample_status()), format_status(sample_status()));
  EXPECT_EQ(format_result("peers", sample_status()), format_peers(sample_status()));
  EXPECT_EQ(format_result("reload", json{{"ok", 1}}), "ok: 1\n");
}

}  // namespace
}  // namespace sluice::ctl
