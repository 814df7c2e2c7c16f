#include "controlplane/config/config.h"

#include <fcntl.h>
#include <sodium.h>
#include <unistd.h>
#include <yaml-cpp/anchor.h>
#include <yaml-cpp/eventhandler.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <sstream>

#include "controlplane/config/reader.h"

namespace sluice::config {

using detail::Diag;
using detail::PrefixKind;
using detail::Section;

const char* to_string(PortRole v) { return v == PortRole::underlay ? "underlay" : "lan"; }

const char* to_string(AeadBackend v) {
  switch (v) {
    case AeadBackend::automatic:
      return "auto";
    case AeadBackend::openssl:
      return "openssl";
    case AeadBackend::sodium:
      return "sodium";
  }
  return "?";
}

const char* to_string(AclAction v) { return v == AclAction::allow ? "allow" : "deny"; }

const char* to_string(Protocol v) {
  switch (v) {
    case Protocol::any:
      return "any";
    case Protocol::tcp:
      return "tcp";
    case Protocol::udp:
      return "udp";
    case Protocol::icmp:
      return "icmp";
  }
  return "?";
}

const char* to_string(GatewayPriority v) {
  switch (v) {
    case GatewayPriority::balanced:
      return "balanced";
    case GatewayPriority::ordered:
      return "ordered";
    case GatewayPriority::geographic:
      return "geographic";
  }
  return "?";
}

const char* to_string(BlockResponse v) { return v == BlockResponse::nxdomain ? "nxdomain" : "null_ip"; }

Gateway::~Gateway() { sodium_memzero(private_key.data(), private_key.size()); }

Peer::~Peer() {
  if (preshared_key) {
    sodium_memzero(preshared_key->data(), preshared_key->size());
  }
}

std::string Error::to_string() const {
  if (line <= 0) {
    return file + ": " + message;
  }
  return file + ":" + std::to_string(line) + ":" + std::to_string(column) + ": " + message;
}

namespace {

const detail::EnumNames<PortRole> kPortRoles = {{"underlay", PortRole::underlay}, {"lan", PortRole::lan}};
const detail::EnumNames<AeadBackend> kAeadBackends = {
    {"auto", AeadBackend::automatic}, {"openssl", AeadBackend::openssl}, {"sodium", AeadBackend::sodium}};
const detail::EnumNames<AclAction> kAclActions = {{"allow", AclAction::allow}, {"deny", AclAction::deny}};
const detail::EnumNames<Protocol> kProtocols = {
    {"any", Protocol::any}, {"tcp", Protocol::tcp}, {"udp", Protocol::udp}, {"icmp", Protocol::icmp}};
const detail::EnumNames<GatewayPriority> kGatewayPriorities = {{"balanced", GatewayPriority::balanced},
                                                                   {"ordered", GatewayPriority::ordered},
                                                                   {"geographic", GatewayPriority::geographic}};
const detail::EnumNames<BlockResponse> kBlockResponses = {{"nxdomain", BlockResponse::nxdomain},
                                                              {"null_ip", BlockResponse::null_ip}};

constexpr uint64_t kU32Max = std::numeric_limits<uint32_t>::max();

std::string line_of(const YAML::Mark& m) { return std::to_string(m.line + 1); }

// Hostnames and search domains: dot-separated labels of letters, digits, '-' and '_'.
bool valid_domain(std::string_view s, bool allow_wildcard) {
  if (allow_wildcard && s.starts_with("*.")) {
    s.remove_prefix(2);
  }
  if (s.ends_with('.')) {
    s.remove_suffix(1);
  }
  if (s.empty() || s.size() > 253) {
    return false;
  }
  while (true) {
    size_t dot = s.find('.');
    std::string_view label = s.substr(0, dot);
    if (label.empty() || label.size() > 63 || label.front() == '-' || label.back() == '-') {
      return false;
    }
    for (char c : label) {
      bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '_';
      if (!ok) {
        return false;
      }
    }
    if (dot == std::string_view::npos) {
      return true;
    }
    s.remove_prefix(dot + 1);
  }
}

// Where each parsed item came from, for the checks that compare items with each other.
struct PortMarks {
  YAML::Mark name, device, address;
  bool name_ok = false, role_ok = false, device_ok = false, address_ok = false;
};
struct SubnetMarks {
  YAML::Mark prefix, name, via;
  bool prefix_ok = false;
};
struct PeerMarks {
  YAML::Mark name, public_key, virtual_address;
  bool name_ok = false, key_ok = false, address_ok = false;
};

class Loader {
 public:
  Loader(Diag& diag, std::string base_dir) : d_(diag), base_dir_(std::move(base_dir)) {}

  void load(const YAML::Node& root) {
    Section top(d_, root, "",
                {"gateway", "dataplane", "subnets", "peers", "policies", "dns", "metrics", "control", "firewall"});
    if (!top.is_map()) {
      return;
    }
    if (auto n = top.require("gateway")) {
      gateway(*n);
    }
    if (auto n = top.require("dataplane")) {
      dataplane(*n);
    }
    if (auto n = top.get("subnets")) {
      subnets(*n);
    }
    if (auto n = top.get("peers")) {
      peers(*n);
    }
    if (auto n = top.get("policies")) {
      policies(*n);
    }
    if (auto n = top.get("dns")) {
      dns(*n);
    }
    if (auto n = top.get("metrics")) {
      metrics(*n);
    }
    if (auto n = top.get("control")) {
      control(*n);
    }
    if (auto n = top.get("firewall")) {
      firewall(*n);
    }
  }

  Config config;

 private:
  std::string resolve(const std::string& path) const {
    if (path.empty() || path[0] == '/' || base_dir_.empty()) {
      return path;
    }
    return (std::filesystem::path(base_dir_) / path).lexically_normal().string();
  }

  std::optional<std::string> nonempty_string(const YAML::Node& n, const std::string& path) {
    auto s = detail::read_string(d_, n, path);
    if (s && s->empty()) {
      d_.error(n.Mark(), path + ": must not be empty");
      return std::nullopt;
    }
    return s;
  }

  // Reads a key file named by `n`; `stored` receives the resolved path.
  std::optional<Key> key_file(const YAML::Node& n, const std::string& path, std::string& stored) {
    auto file = nonempty_string(n, path);
    if (!file) {
      return std::nullopt;
    }
    stored = resolve(*file);
    KeyFileResult r = read_key_file(stored);
    if (!r.key) {
      d_.error(n.Mark(), path + ": " + r.error);
      return std::nullopt;
    }
    Key key = *r.key;
    wipe(*r.key);
    return key;
  }

  template <typename T>
  void set_uint(const Section& s, std::string_view key, T& out, uint64_t lo, uint64_t hi) {
    if (auto n = s.get(key)) {
      if (auto v = detail::read_uint(d_, *n, s.path(key), lo, hi)) {
        out = static_cast<T>(*v);
      }
    }
  }

  void set_string(const Section& s, std::string_view key, std::string& out) {
    if (auto n = s.get(key)) {
      if (auto v = nonempty_string(*n, s.path(key))) {
        out = std::move(*v);
      }
    }
  }

  void set_bool(const Section& s, std::string_view key, bool& out) {
    if (auto n = s.get(key)) {
      if (auto v = detail::read_bool(d_, *n, s.path(key))) {
        out = *v;
      }
    }
  }

  template <typename E>
  void set_enum(const Section& s, std::string_view key, E& out, const detail::EnumNames<E>& names) {
    if (auto n = s.get(key)) {
      if (auto v = detail::read_enum(d_, *n, s.path(key), names)) {
        out = *v;
      }
    }
  }

  void gateway(const YAML::Node& node) {
    Section s(d_, node, "gateway",
              {"name", "private_key_file", "listen_port", "virtual_address", "mtu", "state_dir",
               "under_load_threshold"});
    if (!s.is_map()) {
      return;
    }
    Gateway& g = config.gateway;
    set_string(s, "name", g.name);
    if (auto n = s.require("private_key_file")) {
      if (auto key = key_file(*n, s.path("private_key_file"), g.private_key_file)) {
        g.private_key = *key;
        wipe(*key);
        if (auto pub = public_key_from_private(g.private_key)) {
          g.public_key = *pub;
          gateway_key_ok_ = true;
        } else {
          d_.error(n->Mark(),
                   s.path("private_key_file") + ": the private key is degenerate (generate one with wg genkey)");
        }
      }
    }
    if (auto n = s.get("listen_port")) {
      if (auto v = detail::read_port(d_, *n, s.path("listen_port"))) {
        g.listen_port = *v;
      }
    }
    if (auto n = s.require("virtual_address")) {
      if (auto v = detail::read_ipv4(d_, *n, s.path("virtual_address"))) {
        g.virtual_address = *v;
        gateway_address_ = s.mark("virtual_address");
        gateway_address_ok_ = true;
      }
    }
    set_uint(s, "mtu", g.mtu, 576, 9000);
    set_string(s, "state_dir", g.state_dir);
    set_uint(s, "under_load_threshold", g.under_load_threshold, 0, kU32Max);
  }

  void queue_size(const Section& s, std::string_view key, uint16_t& out) {
    auto n = s.get(key);
    if (!n) {
      return;
    }
    if (auto v = detail::read_uint(d_, *n, s.path(key), 64, 32768)) {
      if ((*v & (*v - 1)) != 0) {
        d_.error(n->Mark(), s.path(key) + ": " + std::to_string(*v) + " is not a power of two");
      } else {
        out = static_cast<uint16_t>(*v);
      }
    }
  }

  void dataplane(const YAML::Node& node) {
    Section s(d_, node, "dataplane",
              {"eal_args", "workers", "ports", "rx_queue_size", "tx_queue_size", "burst_size", "mbuf_pool_size",
               "aead_backend", "idle_sleep_us", "neighbor_timeout", "neighbor_queue"});
    if (!s.is_map()) {
      return;
    }
    Dataplane& dp = config.dataplane;
    if (auto n = s.get("eal_args")) {
      if (auto v = detail::read_string_list(d_, *n, s.path("eal_args"))) {
        dp.eal_args = std::move(*v);
      }
    }
    set_uint(s, "workers", dp.workers, 1, 128);
    if (auto n = s.require("ports")) {
      detail::read_list(d_, *n, s.path("ports"), [&](const YAML::Node& e, const std::string& p) { port(e, p); });
      check_ports(*n);
    }
    queue_size(s, "rx_queue_size", dp.rx_queue_size);
    queue_size(s, "tx_queue_size", dp.tx_queue_size);
    set_uint(s, "burst_size", dp.burst_size, 1, 64);
    set_uint(s, "mbuf_pool_size", dp.mbuf_pool_size, 0, kU32Max);
    set_enum(s, "aead_backend", dp.aead_backend, kAeadBackends);
    set_uint(s, "idle_sleep_us", dp.idle_sleep_us, 0, 1000);
    set_uint(s, "neighbor_timeout", dp.neighbor_timeout, 1, 86400);
    set_uint(s, "neighbor_queue", dp.neighbor_queue, 0, 1024);
  }

  void port(const YAML::Node& node, const std::string& path) {
    Section s(d_, node, path, {"name", "role", "device", "address", "gateway"});
    if (!s.is_map()) {
      return;
    }
    Port port;
    PortMarks m;
    if (auto n = s.require("name")) {
      if (auto v = nonempty_string(*n, s.path("name"))) {
        port.name = std::move(*v);
        m.name = n->Mark();
        m.name_ok = true;
      }
    }
    if (auto n = s.require("role")) {
      if (auto v = detail::read_enum(d_, *n, s.path("role"), kPortRoles)) {
        port.role = *v;
        m.role_ok = true;
      }
    }
    if (auto n = s.require("device")) {
      if (auto v = nonempty_string(*n, s.path("device"))) {
        port.device = std::move(*v);
        m.device = n->Mark();
        m.device_ok = true;
      }
    }
    if (auto n = s.require("address")) {
      if (auto v = detail::read_prefix(d_, *n, s.path("address"), PrefixKind::interface)) {
        port.address = *v;
        m.address = n->Mark();
        m.address_ok = true;
      }
    }
    if (auto n = s.get("gateway")) {
      if (auto v = detail::read_ipv4(d_, *n, s.path("gateway"))) {
        port.gateway = *v;
        if (m.address_ok && (!port.address.contains(*v) || *v == port.address.addr)) {
          d_.error(n->Mark(), s.path("gateway") + ": next hop " + to_string(*v) + " is not a neighbour on " +
                                  to_string(port.address));
        }
      }
    }
    config.dataplane.ports.push_back(std::move(port));
    port_marks_.push_back(m);
  }

  void check_ports(const YAML::Node& ports_node) {
    const auto& ports = config.dataplane.ports;
    bool roles_known = true;
    bool has_underlay = false;
    for (size_t i = 0; i < ports.size(); i++) {
      const Port& p = ports[i];
      const PortMarks& m = port_marks_[i];
      roles_known = roles_known && m.role_ok;
      has_underlay = has_underlay || (m.role_ok && p.role == PortRole::underlay);
      std::string path = "dataplane.ports[" + std::to_string(i) + "]";
      for (size_t j = 0; j < i; j++) {
        const Port& q = ports[j];
        const PortMarks& qm = port_marks_[j];
        if (m.name_ok && qm.name_ok && p.name == q.name) {
          d_.error(m.name,
                   path + ".name: duplicate port name '" + p.name + "' (first at line " + line_of(qm.name) + ")");
        }
        if (m.device_ok && qm.device_ok && p.device == q.device) {
          d_.error(m.device, path + ".device: device '" + p.device + "' is already port '" + q.name + "' (line " +
                                 line_of(qm.device) + ")");
        }
        if (m.address_ok && qm.address_ok) {
          Prefix a{p.address.network(), p.address.len};
          Prefix b{q.address.network(), q.address.len};
          if (a.contains(b) || b.contains(a)) {
            d_.error(m.address, path + ".address: " + to_string(p.address) + " overlaps port '" + q.name + "' (" +
                                    to_string(q.address) + ")");
          }
        }
      }
    }
    if (ports_node.IsSequence() && roles_known && !has_underlay) {
      d_.error(ports_node.Mark(), "dataplane.ports: at least one port needs role underlay");
    }
  }

  void subnets(const YAML::Node& node) {
    detail::read_list(d_, node, "subnets", [&](const YAML::Node& e, const std::string& path) {
      Section s(d_, e, path, {"prefix", "name", "preferred", "via"});
      if (!s.is_map()) {
        return;
      }
      Subnet subnet;
      SubnetMarks m;
      if (auto n = s.require("prefix")) {
        if (auto v = detail::read_prefix(d_, *n, s.path("prefix"), PrefixKind::network)) {
          subnet.prefix = *v;
          m.prefix = n->Mark();
          m.prefix_ok = true;
        }
      }
      m.name = s.mark("name");
      if (auto n = s.get("name")) {
        if (auto v = nonempty_string(*n, s.path("name"))) {
          subnet.name = std::move(*v);
        }
      } else if (m.prefix_ok) {
        subnet.name = to_string(subnet.prefix);
      }
      set_bool(s, "preferred", subnet.preferred);
      if (auto n = s.get("via")) {
        if (auto v = detail::read_ipv4(d_, *n, s.path("via"))) {
          subnet.via = *v;
          check_via(*v, n->Mark(), s.path("via"));
        }
      }
      config.subnets.push_back(std::move(subnet));
      subnet_marks_.push_back(m);
    });
    for (size_t i = 0; i < config.subnets.size(); i++) {
      const Subnet& a = config.subnets[i];
      const SubnetMarks& am = subnet_marks_[i];
      std::string path = "subnets[" + std::to_string(i) + "]";
      for (size_t j = 0; j < i; j++) {
        const Subnet& b = config.subnets[j];
        const SubnetMarks& bm = subnet_marks_[j];
        if (!a.name.empty() && a.name == b.name) {
          d_.error(am.name, path + ".name: duplicate subnet name '" + a.name + "' (first at line " +
                                line_of(bm.name) + ")");
        }
        if (am.prefix_ok && bm.prefix_ok && a.prefix == b.prefix) {
          d_.error(am.prefix, path + ".prefix: duplicate subnet " + to_string(a.prefix) + " (first at line " +
                                  line_of(bm.prefix) + ")");
        }
      }
    }
  }

  // A router named by `via` must be a neighbour on one of the ports.
  void check_via(uint32_t via, const YAML::Mark& mark, const std::string& path) {
    bool any_port = false;
    for (size_t i = 0; i < config.dataplane.ports.size(); i++) {
      const Port& p = config.dataplane.ports[i];
      if (!port_marks_[i].address_ok) {
        continue;
      }
      any_port = true;
      if (p.address.contains(via) && p.address.addr != via) {
        return;
      }
    }
    if (any_port) {
      d_.error(mark, path + ": router " + to_string(via) + " is not a neighbour on any port's network");
    }
  }

  void peers(const YAML::Node& node) {
    detail::read_list(d_, node, "peers", [&](const YAML::Node& e, const std::string& path) { peer(e, path); });
    for (size_t i = 0; i < config.peers.size(); i++) {
      const Peer& a = config.peers[i];
      const PeerMarks& am = peer_marks_[i];
      std::string path = "peers[" + std::to_string(i) + "]";
      if (am.address_ok && gateway_address_ok_ && a.virtual_address == config.gateway.virtual_address) {
        d_.error(am.virtual_address, path + ".virtual_address: " + to_string(a.virtual_address) +
                                         " is the gateway's own virtual address (line " +
                                         line_of(gateway_address_) + ")");
      }
      if (am.key_ok && gateway_key_ok_ && sodium_memcmp(a.public_key.data(), config.gateway.public_key.data(),
                                                        a.public_key.size()) == 0) {
        d_.error(am.public_key, path + ".public_key: this is the gateway's own public key");
      }
      for (size_t j = 0; j < i; j++) {
        const Peer& b = config.peers[j];
        const PeerMarks& bm = peer_marks_[j];
        if (am.name_ok && bm.name_ok && a.name == b.name) {
          d_.error(am.name, path + ".name: duplicate peer name '" + a.name + "' (first at line " +
                                line_of(bm.name) + ")");
        }
        if (am.key_ok && bm.key_ok && a.public_key == b.public_key) {
          d_.error(am.public_key, path + ".public_key: duplicate public key (already peer '" + b.name +
                                      "' at line " + line_of(bm.public_key) + ")");
        }
        if (am.address_ok && bm.address_ok && a.virtual_address == b.virtual_address) {
          d_.error(am.virtual_address, path + ".virtual_address: duplicate virtual address " +
                                           to_string(a.virtual_address) + " (already peer '" + b.name +
                                           "' at line " + line_of(bm.virtual_address) + ")");
        }
      }
    }
  }

  void peer(const YAML::Node& node, const std::string& path) {
    Section s(d_, node, path,
              {"name", "public_key", "preshared_key_file", "virtual_address", "tags", "endpoint",
               "persistent_keepalive", "attributes"});
    if (!s.is_map()) {
      return;
    }
    Peer peer;
    PeerMarks m;
    if (auto n = s.require("name")) {
      if (auto v = nonempty_string(*n, s.path("name"))) {
        peer.name = std::move(*v);
        m.name = n->Mark();
        m.name_ok = true;
      }
    }
    if (auto n = s.require("public_key")) {
      if (auto v = detail::read_string(d_, *n, s.path("public_key"))) {
        if (auto key = parse_key(*v)) {
          peer.public_key = *key;
          m.public_key = n->Mark();
          m.key_ok = true;
        } else {
          d_.error(n->Mark(), s.path("public_key") + ": not a WireGuard public key (expected " +
                                  std::to_string(kKeyBase64Len) + " characters of base64, as wg pubkey prints)");
        }
      }
    }
    if (auto n = s.get("preshared_key_file")) {
      if (auto key = key_file(*n, s.path("preshared_key_file"), peer.preshared_key_file)) {
        peer.preshared_key = *key;
        wipe(*key);
      }
    }
    if (auto n = s.require("virtual_address")) {
      if (auto v = detail::read_ipv4(d_, *n, s.path("virtual_address"))) {
        peer.virtual_address = *v;
        m.virtual_address = n->Mark();
        m.address_ok = true;
      }
    }
    if (auto n = s.get("tags")) {
      detail::read_list(d_, *n, s.path("tags"), [&](const YAML::Node& e, const std::string& p) {
        if (auto v = nonempty_string(e, p)) {
          peer.tags.push_back(std::move(*v));
        }
      });
    }
    if (auto n = s.get("endpoint")) {
      peer.endpoint = detail::read_sockaddr(d_, *n, s.path("endpoint"));
    }
    set_uint(s, "persistent_keepalive", peer.persistent_keepalive, 0, 65535);
    if (auto n = s.get("attributes")) {
      attributes(*n, s.path("attributes"), peer.attributes);
    }
    config.peers.push_back(std::move(peer));
    peer_marks_.push_back(m);
  }

  void attributes(const YAML::Node& node, const std::string& path, std::map<std::string, AttributeValue>& out) {
    if (!node.IsMap()) {
      d_.error(node.Mark(), path + ": expected a mapping, got " + detail::describe_type(node));
      return;
    }
    for (auto it = node.begin(); it != node.end(); ++it) {
      const YAML::Node key = it->first;
      const YAML::Node value = it->second;
      if (!key.IsScalar() || key.Scalar().empty()) {
        d_.error(key.Mark(), path + ": attribute names must be non-empty strings");
        continue;
      }
      std::string p = path + "." + key.Scalar();
      if (out.count(key.Scalar()) != 0) {
        d_.error(key.Mark(), path + ": duplicate attribute '" + key.Scalar() + "'");
        continue;
      }
      if (!value.IsScalar()) {
        d_.error(value.IsNull() ? key.Mark() : value.Mark(),
                 p + ": expected a string or true/false, got " + detail::describe_type(value));
        continue;
      }
      // Only unquoted true/false are booleans: a quoted "true" and YAML 1.1's yes/no stay text.
      const std::string& s = value.Scalar();
      bool plain = value.Tag() != "!";
      if (plain && (s == "true" || s == "True" || s == "TRUE")) {
        out[key.Scalar()] = true;
      } else if (plain && (s == "false" || s == "False" || s == "FALSE")) {
        out[key.Scalar()] = false;
      } else {
        out[key.Scalar()] = s;
      }
    }
  }

  // Prefixes this gateway can route to: configured subnets and the networks of its LAN ports.
  std::vector<Prefix> routable() const {
    std::vector<Prefix> out;
    for (size_t i = 0; i < config.subnets.size(); i++) {
      if (subnet_marks_[i].prefix_ok) {
        out.push_back(config.subnets[i].prefix);
      }
    }
    for (size_t i = 0; i < config.dataplane.ports.size(); i++) {
      const Port& p = config.dataplane.ports[i];
      if (port_marks_[i].address_ok && port_marks_[i].role_ok && p.role == PortRole::lan) {
        out.push_back(Prefix{p.address.network(), p.address.len});
      }
    }
    return out;
  }

  void policies(const YAML::Node& node) {
    std::vector<std::pair<std::string, YAML::Mark>> names;
    detail::read_list(d_, node, "policies", [&](const YAML::Node& e, const std::string& path) {
      Section s(d_, e, path, {"name", "senders", "subnets", "filter", "acl", "require", "gateway_priority"});
      if (!s.is_map()) {
        return;
      }
      Policy policy;
      if (auto n = s.require("name")) {
        if (auto v = nonempty_string(*n, s.path("name"))) {
          for (const auto& [other, mark] : names) {
            if (other == *v) {
              d_.error(n->Mark(), s.path("name") + ": duplicate policy name '" + *v + "' (first at line " +
                                      line_of(mark) + ")");
            }
          }
          names.emplace_back(*v, n->Mark());
          policy.name = std::move(*v);
        }
      }
      if (auto n = s.require("senders")) {
        detail::read_list(d_, *n, s.path("senders"), [&](const YAML::Node& t, const std::string& p) {
          if (auto v = nonempty_string(t, p)) {
            policy.senders.push_back(std::move(*v));
          }
        });
      }
      // Filter entries are checked against the subnets only when every one of them resolved.
      bool subnets_ok = false;
      if (auto n = s.require("subnets")) {
        bool refs_ok = true;
        bool is_list = detail::read_list(d_, *n, s.path("subnets"), [&](const YAML::Node& t, const std::string& p) {
          refs_ok = subnet_ref(t, p, policy) && refs_ok;
        });
        subnets_ok = is_list && refs_ok;
      }
      if (auto n = s.get("filter")) {
        detail::read_list(d_, *n, s.path("filter"), [&](const YAML::Node& t, const std::string& p) {
          auto range = detail::read_addr_range(d_, t, p);
          if (!range) {
            return;
          }
          bool inside = false;
          for (const Prefix& sub : policy.subnets) {
            inside = inside || (sub.contains(range->first) && sub.contains(range->last));
          }
          if (!inside && subnets_ok) {
            d_.error(t.Mark(), p + ": " + t.Scalar() + " is outside the policy's subnets");
          }
          policy.filter.push_back(*range);
        });
      }
      if (auto n = s.get("acl")) {
        detail::read_list(d_, *n, s.path("acl"), [&](const YAML::Node& t, const std::string& p) {
          if (auto rule = acl_rule(t, p)) {
            policy.acl.push_back(*rule);
          }
        });
      } else {
        policy.acl.push_back(AclRule{AclAction::allow, Protocol::any, {}});
      }
      if (auto n = s.get("require")) {
        Section r(d_, *n, s.path("require"), {"source_ips", "attributes"});
        if (auto ips = r.get("source_ips")) {
          detail::read_list(d_, *ips, r.path("source_ips"), [&](const YAML::Node& t, const std::string& p) {
            if (auto v = detail::read_prefix(d_, t, p, PrefixKind::network_or_host)) {
              policy.require.source_ips.push_back(*v);
            }
          });
        }
        if (auto attrs = r.get("attributes")) {
          detail::read_list(d_, *attrs, r.path("attributes"), [&](const YAML::Node& t, const std::string& p) {
            if (auto v = nonempty_string(t, p)) {
              policy.require.attributes.push_back(std::move(*v));
            }
          });
        }
      }
      set_enum(s, "gateway_priority", policy.gateway_priority, kGatewayPriorities);
      config.policies.push_back(std::move(policy));
    });
  }

  // A policy's subnet: a subnet's name, or a prefix inside what this gateway routes to.
  bool subnet_ref(const YAML::Node& node, const std::string& path, Policy& policy) {
    auto ref = nonempty_string(node, path);
    if (!ref) {
      return false;
    }
    for (const Subnet& sub : config.subnets) {
      if (sub.name == *ref) {
        policy.subnet_refs.push_back(*ref);
        policy.subnets.push_back(sub.prefix);
        return true;
      }
    }
    bool looks_like_address = !ref->empty() && ref->find_first_not_of("0123456789./") == std::string::npos;
    if (looks_like_address) {
      auto prefix = detail::read_prefix(d_, node, path, PrefixKind::network_or_host);
      if (!prefix) {
        return false;
      }
      for (const Prefix& r : routable()) {
        if (r.contains(*prefix)) {
          policy.subnet_refs.push_back(*ref);
          policy.subnets.push_back(*prefix);
          return true;
        }
      }
      d_.error(node.Mark(), path + ": " + *ref + " is not inside any subnet of this gateway");
      return false;
    }
    std::string message = path + ": unknown subnet '" + *ref + "'";
    std::vector<std::string_view> known;
    for (const Subnet& sub : config.subnets) {
      known.push_back(sub.name);
    }
    if (auto hint = detail::did_you_mean(*ref, known)) {
      message += " (did you mean '" + *hint + "'?)";
    }
    d_.error(node.Mark(), message);
    return false;
  }

  // protocol and ports, shared by ACL rules and firewall rules.
  bool protocol_ports(const Section& s, Protocol& protocol, std::vector<PortRange>& ports) {
    bool ok = true;
    if (auto n = s.get("protocol")) {
      if (auto v = detail::read_enum(d_, *n, s.path("protocol"), kProtocols)) {
        protocol = *v;
      } else {
        ok = false;
      }
    }
    if (auto n = s.get("ports")) {
      if (auto v = detail::read_port_ranges(d_, *n, s.path("ports"))) {
        ports = std::move(*v);
        if (ok && !ports.empty() && protocol != Protocol::tcp && protocol != Protocol::udp) {
          d_.error(n->Mark(), s.path("ports") + ": ports need protocol tcp or udp (this rule's protocol is " +
                                  to_string(protocol) + ")");
          ok = false;
        }
      } else {
        ok = false;
      }
    }
    return ok;
  }

  std::optional<AclRule> acl_rule(const YAML::Node& node, const std::string& path) {
    Section s(d_, node, path, {"action", "protocol", "ports"});
    if (!s.is_map()) {
      return std::nullopt;
    }
    AclRule rule;
    bool ok = false;
    if (auto n = s.require("action")) {
      if (auto v = detail::read_enum(d_, *n, s.path("action"), kAclActions)) {
        rule.action = *v;
        ok = true;
      }
    }
    ok = protocol_ports(s, rule.protocol, rule.ports) && ok;
    if (!ok) {
      return std::nullopt;
    }
    return rule;
  }

  void domains(const Section& s, std::string_view key, std::vector<std::string>& out, bool allow_wildcard) {
    auto n = s.get(key);
    if (!n) {
      return;
    }
    detail::read_list(d_, *n, s.path(key), [&](const YAML::Node& e, const std::string& p) {
      auto v = detail::read_string(d_, e, p);
      if (!v) {
        return;
      }
      if (!valid_domain(*v, allow_wildcard)) {
        d_.error(e.Mark(), p + ": bad domain name '" + *v + "'");
        return;
      }
      out.push_back(std::move(*v));
    });
  }

  void dns(const YAML::Node& node) {
    Section s(d_, node, "dns",
              {"enabled", "upstreams", "hosts_file", "search", "blocklists", "allowlist", "block_response"});
    if (!s.is_map()) {
      return;
    }
    Dns& dns = config.dns;
    set_bool(s, "enabled", dns.enabled);
    if (auto n = s.get("upstreams")) {
      detail::read_list(d_, *n, s.path("upstreams"), [&](const YAML::Node& e, const std::string& p) {
        if (auto v = detail::read_sockaddr(d_, e, p, 53)) {
          dns.upstreams.push_back(*v);
        }
      });
    }
    if (auto n = s.get("hosts_file")) {
      if (auto v = nonempty_string(*n, s.path("hosts_file"))) {
        dns.hosts_file = resolve(*v);
      }
    }
    domains(s, "search", dns.search, false);
    if (auto n = s.get("blocklists")) {
      detail::read_list(d_, *n, s.path("blocklists"), [&](const YAML::Node& e, const std::string& p) {
        if (auto v = nonempty_string(e, p)) {
          dns.blocklists.push_back(resolve(*v));
        }
      });
    }
    domains(s, "allowlist", dns.allowlist, true);
    set_enum(s, "block_response", dns.block_response, kBlockResponses);
  }

  void metrics(const YAML::Node& node) {
    Section s(d_, node, "metrics", {"listen"});
    if (auto n = s.get("listen")) {
      if (auto v = detail::read_sockaddr(d_, *n, s.path("listen"))) {
        config.metrics.listen = *v;
      }
    }
  }

  void control(const YAML::Node& node) {
    Section s(d_, node, "control", {"socket", "watch_config"});
    set_string(s, "socket", config.control.socket);
    set_bool(s, "watch_config", config.control.watch_config);
  }

  void firewall(const YAML::Node& node) {
    Section s(d_, node, "firewall", {"enabled", "security_groups"});
    if (!s.is_map()) {
      return;
    }
    set_bool(s, "enabled", config.firewall.enabled);
    auto groups = s.get("security_groups");
    if (!groups) {
      return;
    }
    std::vector<std::pair<std::string, YAML::Mark>> names;
    detail::read_list(d_, *groups, s.path("security_groups"), [&](const YAML::Node& e, const std::string& path) {
      Section g(d_, e, path, {"name", "inbound", "outbound"});
      if (!g.is_map()) {
        return;
      }
      SecurityGroup group;
      if (auto n = g.require("name")) {
        if (auto v = nonempty_string(*n, g.path("name"))) {
          for (const auto& [other, mark] : names) {
            if (other == *v) {
              d_.error(n->Mark(), g.path("name") + ": duplicate security group '" + *v + "' (first at line " +
                                      line_of(mark) + ")");
            }
          }
          names.emplace_back(*v, n->Mark());
          group.name = std::move(*v);
        }
      }
      firewall_rules(g, "inbound", "sources", group.inbound);
      firewall_rules(g, "outbound", "destinations", group.outbound);
      config.firewall.security_groups.push_back(std::move(group));
    });
  }

  void firewall_rules(const Section& g, std::string_view key, std::string_view peers_key,
                      std::vector<FirewallRule>& out) {
    auto n = g.get(key);
    if (!n) {
      return;
    }
    detail::read_list(d_, *n, g.path(key), [&](const YAML::Node& e, const std::string& path) {
      Section r(d_, e, path, {"protocol", "ports", peers_key});
      if (!r.is_map()) {
        return;
      }
      FirewallRule rule;
      protocol_ports(r, rule.protocol, rule.ports);
      if (auto list = r.get(peers_key)) {
        detail::read_list(d_, *list, r.path(peers_key), [&](const YAML::Node& t, const std::string& p) {
          if (auto v = detail::read_prefix(d_, t, p, PrefixKind::network_or_host)) {
            rule.peers.push_back(*v);
          }
        });
      }
      out.push_back(std::move(rule));
    });
  }

  Diag& d_;
  std::string base_dir_;
  std::vector<PortMarks> port_marks_;
  std::vector<SubnetMarks> subnet_marks_;
  std::vector<PeerMarks> peer_marks_;
  YAML::Mark gateway_address_;
  bool gateway_address_ok_ = false;
  bool gateway_key_ok_ = false;
};

// Records where documents start; the rest of the events are of no interest.
class DocumentStarts : public YAML::EventHandler {
 public:
  std::vector<YAML::Mark> marks;
  void OnDocumentStart(const YAML::Mark& mark) override { marks.push_back(mark); }
  void OnDocumentEnd() override {}
  void OnNull(const YAML::Mark&, YAML::anchor_t) override {}
  void OnAlias(const YAML::Mark&, YAML::anchor_t) override {}
  void OnScalar(const YAML::Mark&, const std::string&, YAML::anchor_t, const std::string&) override {}
  void OnSequenceStart(const YAML::Mark&, const std::string&, YAML::anchor_t, YAML::EmitterStyle::value) override {}
  void OnSequenceEnd() override {}
  void OnMapStart(const YAML::Mark&, const std::string&, YAML::anchor_t, YAML::EmitterStyle::value) override {}
  void OnMapEnd() override {}
};

// Where a second YAML document starts, if there is one. Not YAML::LoadAll: yaml-cpp 0.7 loops forever
// (allocating) on a stray flow token such as " ,", reporting the same document again and again without
// consuming it. Two documents at most are looked at, and a "document" starting where the first did is that loop.
std::optional<YAML::Mark> second_document(const std::string& text) {
  std::istringstream in(text);
  YAML::Parser parser(in);
  DocumentStarts starts;
  if (!parser.HandleNextDocument(starts) || !parser.HandleNextDocument(starts) || starts.marks.size() < 2 ||
      starts.marks[1].pos <= starts.marks[0].pos) {
    return std::nullopt;
  }
  return starts.marks[1];
}

}  // namespace

LoadResult load_string(std::string_view yaml, const std::string& file_label, const std::string& base_dir) {
  LoadResult result;
  Diag diag(file_label);
  try {
    std::string text(yaml);
    YAML::Node root = YAML::Load(text);
    if (auto second = second_document(text)) {
      diag.error(*second, "only one YAML document is allowed");
    }
    Loader loader(diag, base_dir);
    loader.load(root);
    if (diag.empty()) {
      loader.config.source_file = file_label;
      result.config = std::move(loader.config);
    }
  } catch (const YAML::Exception& e) {
    // Syntax errors: yaml-cpp's what() repeats the position, msg is the bare message.
    diag.error(e.mark, e.msg);
  } catch (const std::exception& e) {
    diag.error(YAML::Mark::null_mark(), std::string("cannot load the configuration: ") + e.what());
  }
  result.errors = diag.take();
  return result;
}

LoadResult load_file(const std::string& path) {
  std::string text;
  int err = 0;
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    err = errno;
  } else {
    char buf[65536];
    while (true) {
      ssize_t n = read(fd, buf, sizeof buf);
      if (n < 0 && errno == EINTR) {
        continue;
      }
      if (n < 0) {
        err = errno;
      }
      if (n <= 0) {
        break;
      }
      text.append(buf, static_cast<size_t>(n));
    }
    close(fd);
  }
  if (err != 0) {
    LoadResult result;
    result.errors.push_back(Error{path, 0, 0, std::string("cannot read the configuration: ") + std::strerror(err)});
    return result;
  }
  return load_string(text, path, std::filesystem::path(path).parent_path().string());
}

std::vector<SockAddr> resolv_conf_nameservers(const std::string& path) {
  std::vector<SockAddr> out;
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream words(line);
    std::string keyword, value;
    if (words >> keyword >> value && keyword == "nameserver") {
      if (auto a = parse_ipv4(value)) {
        out.push_back(SockAddr{*a, 53});
      }
    }
  }
  return out;
}

}  // namespace sluice::config
