// Compact construction of configurations for the policy tests, as the loader would produce them.
#pragma once

#include <algorithm>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "controlplane/config/config.h"

namespace sluice::policy::test {

inline uint32_t ip(const std::string& s) {
  auto v = config::parse_ipv4(s);
  if (!v) throw std::invalid_argument("bad address " + s);
  return *v;
}

inline config::Prefix pfx(const std::string& s) {
  auto v = config::parse_prefix(s);
  if (!v) throw std::invalid_argument("bad prefix " + s);
  return *v;
}

// "a.b.c.d", "a-b" or "a.b.c.d/len", as filter entries are written.
inline config::AddrRange range(const std::string& s) {
  if (auto dash = s.find('-'); dash != std::string::npos) {
    return {ip(s.substr(0, dash)), ip(s.substr(dash + 1))};
  }
  if (s.find('/') != std::string::npos) {
    auto p = pfx(s);
    return {p.network(), p.broadcast()};
  }
  return {ip(s), ip(s)};
}

// "deny tcp 22,80-90", "allow any", "allow icmp".
inline config::AclRule rule(const std::string& text) {
  std::istringstream in(text);
  std::string action, proto, ports;
  in >> action >> proto >> ports;
  config::AclRule r;
  r.action = action == "allow" ? config::AclAction::allow : config::AclAction::deny;
  r.protocol = proto == "tcp"    ? config::Protocol::tcp
               : proto == "udp"  ? config::Protocol::udp
               : proto == "icmp" ? config::Protocol::icmp
                                 : config::Protocol::any;
  std::istringstream ps(ports);
  for (std::string p; std::getline(ps, p, ',');) {
    auto dash = p.find('-');
    uint16_t a = uint16_t(std::stoul(p.substr(0, dash)));
    uint16_t b = dash == std::string::npos ? a : uint16_t(std::stoul(p.substr(dash + 1)));
    r.ports.push_back({a, b});
  }
  return r;
}

// The spec's appliance: wan 192.0.2.2/24 (gateway .254), lan 198.51.100.1/24, and the subnets
// "Menlo Park Office" (the LAN), "Lab" (203.0.113.0/24 via 198.51.100.254) and "Internet".
inline config::Config base_config(bool with_internet = true) {
  config::Config c;
  config::Port wan;
  wan.name = "wan";
  wan.role = config::PortRole::underlay;
  wan.address = pfx("192.0.2.2/24");
  wan.gateway = ip("192.0.2.254");
  config::Port lan;
  lan.name = "lan";
  lan.role = config::PortRole::lan;
  lan.address = pfx("198.51.100.1/24");
  c.dataplane.ports = {wan, lan};
  c.subnets.push_back({pfx("198.51.100.0/24"), "Menlo Park Office", true, std::nullopt});
  c.subnets.push_back({pfx("203.0.113.0/24"), "Lab", false, ip("198.51.100.254")});
  if (with_internet) {
    c.subnets.push_back({pfx("0.0.0.0/0"), "Internet", false, std::nullopt});
  }
  return c;
}

inline void add_peer(config::Config& c, const std::string& name, std::vector<std::string> tags) {
  config::Peer p;
  p.name = name;
  p.virtual_address = ip("100.64.0.2") + uint32_t(c.peers.size());
  p.tags = std::move(tags);
  c.peers.push_back(std::move(p));
}

// subnets: names of configured subnets or prefixes, as the loader resolves them; filter: range texts.
inline void add_policy(config::Config& c, const std::string& name, std::vector<std::string> senders,
                       const std::vector<std::string>& subnets, const std::vector<std::string>& filter,
                       const std::vector<std::string>& acl) {
  config::Policy p;
  p.name = name;
  p.senders = std::move(senders);
  for (const auto& s : subnets) {
    p.subnet_refs.push_back(s);
    auto named = std::find_if(c.subnets.begin(), c.subnets.end(), [&](const config::Subnet& n) { return n.name == s; });
    p.subnets.push_back(named != c.subnets.end() ? named->prefix : pfx(s));
  }
  for (const auto& f : filter) p.filter.push_back(range(f));
  for (const auto& a : acl) p.acl.push_back(rule(a));
  c.policies.push_back(std::move(p));
}

}  // namespace sluice::policy::test
