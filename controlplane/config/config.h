// The gateway configuration (gateway.yaml): typed sections and the loader.
// /work/shared/spec/gateway.yaml is the contract; keys added here are marked "(added)".
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "controlplane/config/address.h"
#include "controlplane/config/keys.h"

namespace sluice::config {

enum class PortRole { underlay, lan };
enum class AeadBackend { automatic, openssl, sodium };  // spelled auto | openssl | sodium
enum class AclAction { allow, deny };
enum class Protocol { any, tcp, udp, icmp };
enum class GatewayPriority { balanced, ordered, geographic };
enum class BlockResponse { nxdomain, null_ip };

// The spelling used in the configuration file.
const char* to_string(PortRole v);
const char* to_string(AeadBackend v);
const char* to_string(AclAction v);
const char* to_string(Protocol v);
const char* to_string(GatewayPriority v);
const char* to_string(BlockResponse v);

struct Gateway {
  std::string name = "sluice";
  std::string private_key_file;        // required; resolved against the config file's directory
  Key private_key{};                   // loaded from private_key_file; wiped on destruction
  Key public_key{};                    // derived from private_key
  uint16_t listen_port = 51820;
  uint32_t virtual_address = 0;        // required
  uint16_t mtu = 1420;                 // 576..9000
  std::string state_dir = "/var/lib/sluice";
  uint32_t under_load_threshold = 1000;  // (added) handshake messages/s above which cookies are demanded

  Gateway() = default;
  Gateway(const Gateway&) = default;
  Gateway(Gateway&&) = default;
  Gateway& operator=(const Gateway&) = default;
  Gateway& operator=(Gateway&&) = default;
  ~Gateway();
};

struct Port {
  std::string name;                    // required, unique
  PortRole role = PortRole::underlay;  // required
  std::string device;                  // required: DPDK devargs (vdev or PCI address)
  Prefix address;                      // required; host bits are the port's own address
  std::optional<uint32_t> gateway;     // next hop off-link; must be inside `address`'s network
};

struct Dataplane {
  std::vector<std::string> eal_args;   // default: none
  uint32_t workers = 1;                // 1..128
  std::vector<Port> ports;             // required, at least one underlay port
  uint16_t rx_queue_size = 1024;       // (added) descriptors, power of two 64..32768
  uint16_t tx_queue_size = 1024;       // (added) descriptors, power of two 64..32768
  uint16_t burst_size = 32;            // (added) 1..64
  uint32_t mbuf_pool_size = 0;         // (added) 0 = computed by the dataplane
  AeadBackend aead_backend = AeadBackend::automatic;  // (added)
  uint32_t idle_sleep_us = 0;          // (added) 0..1000; 0 = pure busy-poll
  uint32_t neighbor_timeout = 300;     // (added) seconds, 1..86400
  uint32_t neighbor_queue = 16;        // (added) packets held per unresolved neighbour, 0..1024
};

struct Subnet {
  Prefix prefix;                       // required; no host bits
  std::string name;                    // default: the prefix as text; unique
  bool preferred = false;
  std::optional<uint32_t> via;         // router on a port's network
};

// A peer attribute: YAML true/false stay booleans, every other scalar is kept as its text.
using AttributeValue = std::variant<bool, std::string>;

struct Peer {
  std::string name;                    // required, unique
  Key public_key{};                    // required, unique
  std::string preshared_key_file;      // optional; resolved against the config file's directory
  std::optional<Key> preshared_key;    // loaded from preshared_key_file; wiped on destruction
  uint32_t virtual_address = 0;        // required, unique (and not the gateway's)
  std::vector<std::string> tags;
  std::optional<SockAddr> endpoint;
  uint16_t persistent_keepalive = 0;   // seconds, 0 = off
  std::map<std::string, AttributeValue> attributes;

  Peer() = default;
  Peer(const Peer&) = default;
  Peer(Peer&&) = default;
  Peer& operator=(const Peer&) = default;
  Peer& operator=(Peer&&) = default;
  ~Peer();
};

struct AclRule {
  AclAction action = AclAction::allow;  // required
  Protocol protocol = Protocol::any;
  std::vector<PortRange> ports;         // empty = every port; only with tcp or udp
};

struct TrustRequirements {
  std::vector<Prefix> source_ips;       // peer's underlay address must be inside one (empty = any)
  std::vector<std::string> attributes;  // attributes that must be true
};

struct Policy {
  std::string name;                     // required, unique
  std::vector<std::string> senders;     // required: peer tags
  std::vector<std::string> subnet_refs; // required: as written (subnet names or prefixes)
  std::vector<Prefix> subnets;          // subnet_refs resolved to prefixes, same order
  std::vector<AddrRange> filter;        // empty = the whole of `subnets`; each entry inside one of them
  std::vector<AclRule> acl;             // ordered, first match wins, no match = deny; absent = [allow any]
  TrustRequirements require;
  GatewayPriority gateway_priority = GatewayPriority::balanced;
};

struct Dns {
  bool enabled = false;
  std::vector<SockAddr> upstreams;      // "a.b.c.d" or "a.b.c.d:port" (port 53); empty = /etc/resolv.conf
  std::string hosts_file = "/etc/hosts";  // resolved against the config file's directory
  std::vector<std::string> search;
  std::vector<std::string> blocklists;  // paths, resolved against the config file's directory
  std::vector<std::string> allowlist;
  BlockResponse block_response = BlockResponse::nxdomain;
};

struct Metrics {
  SockAddr listen{0x7f000001, 9587};    // 127.0.0.1:9587
};

struct Control {
  std::string socket = "/run/sluice/sluice.sock";
  bool watch_config = true;  // (added) reload when the configuration file changes (inotify)
};

struct FirewallRule {
  Protocol protocol = Protocol::any;
  std::vector<PortRange> ports;         // empty = every port; only with tcp or udp
  std::vector<Prefix> peers;            // `sources` (inbound) or `destinations` (outbound); empty = any
};

struct SecurityGroup {
  std::string name;                     // required, unique
  std::vector<FirewallRule> inbound;
  std::vector<FirewallRule> outbound;
};

struct Firewall {
  bool enabled = false;
  std::vector<SecurityGroup> security_groups;
};

struct Config {
  Gateway gateway;
  Dataplane dataplane;
  std::vector<Subnet> subnets;
  std::vector<Peer> peers;
  std::vector<Policy> policies;
  Dns dns;
  Metrics metrics;
  Control control;
  Firewall firewall;

  std::string source_file;              // the file label it was loaded from
  int generation = 0;                   // left to the caller (bumped on each reload)
};

struct Error {
  std::string file;
  int line = 0;    // 1-based; 0 when the error has no position (unreadable file)
  int column = 0;  // 1-based
  std::string message;
  std::string to_string() const;  // "FILE:LINE:COL: message" ("FILE: message" without a position)
};

struct LoadResult {
  std::optional<Config> config;  // set only when errors is empty
  std::vector<Error> errors;     // every problem found, in file order
};

// Neither function throws. Key files are read (and must be valid) at load time; the hosts file and blocklists
// are only named here. Relative paths resolve against base_dir (load_file: the config file's directory).
LoadResult load_file(const std::string& path);
LoadResult load_string(std::string_view yaml, const std::string& file_label, const std::string& base_dir);

// Nameservers listed in a resolv.conf (IPv4 only, port 53); the default for dns.upstreams.
std::vector<SockAddr> resolv_conf_nameservers(const std::string& path = "/etc/resolv.conf");

}  // namespace sluice::config
