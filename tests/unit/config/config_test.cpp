#include "controlplane/config/config.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <fstream>
#include <sstream>

#include "tests/unit/config/test_util.h"

namespace sluice::config {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::Not;
using ::testing::SizeIs;

constexpr uint32_t ip(uint8_t a, uint8_t b, uint8_t c, uint8_t d) {
  return uint32_t{a} << 24 | uint32_t{b} << 16 | uint32_t{c} << 8 | d;
}

// /work/shared/spec/gateway.yaml, verbatim: the contract every key of which must load.
constexpr const char* kSpec = R"yaml(# Sluice gateway configuration: the user-facing contract.
# Every key below must be accepted with this meaning. Keys may be added; none renamed or removed
# without a migration note in the README. Comments say what each key means and its default.

gateway:
  name: menlo-park-1                     # shown in status and metrics labels
  private_key_file: /etc/sluice/gateway.key   # base64, as `wg genkey` writes it; never logged
  listen_port: 51820                     # UDP port of the tunnel on the underlay address
  virtual_address: 100.64.0.1            # the gateway's own overlay address: peers ping it, DNS listens on it
  mtu: 1420                              # inner MTU of the tunnel (MSS clamping, frag-needed); default 1420
  state_dir: /var/lib/sluice             # known subnets, last applied firewall; created if missing

dataplane:
  eal_args: ["--no-huge", "-m", "512", "--no-pci"]   # passed to rte_eal_init as they are
  workers: 1                             # poll-mode worker lcores; the control thread runs on the main lcore
  ports:
    - name: wan
      role: underlay                     # peers' tunnel packets arrive here
      device: "net_af_packet0,iface=gw-wan"    # any DPDK devargs: a vdev or a PCI address
      address: 192.0.2.2/24
      gateway: 192.0.2.254               # optional next hop for endpoints and Internet egress off-link
    - name: lan
      role: lan                          # agentless devices live behind this port
      device: "net_af_packet1,iface=gw-lan"
      address: 198.51.100.1/24

subnets:                                 # what this gateway can route to; LAN port prefixes are discovered
  - prefix: 198.51.100.0/24
    name: Menlo Park Office
    preferred: true                      # a preferred route for this subnet (used by gateway selection)
  - prefix: 203.0.113.0/24               # custom subnet behind a router on the LAN
    name: Lab
    via: 198.51.100.254
  - prefix: 0.0.0.0/0                    # default route: Internet egress through the underlay, SNAT to its address
    name: Internet

peers:
  - name: laptop-1
    public_key: "3nbCZ7r9Bw1XlY8Ne1qk8w0m8RdqWwS8l0cQ4c4XyH0="
    preshared_key_file: /etc/sluice/laptop-1.psk   # optional
    virtual_address: 100.64.0.2          # the peer's overlay address; its inner packets must come from it
    tags: [users, devs]
    endpoint: 203.0.113.7:51820          # optional; learned from the peer's packets otherwise
    persistent_keepalive: 25             # optional, seconds
    attributes: {mfa: true}              # optional facts used by trust requirements

policies:                                # gateway access policies; a destination is reachable only if one allows it
  - name: office-printers
    senders: [users]                     # peer tags
    subnets: [Menlo Park Office]         # subnet names or prefixes of this gateway
    filter: [198.51.100.10, 198.51.100.20-198.51.100.29, 198.51.100.64/28]   # optional subnet filtering
    acl:                                 # optional; ordered, first match wins; absent = allow any
      - {action: deny, protocol: tcp, ports: [22]}
      - {action: allow, protocol: any}
    require:                             # optional trust requirements
      source_ips: [203.0.113.0/24]       # the peer's underlay address must be inside
      attributes: [mfa]                  # attestations that must hold (set in config or over the control socket)
    gateway_priority: balanced           # balanced | ordered | geographic (for senders choosing among gateways)

dns:
  enabled: true                          # answer DNS on virtual_address:53 (UDP and TCP) inside the tunnel
  upstreams: [198.51.100.53]             # default: the nameservers of /etc/resolv.conf
  hosts_file: /etc/hosts                 # consulted before upstreams
  search: [corp.example, local]          # tried for single-label names (dbserver1 -> dbserver1.corp.example)
  blocklists: [/etc/sluice/blocklist.txt]    # hosts-format or one domain a line; '*.' and regex lines allowed
  allowlist: []                          # domains never blocked
  block_response: nxdomain               # nxdomain | null_ip

metrics:
  listen: 127.0.0.1:9587                 # Prometheus text at /metrics

control:
  socket: /run/sluice/sluice.sock        # sluicectl talks here; root only

firewall:                                # host-based firewall of the appliance's kernel interfaces (nftables)
  enabled: false
  security_groups:
    - name: management
      inbound:
        - {protocol: tcp, ports: [22], sources: [192.0.2.0/24]}
      outbound:
        - {protocol: any}
)yaml";

void replace_all(std::string& s, const std::string& from, const std::string& to) {
  for (size_t pos = s.find(from); pos != std::string::npos; pos = s.find(from, pos + to.size())) {
    s.replace(pos, from.size(), to);
  }
}

// The smallest valid configuration; the tests below append to it or change one line of it.
//   line 1..3: gateway, 4..9: dataplane with one underlay port.
constexpr const char* kGateway = R"yaml(gateway:
  private_key_file: gateway.key
  virtual_address: 100.64.0.1
)yaml";
constexpr const char* kDataplane = R"yaml(dataplane:
  ports:
    - name: wan
      role: underlay
      device: net_null0
      address: 192.0.2.2/24
)yaml";

class ConfigTest : public ::testing::Test {
 protected:
  void SetUp() override {
    gateway_key_ = test::random_key();
    psk_ = test::random_key();
    test::write_key(dir_, "gateway.key", gateway_key_);
    test::write_key(dir_, "laptop-1.psk", psk_);
    peer_key_[0] = encode_key(*public_key_from_private(test::random_key()));
    peer_key_[1] = encode_key(*public_key_from_private(test::random_key()));
  }

  LoadResult load(const std::string& yaml) { return load_string(yaml, "test.yaml", dir_.path()); }

  // Every error as "FILE:LINE:COL: message"; the configuration must not have loaded.
  std::vector<std::string> errors(const std::string& yaml) {
    LoadResult r = load(yaml);
    EXPECT_FALSE(r.config) << "loaded although it should not have:\n" << yaml;
    std::vector<std::string> out;
    for (const Error& e : r.errors) {
      out.push_back(e.to_string());
    }
    return out;
  }

  // Exactly one error, returned as text.
  std::string error(const std::string& yaml) {
    auto all = errors(yaml);
    EXPECT_THAT(all, SizeIs(1)) << ::testing::PrintToString(all);
    return all.empty() ? std::string() : all[0];
  }

  static std::string base() { return std::string(kGateway) + kDataplane; }

  // Two peers starting on line 10 (after base()); `second` replaces the second peer's body.
  std::string two_peers(const std::string& second_name, const std::string& second_key,
                        const std::string& second_address) {
    return base() + "peers:\n" +                                     // 10
           "  - name: a\n" +                                         // 11
           "    public_key: \"" + peer_key_[0] + "\"\n" +            // 12
           "    virtual_address: 100.64.0.2\n" +                     // 13
           "  - name: " + second_name + "\n" +                       // 14
           "    public_key: \"" + second_key + "\"\n" +              // 15
           "    virtual_address: " + second_address + "\n";          // 16
  }

  test::TempDir dir_;
  Key gateway_key_{};
  Key psk_{};
  std::string peer_key_[2];
};

TEST_F(ConfigTest, SpecFileLoadsWithItsMeaning) {
  std::string yaml = kSpec;
  replace_all(yaml, "/etc/sluice/gateway.key", dir_.file("gateway.key"));
  replace_all(yaml, "/etc/sluice/laptop-1.psk", dir_.file("laptop-1.psk"));
  LoadResult r = load_string(yaml, "gateway.yaml", dir_.path());
  ASSERT_THAT(r.errors, IsEmpty()) << r.errors[0].to_string();
  ASSERT_TRUE(r.config);
  const Config& c = *r.config;
  EXPECT_EQ(c.source_file, "gateway.yaml");

  EXPECT_EQ(c.gateway.name, "menlo-park-1");
  EXPECT_EQ(c.gateway.private_key_file, dir_.file("gateway.key"));
  EXPECT_EQ(c.gateway.private_key, gateway_key_);
  EXPECT_EQ(c.gateway.public_key, *public_key_from_private(gateway_key_));
  EXPECT_EQ(c.gateway.listen_port, 51820);
  EXPECT_EQ(c.gateway.virtual_address, ip(100, 64, 0, 1));
  EXPECT_EQ(c.gateway.mtu, 1420);
  EXPECT_EQ(c.gateway.state_dir, "/var/lib/sluice");
  EXPECT_EQ(c.gateway.under_load_threshold, 1000u);

  EXPECT_THAT(c.dataplane.eal_args, ElementsAre("--no-huge", "-m", "512", "--no-pci"));
  EXPECT_EQ(c.dataplane.workers, 1u);
  ASSERT_THAT(c.dataplane.ports, SizeIs(2));
  const Port& wan = c.dataplane.ports[0];
  EXPECT_EQ(wan.name, "wan");
  EXPECT_EQ(wan.role, PortRole::underlay);
  EXPECT_EQ(wan.device, "net_af_packet0,iface=gw-wan");
  EXPECT_EQ(wan.address, (Prefix{ip(192, 0, 2, 2), 24}));
  EXPECT_EQ(wan.gateway, ip(192, 0, 2, 254));
  const Port& lan = c.dataplane.ports[1];
  EXPECT_EQ(lan.name, "lan");
  EXPECT_EQ(lan.role, PortRole::lan);
  EXPECT_EQ(lan.device, "net_af_packet1,iface=gw-lan");
  EXPECT_EQ(to_string(lan.address), "198.51.100.1/24");
  EXPECT_FALSE(lan.gateway);
  // Added keys keep their defaults.
  EXPECT_EQ(c.dataplane.rx_queue_size, 1024);
  EXPECT_EQ(c.dataplane.tx_queue_size, 1024);
  EXPECT_EQ(c.dataplane.burst_size, 32);
  EXPECT_EQ(c.dataplane.mbuf_pool_size, 0u);
  EXPECT_EQ(c.dataplane.aead_backend, AeadBackend::automatic);
  EXPECT_EQ(c.dataplane.idle_sleep_us, 0u);
  EXPECT_EQ(c.dataplane.neighbor_timeout, 300u);
  EXPECT_EQ(c.dataplane.neighbor_queue, 16u);

  ASSERT_THAT(c.subnets, SizeIs(3));
  EXPECT_EQ(c.subnets[0].prefix, (Prefix{ip(198, 51, 100, 0), 24}));
  EXPECT_EQ(c.subnets[0].name, "Menlo Park Office");
  EXPECT_TRUE(c.subnets[0].preferred);
  EXPECT_FALSE(c.subnets[0].via);
  EXPECT_EQ(to_string(c.subnets[1].prefix), "203.0.113.0/24");
  EXPECT_EQ(c.subnets[1].name, "Lab");
  EXPECT_FALSE(c.subnets[1].preferred);
  EXPECT_EQ(c.subnets[1].via, ip(198, 51, 100, 254));
  EXPECT_EQ(c.subnets[2].prefix, (Prefix{0, 0}));
  EXPECT_EQ(c.subnets[2].name, "Internet");

  ASSERT_THAT(c.peers, SizeIs(1));
  const Peer& p = c.peers[0];
  EXPECT_EQ(p.name, "laptop-1");
  EXPECT_EQ(encode_key(p.public_key), "3nbCZ7r9Bw1XlY8Ne1qk8w0m8RdqWwS8l0cQ4c4XyH0=");
  EXPECT_EQ(p.preshared_key, psk_);
  EXPECT_EQ(p.virtual_address, ip(100, 64, 0, 2));
  EXPECT_THAT(p.tags, ElementsAre("users", "devs"));
  ASSERT_TRUE(p.endpoint);
  EXPECT_EQ(to_string(*p.endpoint), "203.0.113.7:51820");
  EXPECT_EQ(p.persistent_keepalive, 25);
  ASSERT_EQ(p.attributes.count("mfa"), 1u);
  EXPECT_EQ(p.attributes.at("mfa"), AttributeValue(true));

  ASSERT_THAT(c.policies, SizeIs(1));
  const Policy& pol = c.policies[0];
  EXPECT_EQ(pol.name, "office-printers");
  EXPECT_THAT(pol.senders, ElementsAre("users"));
  EXPECT_THAT(pol.subnet_refs, ElementsAre("Menlo Park Office"));
  EXPECT_THAT(pol.subnets, ElementsAre(Prefix{ip(198, 51, 100, 0), 24}));
  EXPECT_THAT(pol.filter, ElementsAre(AddrRange{ip(198, 51, 100, 10), ip(198, 51, 100, 10)},
                                      AddrRange{ip(198, 51, 100, 20), ip(198, 51, 100, 29)},
                                      AddrRange{ip(198, 51, 100, 64), ip(198, 51, 100, 79)}));
  ASSERT_THAT(pol.acl, SizeIs(2));
  EXPECT_EQ(pol.acl[0].action, AclAction::deny);
  EXPECT_EQ(pol.acl[0].protocol, Protocol::tcp);
  EXPECT_THAT(pol.acl[0].ports, ElementsAre(PortRange{22, 22}));
  EXPECT_EQ(pol.acl[1].action, AclAction::allow);
  EXPECT_EQ(pol.acl[1].protocol, Protocol::any);
  EXPECT_THAT(pol.acl[1].ports, IsEmpty());
  EXPECT_THAT(pol.require.source_ips, ElementsAre(Prefix{ip(203, 0, 113, 0), 24}));
  EXPECT_THAT(pol.require.attributes, ElementsAre("mfa"));
  EXPECT_EQ(pol.gateway_priority, GatewayPriority::balanced);

  EXPECT_TRUE(c.dns.enabled);
  EXPECT_THAT(c.dns.upstreams, ElementsAre(SockAddr{ip(198, 51, 100, 53), 53}));
  EXPECT_EQ(c.dns.hosts_file, "/etc/hosts");
  EXPECT_THAT(c.dns.search, ElementsAre("corp.example", "local"));
  EXPECT_THAT(c.dns.blocklists, ElementsAre("/etc/sluice/blocklist.txt"));
  EXPECT_THAT(c.dns.allowlist, IsEmpty());
  EXPECT_EQ(c.dns.block_response, BlockResponse::nxdomain);

  EXPECT_EQ(to_string(c.metrics.listen), "127.0.0.1:9587");
  EXPECT_EQ(c.control.socket, "/run/sluice/sluice.sock");

  EXPECT_FALSE(c.firewall.enabled);
  ASSERT_THAT(c.firewall.security_groups, SizeIs(1));
  const SecurityGroup& g = c.firewall.security_groups[0];
  EXPECT_EQ(g.name, "management");
  ASSERT_THAT(g.inbound, SizeIs(1));
  EXPECT_EQ(g.inbound[0].protocol, Protocol::tcp);
  EXPECT_THAT(g.inbound[0].ports, ElementsAre(PortRange{22, 22}));
  EXPECT_THAT(g.inbound[0].peers, ElementsAre(Prefix{ip(192, 0, 2, 0), 24}));
  ASSERT_THAT(g.outbound, SizeIs(1));
  EXPECT_EQ(g.outbound[0].protocol, Protocol::any);
  EXPECT_THAT(g.outbound[0].peers, IsEmpty());
}

TEST_F(ConfigTest, ExamplesLoad) {
  for (const char* name : {"lan-printers.yaml", "minimal.yaml"}) {
    SCOPED_TRACE(name);
    std::ifstream in(std::string(SLUICE_SOURCE_ROOT) + "/config/examples/" + name);
    ASSERT_TRUE(in);
    std::stringstream text;
    text << in.rdbuf();
    LoadResult r = load_string(text.str(), name, dir_.path());
    for (const Error& e : r.errors) {
      ADD_FAILURE() << e.to_string();
    }
    ASSERT_TRUE(r.config);
    EXPECT_EQ(r.config->gateway.public_key, *public_key_from_private(gateway_key_));
    EXPECT_THAT(r.config->policies, SizeIs(1));
    for (const Policy& pol : r.config->policies) {
      EXPECT_THAT(pol.subnets, ElementsAre(Prefix{ip(198, 51, 100, 0), 24}));
    }
  }
}

TEST_F(ConfigTest, MinimalConfigGetsDefaults) {
  LoadResult r = load(base());
  ASSERT_THAT(r.errors, IsEmpty()) << r.errors[0].to_string();
  const Config& c = *r.config;
  EXPECT_EQ(c.gateway.name, "sluice");
  EXPECT_EQ(c.gateway.private_key_file, dir_.file("gateway.key"));  // resolved against base_dir
  EXPECT_EQ(c.gateway.listen_port, 51820);
  EXPECT_EQ(c.gateway.mtu, 1420);
  EXPECT_EQ(c.dataplane.workers, 1u);
  EXPECT_THAT(c.dataplane.eal_args, IsEmpty());
  EXPECT_THAT(c.subnets, IsEmpty());
  EXPECT_THAT(c.peers, IsEmpty());
  EXPECT_FALSE(c.dns.enabled);
  EXPECT_THAT(c.dns.upstreams, IsEmpty());
  EXPECT_EQ(c.dns.hosts_file, "/etc/hosts");
  EXPECT_EQ(c.dns.block_response, BlockResponse::nxdomain);
  EXPECT_EQ(c.metrics.listen, (SockAddr{ip(127, 0, 0, 1), 9587}));
  EXPECT_EQ(c.control.socket, "/run/sluice/sluice.sock");
  EXPECT_FALSE(c.firewall.enabled);
  EXPECT_EQ(c.generation, 0);
}

TEST_F(ConfigTest, AddedDataplaneAndGatewayKeys) {
  LoadResult r = load(std::string(kGateway) + "  under_load_threshold: 50\n" + kDataplane +
                      "  rx_queue_size: 512\n"
                      "  tx_queue_size: 2048\n"
                      "  burst_size: 64\n"
                      "  mbuf_pool_size: 8191\n"
                      "  aead_backend: sodium\n"
                      "  idle_sleep_us: 100\n"
                      "  neighbor_timeout: 60\n"
                      "  neighbor_queue: 4\n"
                      "  workers: 2\n");
  ASSERT_THAT(r.errors, IsEmpty()) << r.errors[0].to_string();
  const Dataplane& dp = r.config->dataplane;
  EXPECT_EQ(r.config->gateway.under_load_threshold, 50u);
  EXPECT_EQ(dp.rx_queue_size, 512);
  EXPECT_EQ(dp.tx_queue_size, 2048);
  EXPECT_EQ(dp.burst_size, 64);
  EXPECT_EQ(dp.mbuf_pool_size, 8191u);
  EXPECT_EQ(dp.aead_backend, AeadBackend::sodium);
  EXPECT_EQ(dp.idle_sleep_us, 100u);
  EXPECT_EQ(dp.neighbor_timeout, 60u);
  EXPECT_EQ(dp.neighbor_queue, 4u);
  EXPECT_EQ(dp.workers, 2u);
}

TEST_F(ConfigTest, ControlWatchConfig) {
  LoadResult def = load(base());
  ASSERT_TRUE(def.config);
  EXPECT_TRUE(def.config->control.watch_config);
  LoadResult off = load(base() + "control:\n  watch_config: false\n");
  ASSERT_THAT(off.errors, IsEmpty()) << off.errors[0].to_string();
  EXPECT_FALSE(off.config->control.watch_config);
  EXPECT_THAT(errors(base() + "control:\n  watch_config: maybe\n"), SizeIs(1));
}

TEST_F(ConfigTest, AddedKeysAreRangeChecked) {
  auto all = errors(std::string(kGateway) + kDataplane +
                    "  burst_size: 65\n"        // 10
                    "  idle_sleep_us: 1001\n"   // 11
                    "  rx_queue_size: 1000\n"   // 12
                    "  aead_backend: auto\n");  // 13
  EXPECT_THAT(all, ElementsAre("test.yaml:10:15: dataplane.burst_size: 65 is out of range (1..64)",
                               "test.yaml:11:18: dataplane.idle_sleep_us: 1001 is out of range (0..1000)",
                               "test.yaml:12:18: dataplane.rx_queue_size: 1000 is not a power of two"));
}

// --- one test per kind of bad input ---

TEST_F(ConfigTest, UnknownKeySuggestsTheClosestOne) {
  EXPECT_EQ(error(std::string(kGateway) + "  listen_prot: 51820\n" + kDataplane),
            "test.yaml:4:3: unknown key 'listen_prot' in gateway (did you mean 'listen_port'?)");
  EXPECT_EQ(error(base() + "gatway_priority: x\n"), "test.yaml:10:1: unknown top-level key 'gatway_priority'");
  EXPECT_EQ(error(base() + "metrics:\n  listne: 127.0.0.1:1\n"),
            "test.yaml:11:3: unknown key 'listne' in metrics (did you mean 'listen'?)");
  EXPECT_EQ(error(std::string(kGateway) + "  colour: blue\n" + kDataplane),
            "test.yaml:4:3: unknown key 'colour' in gateway");
  // Inside list items the path says which one.
  EXPECT_EQ(error(base() + "      mac: 02:00:00:00:00:01\n"),
            "test.yaml:10:7: unknown key 'mac' in dataplane.ports[0]");
}

TEST_F(ConfigTest, DuplicateKey) {
  EXPECT_EQ(error(std::string(kGateway) + "  virtual_address: 100.64.0.9\n" + kDataplane),
            "test.yaml:4:3: duplicate key 'virtual_address' in gateway (first at line 3)");
}

TEST_F(ConfigTest, WrongType) {
  EXPECT_EQ(error(std::string(kGateway) + "  listen_port: [51820]\n" + kDataplane),
            "test.yaml:4:16: gateway.listen_port: expected a port number, got a sequence");
  EXPECT_EQ(error(std::string(kGateway) + "  mtu: big\n" + kDataplane),
            "test.yaml:4:8: gateway.mtu: expected an integer, got 'big'");
  EXPECT_EQ(error(base() + "dns:\n  enabled: maybe\n"),
            "test.yaml:11:12: dns.enabled: expected true or false, got 'maybe'");
  EXPECT_EQ(error(base() + "peers: {name: x}\n"), "test.yaml:10:8: peers: expected a sequence, got a mapping");
  EXPECT_EQ(error(base() + "firewall: true\n"), "test.yaml:10:11: firewall: expected a mapping, got 'true'");
  EXPECT_EQ(error("- gateway\n"), "test.yaml:1:1: the configuration: expected a mapping, got a sequence");
  EXPECT_EQ(error(two_peers("b", peer_key_[1], "100.64.0.3") + "    tags: users\n"),
            "test.yaml:17:11: peers[1].tags: expected a sequence, got 'users'");
  EXPECT_EQ(error(two_peers("b", peer_key_[1], "100.64.0.3") + "    attributes: {mfa: [1]}\n"),
            "test.yaml:17:23: peers[1].attributes.mfa: expected a string or true/false, got a sequence");
}

TEST_F(ConfigTest, BadAddress) {
  EXPECT_EQ(error("gateway:\n  private_key_file: gateway.key\n  virtual_address: 100.64.0.256\n" +
                  std::string(kDataplane)),
            "test.yaml:3:20: gateway.virtual_address: bad IPv4 address '100.64.0.256'");
  EXPECT_EQ(error("gateway:\n  private_key_file: gateway.key\n  virtual_address: 100.64.0.1/10\n" +
                  std::string(kDataplane)),
            "test.yaml:3:20: gateway.virtual_address: bad IPv4 address '100.64.0.1/10' (a single address, "
            "without /len)");
  std::string yaml = base();
  replace_all(yaml, "192.0.2.2/24", "192.0.2.2/33");
  EXPECT_EQ(error(yaml),
            "test.yaml:9:16: dataplane.ports[0].address: bad IPv4 address or CIDR prefix '192.0.2.2/33' (expected "
            "an address with its length, like 192.0.2.1/24)");
  yaml = base();
  replace_all(yaml, "192.0.2.2/24", "192.0.2.2");
  EXPECT_THAT(error(yaml), HasSubstr("test.yaml:9:16: dataplane.ports[0].address: bad IPv4 address or CIDR"));
  EXPECT_EQ(error(base() + "subnets:\n  - prefix: 198.51.100.0/2x\n"),
            "test.yaml:11:13: subnets[0].prefix: bad IPv4 address or CIDR prefix '198.51.100.0/2x' (expected a "
            "CIDR prefix like 192.0.2.0/24)");
  EXPECT_EQ(error(base() + "      gateway: 192.0.02.254\n"),
            "test.yaml:10:16: dataplane.ports[0].gateway: bad IPv4 address '192.0.02.254'");
}

TEST_F(ConfigTest, PrefixWithHostBits) {
  EXPECT_EQ(error(base() + "subnets:\n  - prefix: 198.51.100.1/24\n"),
            "test.yaml:11:13: subnets[0].prefix: prefix 198.51.100.1/24 has host bits set (did you mean "
            "198.51.100.0/24?)");
  // Interface addresses keep their host bits: that is the port's own address.
  LoadResult r = load(base());
  ASSERT_TRUE(r.config);
  EXPECT_EQ(r.config->dataplane.ports[0].address.addr, ip(192, 0, 2, 2));
}

TEST_F(ConfigTest, PortOutOfRange) {
  EXPECT_EQ(error(std::string(kGateway) + "  listen_port: 70000\n" + kDataplane),
            "test.yaml:4:16: gateway.listen_port: port 70000 out of range (1..65535)");
  EXPECT_EQ(error(std::string(kGateway) + "  listen_port: 0\n" + kDataplane),
            "test.yaml:4:16: gateway.listen_port: port 0 out of range (1..65535)");
  EXPECT_EQ(error(two_peers("b", peer_key_[1], "100.64.0.3") + "    endpoint: 203.0.113.7:65536\n"),
            "test.yaml:17:15: peers[1].endpoint: port 65536 out of range (1..65535)");
  EXPECT_EQ(error(base() + "metrics:\n  listen: 127.0.0.1\n"),
            "test.yaml:11:11: metrics.listen: expected address:port, got '127.0.0.1'");
}

TEST_F(ConfigTest, UnreadableKeyFile) {
  std::string yaml = base();
  replace_all(yaml, "gateway.key", "missing.key");
  EXPECT_EQ(error(yaml), "test.yaml:2:21: gateway.private_key_file: cannot read '" + dir_.file("missing.key") +
                             "': No such file or directory");
}

TEST_F(ConfigTest, MalformedKeyFile) {
  dir_.write("garbage.key", "correct horse battery staple, not a key at!!\n");
  std::string yaml = base();
  replace_all(yaml, "gateway.key", "garbage.key");
  std::string e = error(yaml);
  EXPECT_EQ(e, "test.yaml:2:21: gateway.private_key_file: '" + dir_.file("garbage.key") +
                   "' does not hold a valid base64 key");
  EXPECT_THAT(e, Not(HasSubstr("horse")));

  dir_.write("short.key", "c2hvcnQ=\n");
  yaml = two_peers("b", peer_key_[1], "100.64.0.3") + "    preshared_key_file: short.key\n";
  e = error(yaml);
  EXPECT_EQ(e, "test.yaml:17:25: peers[1].preshared_key_file: '" + dir_.file("short.key") +
                   "' does not hold one base64 key (expected 44 characters, found 8)");
  EXPECT_THAT(e, Not(HasSubstr("c2hvcnQ")));
}

TEST_F(ConfigTest, BadPublicKey) {
  std::string e = error(two_peers("b", "c2hvcnQ=", "100.64.0.3"));
  EXPECT_EQ(e, "test.yaml:15:17: peers[1].public_key: not a WireGuard public key (expected 44 characters of "
               "base64, as wg pubkey prints)");
}

TEST_F(ConfigTest, DuplicatePeerPublicKey) {
  EXPECT_EQ(error(two_peers("b", peer_key_[0], "100.64.0.3")),
            "test.yaml:15:17: peers[1].public_key: duplicate public key (already peer 'a' at line 12)");
}

TEST_F(ConfigTest, DuplicatePeerName) {
  EXPECT_EQ(error(two_peers("a", peer_key_[1], "100.64.0.3")),
            "test.yaml:14:11: peers[1].name: duplicate peer name 'a' (first at line 11)");
}

TEST_F(ConfigTest, DuplicatePeerVirtualAddress) {
  EXPECT_EQ(error(two_peers("b", peer_key_[1], "100.64.0.2")),
            "test.yaml:16:22: peers[1].virtual_address: duplicate virtual address 100.64.0.2 (already peer 'a' at "
            "line 13)");
  EXPECT_EQ(error(two_peers("b", peer_key_[1], "100.64.0.1")),
            "test.yaml:16:22: peers[1].virtual_address: 100.64.0.1 is the gateway's own virtual address (line 3)");
}

TEST_F(ConfigTest, PeerWithTheGatewaysOwnKey) {
  EXPECT_EQ(error(two_peers("b", encode_key(*public_key_from_private(gateway_key_)), "100.64.0.3")),
            "test.yaml:15:17: peers[1].public_key: this is the gateway's own public key");
}

TEST_F(ConfigTest, MissingRequiredKeys) {
  EXPECT_EQ(error("gateway:\n  virtual_address: 100.64.0.1\n" + std::string(kDataplane)),
            "test.yaml:2:3: gateway: missing required key 'private_key_file'");
  EXPECT_EQ(error("gateway:\n  private_key_file: gateway.key\n" + std::string(kDataplane)),
            "test.yaml:2:3: gateway: missing required key 'virtual_address'");
  EXPECT_EQ(error("gateway:\n  private_key_file: gateway.key\n  virtual_address:\n" + std::string(kDataplane)),
            "test.yaml:3:3: gateway.virtual_address: required, but has no value");
  EXPECT_EQ(error(std::string(kGateway) + "dataplane:\n  workers: 1\n"),
            "test.yaml:5:3: dataplane: missing required key 'ports'");
  EXPECT_EQ(error(std::string(kGateway)), "test.yaml:1:1: missing required section 'dataplane'");
  EXPECT_EQ(error(std::string(kDataplane)), "test.yaml:1:1: missing required section 'gateway'");
  EXPECT_THAT(errors(""), ElementsAre("test.yaml:1:1: missing required section 'gateway'",
                                      "test.yaml:1:1: missing required section 'dataplane'"));
  // Ports: each needs name, role, device and address, and one must be the underlay.
  EXPECT_THAT(errors(std::string(kGateway) + "dataplane:\n  ports:\n    - {}\n"),
              ElementsAre("test.yaml:6:7: dataplane.ports[0]: missing required key 'name'",
                          "test.yaml:6:7: dataplane.ports[0]: missing required key 'role'",
                          "test.yaml:6:7: dataplane.ports[0]: missing required key 'device'",
                          "test.yaml:6:7: dataplane.ports[0]: missing required key 'address'"));
  std::string lan_only = base();
  replace_all(lan_only, "role: underlay", "role: lan");
  EXPECT_EQ(error(lan_only), "test.yaml:6:5: dataplane.ports: at least one port needs role underlay");
  EXPECT_EQ(error(std::string(kGateway) + "dataplane:\n  ports: []\n"),
            "test.yaml:5:10: dataplane.ports: at least one port needs role underlay");
  // Peers: name, public_key and virtual_address.
  EXPECT_THAT(errors(base() + "peers:\n  - tags: [users]\n"),
              ElementsAre("test.yaml:11:5: peers[0]: missing required key 'name'",
                          "test.yaml:11:5: peers[0]: missing required key 'public_key'",
                          "test.yaml:11:5: peers[0]: missing required key 'virtual_address'"));
}

TEST_F(ConfigTest, BadEnumValue) {
  std::string yaml = base();
  replace_all(yaml, "role: underlay", "role: wan");
  EXPECT_EQ(error(yaml), "test.yaml:7:13: dataplane.ports[0].role: bad value 'wan' (expected underlay | lan)");
  EXPECT_EQ(error(base() + "  aead_backend: boringssl\n"),
            "test.yaml:10:17: dataplane.aead_backend: bad value 'boringssl' (expected auto | openssl | sodium)");
  EXPECT_EQ(error(base() + "dns:\n  block_response: refused\n"),
            "test.yaml:11:19: dns.block_response: bad value 'refused' (expected nxdomain | null_ip)");
  std::string policy = base() + "subnets:\n  - prefix: 203.0.113.0/24\n    name: Lab\n" +  // 10..12
                       "policies:\n  - name: p\n    senders: [users]\n    subnets: [Lab]\n";  // 13..16
  EXPECT_EQ(error(policy + "    gateway_priority: fastest\n"),
            "test.yaml:17:23: policies[0].gateway_priority: bad value 'fastest' (expected balanced | ordered | "
            "geographic)");
  EXPECT_EQ(error(policy + "    acl:\n      - {action: reject}\n"),
            "test.yaml:18:18: policies[0].acl[0].action: bad value 'reject' (expected allow | deny)");
  EXPECT_EQ(error(policy + "    acl:\n      - {action: allow, protocol: sctp}\n"),
            "test.yaml:18:35: policies[0].acl[0].protocol: bad value 'sctp' (expected any | tcp | udp | icmp)");
}

TEST_F(ConfigTest, PolicyUnknownSubnet) {
  std::string head = base() + "subnets:\n  - prefix: 203.0.113.0/24\n    name: Lab\n" +  // 10..12
                     "policies:\n  - name: p\n    senders: [users]\n";                    // 13..15
  EXPECT_EQ(error(head + "    subnets: [Lba]\n"),
            "test.yaml:16:15: policies[0].subnets[0]: unknown subnet 'Lba' (did you mean 'Lab'?)");
  EXPECT_EQ(error(head + "    subnets: [Office]\n"),
            "test.yaml:16:15: policies[0].subnets[0]: unknown subnet 'Office'");
  EXPECT_EQ(error(head + "    subnets: [198.51.100.0/24]\n"),
            "test.yaml:16:15: policies[0].subnets[0]: 198.51.100.0/24 is not inside any subnet of this gateway");
  // A prefix inside a configured subnet or a LAN port's network is fine.
  LoadResult r = load(head + "    subnets: [203.0.113.128/25, Lab]\n");
  ASSERT_THAT(r.errors, IsEmpty()) << r.errors[0].to_string();
  EXPECT_THAT(r.config->policies[0].subnets,
              ElementsAre(Prefix{ip(203, 0, 113, 128), 25}, Prefix{ip(203, 0, 113, 0), 24}));
}

TEST_F(ConfigTest, FilterEntryOutsideThePolicysSubnets) {
  std::string head = base() + "subnets:\n  - prefix: 203.0.113.0/24\n    name: Lab\n" +  // 10..12
                     "policies:\n  - name: p\n    senders: [users]\n    subnets: [Lab]\n";  // 13..16
  EXPECT_THAT(errors(head + "    filter: [203.0.113.7, 198.51.100.1, 203.0.113.250-203.0.114.2, 203.0.113.0/23]\n"),
              ElementsAre("test.yaml:17:27: policies[0].filter[1]: 198.51.100.1 is outside the policy's subnets",
                          "test.yaml:17:41: policies[0].filter[2]: 203.0.113.250-203.0.114.2 is outside the "
                          "policy's subnets",
                          "test.yaml:17:68: policies[0].filter[3]: prefix 203.0.113.0/23 has host bits set (did "
                          "you mean 203.0.112.0/23?)"));
  EXPECT_EQ(error(head + "    filter: [203.0.113.9-203.0.113.1]\n"),
            "test.yaml:17:14: policies[0].filter[0]: range 203.0.113.9-203.0.113.1 ends before it starts");
}

TEST_F(ConfigTest, DuplicatePortNames) {
  std::string yaml =
      base() + "    - name: wan\n      role: lan\n      device: net_null1\n      address: 198.51.100.1/24\n";
  EXPECT_EQ(error(yaml), "test.yaml:10:13: dataplane.ports[1].name: duplicate port name 'wan' (first at line 6)");
}

TEST_F(ConfigTest, PortGatewayMustBeOnLink) {
  EXPECT_EQ(error(base() + "      gateway: 198.51.100.1\n"),
            "test.yaml:10:16: dataplane.ports[0].gateway: next hop 198.51.100.1 is not a neighbour on 192.0.2.2/24");
}

TEST_F(ConfigTest, AclPortsForms) {
  std::string policy = base() + "subnets:\n  - prefix: 203.0.113.0/24\n    name: Lab\n" +  // 10..12
                       "policies:\n  - name: p\n    senders: [users]\n    subnets: [Lab]\n";  // 13..16
  std::string yaml = policy + "    acl:\n"
                     "      - {action: allow, protocol: tcp, ports: 22}\n"
                     "      - {action: allow, protocol: udp, ports: \"1000-2000\"}\n"
                     "      - {action: deny, protocol: tcp, ports: [80, \"8000-8080\", 443]}\n"
                     "      - {action: allow, protocol: icmp}\n";
  LoadResult r = load(yaml);
  ASSERT_THAT(r.errors, IsEmpty()) << r.errors[0].to_string();
  const auto& acl = r.config->policies[0].acl;
  ASSERT_THAT(acl, SizeIs(4));
  EXPECT_THAT(acl[0].ports, ElementsAre(PortRange{22, 22}));
  EXPECT_THAT(acl[1].ports, ElementsAre(PortRange{1000, 2000}));
  EXPECT_THAT(acl[2].ports, ElementsAre(PortRange{80, 80}, PortRange{8000, 8080}, PortRange{443, 443}));
  EXPECT_EQ(acl[3].protocol, Protocol::icmp);
  // No acl at all means allow any.
  r = load(policy);
  ASSERT_TRUE(r.config);
  ASSERT_THAT(r.config->policies[0].acl, SizeIs(1));
  EXPECT_EQ(r.config->policies[0].acl[0].action, AclAction::allow);
  EXPECT_EQ(r.config->policies[0].acl[0].protocol, Protocol::any);

  std::string head = policy + "    acl:\n";  // rules from line 18
  EXPECT_EQ(error(head + "      - {action: allow, protocol: icmp, ports: [22]}\n"),
            "test.yaml:18:48: policies[0].acl[0].ports: ports need protocol tcp or udp (this rule's protocol is "
            "icmp)");
  EXPECT_EQ(error(head + "      - {action: allow, protocol: tcp, ports: [\"2000-1000\"]}\n"),
            "test.yaml:18:48: policies[0].acl[0].ports[0]: port range 2000-1000 ends before it starts");
  EXPECT_EQ(error(head + "      - {action: allow, protocol: tcp, ports: [0]}\n"),
            "test.yaml:18:48: policies[0].acl[0].ports[0]: port 0 out of range (1..65535)");
  EXPECT_EQ(error(head + "      - {action: allow, protocol: tcp, ports: [ssh]}\n"),
            "test.yaml:18:48: policies[0].acl[0].ports[0]: expected a port or a range lo-hi, got 'ssh'");
}

TEST_F(ConfigTest, PeerAttributesKeepBooleansAndText) {
  LoadResult r = load(base() + "peers:\n  - name: a\n    public_key: \"" + peer_key_[0] +
                      "\"\n    virtual_address: 100.64.0.2\n"
                      "    attributes: {mfa: true, managed: false, quoted: \"true\", country: NO, level: 3}\n");
  ASSERT_THAT(r.errors, IsEmpty()) << r.errors[0].to_string();
  const auto& a = r.config->peers[0].attributes;
  EXPECT_EQ(a.at("mfa"), AttributeValue(true));
  EXPECT_EQ(a.at("managed"), AttributeValue(false));
  EXPECT_EQ(a.at("quoted"), AttributeValue(std::string("true")));
  EXPECT_EQ(a.at("country"), AttributeValue(std::string("NO")));
  EXPECT_EQ(a.at("level"), AttributeValue(std::string("3")));
}

TEST_F(ConfigTest, YamlSyntaxErrorPosition) {
  // yaml-cpp reports an unterminated flow sequence where it gave up: the ':' of "dataplane:" on line 5.
  EXPECT_EQ(error(std::string(kGateway) + "  listen_port: [51820\n" + kDataplane),
            "test.yaml:5:10: end of sequence flow not found");
  EXPECT_EQ(error("gateway:\n  name: a\n bad: indent\n"), "test.yaml:3:2: end of map not found");
  EXPECT_EQ(error(base() + "peers:\n  - name: a: b\n"), "test.yaml:11:12: illegal map value");
  EXPECT_EQ(error(base() + "\tworkers: 2\n"), "test.yaml:10:1: illegal tab when looking for indentation");
}

TEST_F(ConfigTest, OnlyOneDocument) {
  EXPECT_EQ(error(base() + "---\nfirewall: {}\n"), "test.yaml:10:1: only one YAML document is allowed");
  EXPECT_EQ(error(base() + "---\nfirewall: [\n"), "test.yaml:12:1: end of sequence flow not found");
}

TEST_F(ConfigTest, StrayFlowTokenIsAnErrorNotAHang) {
  // yaml-cpp's LoadAll never returns on this input.
  EXPECT_THAT(errors(" ,\n"), ElementsAre("test.yaml:1:2: missing required section 'gateway'",
                                           "test.yaml:1:2: missing required section 'dataplane'"));
  auto all = errors("# comment\n ,\n" + base());
  EXPECT_THAT(all, Not(IsEmpty()));
}

TEST_F(ConfigTest, MultipleErrorsAreAllCollectedInFileOrder) {
  std::string yaml = "gateway:\n"                           // 1
                     "  private_key_file: missing.key\n"    // 2
                     "  virtual_address: 100.64.0.300\n"    // 3
                     "  listen_prot: 1\n"                   // 4
                     "dataplane:\n"                         // 5
                     "  workers: 0\n"                       // 6
                     "  ports:\n"                           // 7
                     "    - name: wan\n"                    // 8
                     "      role: underlay\n"               // 9
                     "      device: net_null0\n"            // 10
                     "      address: 192.0.2.2/24\n"        // 11
                     "    - name: wan\n"                    // 12
                     "      role: lan\n"                    // 13
                     "      device: net_null1\n"            // 14
                     "      address: 198.51.100.1/24\n"     // 15
                     "subnets:\n"                           // 16
                     "  - prefix: 198.51.100.7/24\n";       // 17
  auto all = errors(yaml);
  ASSERT_THAT(all, SizeIs(6)) << ::testing::PrintToString(all);
  EXPECT_THAT(all[0], HasSubstr("test.yaml:2:21: gateway.private_key_file: cannot read"));
  EXPECT_EQ(all[1], "test.yaml:3:20: gateway.virtual_address: bad IPv4 address '100.64.0.300'");
  EXPECT_EQ(all[2], "test.yaml:4:3: unknown key 'listen_prot' in gateway (did you mean 'listen_port'?)");
  EXPECT_EQ(all[3], "test.yaml:6:12: dataplane.workers: 0 is out of range (1..128)");
  EXPECT_EQ(all[4], "test.yaml:12:13: dataplane.ports[1].name: duplicate port name 'wan' (first at line 8)");
  EXPECT_THAT(all[5], HasSubstr("test.yaml:17:13: subnets[0].prefix: prefix 198.51.100.7/24 has host bits set"));
}

TEST_F(ConfigTest, LoadFileResolvesKeysAgainstTheConfigDirectory) {
  std::string path = dir_.write("gw.yaml", base());
  LoadResult r = load_file(path);
  ASSERT_THAT(r.errors, IsEmpty()) << r.errors[0].to_string();
  EXPECT_EQ(r.config->source_file, path);
  EXPECT_EQ(r.config->gateway.private_key, gateway_key_);

  r = load_file(dir_.file("nope.yaml"));
  EXPECT_FALSE(r.config);
  ASSERT_THAT(r.errors, SizeIs(1));
  EXPECT_EQ(r.errors[0].to_string(),
            dir_.file("nope.yaml") + ": cannot read the configuration: No such file or directory");
}

TEST_F(ConfigTest, FirewallRules) {
  std::string yaml = base() + "firewall:\n  enabled: true\n  security_groups:\n" +  // 10..12
                     "    - name: mgmt\n" +                                           // 13
                     "      inbound:\n        - {protocol: udp, ports: [161], sources: [192.0.2.7]}\n" +  // 14..15
                     "      outbound:\n        - {protocol: tcp, ports: [443], destinations: [203.0.113.0/24]}\n";
  LoadResult r = load(yaml);
  ASSERT_THAT(r.errors, IsEmpty()) << r.errors[0].to_string();
  EXPECT_TRUE(r.config->firewall.enabled);
  const auto& g = r.config->firewall.security_groups[0];
  EXPECT_THAT(g.inbound[0].peers, ElementsAre(Prefix{ip(192, 0, 2, 7), 32}));
  EXPECT_THAT(g.outbound[0].peers, ElementsAre(Prefix{ip(203, 0, 113, 0), 24}));

  EXPECT_EQ(error(base() + "firewall:\n  security_groups:\n    - name: a\n      inbound:\n" +
                  "        - {protocol: tcp, destinations: [192.0.2.0/24]}\n"),
            "test.yaml:14:27: unknown key 'destinations' in firewall.security_groups[0].inbound[0]");
  EXPECT_EQ(error(base() + "firewall:\n  security_groups:\n    - name: a\n    - name: a\n"),
            "test.yaml:13:13: firewall.security_groups[1].name: duplicate security group 'a' (first at line 12)");
}

TEST_F(ConfigTest, DnsValues) {
  LoadResult r = load(base() + "dns:\n  enabled: true\n  upstreams: [198.51.100.53, \"198.51.100.54:5353\"]\n" +
                      "  hosts_file: hosts\n  blocklists: [lists/ads.txt]\n  allowlist: [\"*.corp.example\"]\n" +
                      "  block_response: null_ip\n");
  ASSERT_THAT(r.errors, IsEmpty()) << r.errors[0].to_string();
  const Dns& dns = r.config->dns;
  EXPECT_THAT(dns.upstreams, ElementsAre(SockAddr{ip(198, 51, 100, 53), 53}, SockAddr{ip(198, 51, 100, 54), 5353}));
  EXPECT_EQ(dns.hosts_file, dir_.file("hosts"));
  EXPECT_THAT(dns.blocklists, ElementsAre(dir_.file("lists/ads.txt")));
  EXPECT_THAT(dns.allowlist, ElementsAre("*.corp.example"));
  EXPECT_EQ(dns.block_response, BlockResponse::null_ip);
  EXPECT_EQ(error(base() + "dns:\n  search: [\"corp example\"]\n"),
            "test.yaml:11:12: dns.search[0]: bad domain name 'corp example'");
}

TEST(ResolvConf, NameserversAreTheDnsDefault) {
  test::TempDir dir;
  std::string path = dir.write("resolv.conf",
                               "# generated\nsearch corp.example\nnameserver 198.51.100.53\n"
                               "nameserver 2001:db8::53\nnameserver\t198.51.100.54  # second\n");
  EXPECT_THAT(resolv_conf_nameservers(path),
              ElementsAre(SockAddr{ip(198, 51, 100, 53), 53}, SockAddr{ip(198, 51, 100, 54), 53}));
  EXPECT_THAT(resolv_conf_nameservers(dir.file("missing")), IsEmpty());
}

TEST(Address, Formatting) {
  EXPECT_EQ(to_string(ip(198, 51, 100, 1)), "198.51.100.1");
  EXPECT_EQ(to_string(uint32_t{0}), "0.0.0.0");
  EXPECT_EQ(to_string(Prefix{ip(198, 51, 100, 1), 24}), "198.51.100.1/24");
  EXPECT_EQ(to_string(SockAddr{ip(203, 0, 113, 7), 51820}), "203.0.113.7:51820");
  EXPECT_EQ(to_string(AddrRange{ip(198, 51, 100, 20), ip(198, 51, 100, 29)}), "198.51.100.20-198.51.100.29");
  EXPECT_EQ(to_string(PortRange{22, 22}), "22");
  EXPECT_EQ(parse_ipv4("255.255.255.255"), 0xffffffffu);
  EXPECT_FALSE(parse_ipv4("1.2.3"));
  EXPECT_FALSE(parse_ipv4("1.2.3.4."));
  EXPECT_FALSE(parse_ipv4("01.2.3.4"));
  EXPECT_FALSE(parse_ipv4("1.2.3.4 "));
  EXPECT_EQ(parse_prefix("0.0.0.0/0"), (Prefix{0, 0}));
  EXPECT_FALSE(parse_prefix("1.2.3.4/33"));
  Prefix p{ip(198, 51, 100, 1), 24};
  EXPECT_TRUE(p.contains(ip(198, 51, 100, 200)));
  EXPECT_FALSE(p.contains(ip(198, 51, 101, 0)));
  EXPECT_EQ(p.network(), ip(198, 51, 100, 0));
  EXPECT_TRUE(p.has_host_bits());
}

TEST(ErrorText, Format) {
  EXPECT_EQ((Error{"a.yaml", 3, 7, "boom"}).to_string(), "a.yaml:3:7: boom");
  EXPECT_EQ((Error{"a.yaml", 0, 0, "cannot read"}).to_string(), "a.yaml: cannot read");
}

}  // namespace
}  // namespace sluice::config
