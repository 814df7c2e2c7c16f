#include "controlplane/policy_view.h"

#include <algorithm>

namespace sluice::cp {

using nlohmann::json;

namespace {

bool has_sender_tag(const std::vector<std::string>& tags, const config::Policy& policy) {
  for (const auto& t : policy.senders)
    if (std::find(tags.begin(), tags.end(), t) != tags.end()) return true;
  return false;
}

json ports_json(const config::AclRule& r) {
  json ports = json::array();
  for (const auto& p : r.ports) ports.push_back(config::to_string(p));
  return ports;
}

std::string rule_text(const config::AclRule& r) {
  std::string s = std::string(config::to_string(r.action)) + " " + config::to_string(r.protocol);
  for (size_t i = 0; i < r.ports.size(); ++i) s += (i ? "," : " ") + config::to_string(r.ports[i]);
  return s;
}

std::string subnet_text(const std::string& ref, const config::Prefix& prefix) {
  const std::string p = config::to_string(prefix);
  return ref == p ? p : p + " (" + ref + ")";
}

}  // namespace

std::string range_text(const config::AddrRange& r) {
  if (r.first == r.last) return config::to_string(r.first);
  const uint64_t size = uint64_t(r.last) - r.first + 1;
  if ((size & (size - 1)) == 0 && (r.first & (size - 1)) == 0) {
    int len = 32;
    for (uint64_t s = size; s > 1; s >>= 1) --len;
    return config::to_string(config::Prefix{r.first, uint8_t(len)});
  }
  return config::to_string(r);
}

json gateway_for(const config::Config& cfg, const std::vector<uint16_t>& applied) {
  json out = json::array();
  std::vector<std::string> seen;
  const auto add = [&](std::string s) {
    if (std::find(seen.begin(), seen.end(), s) != seen.end()) return;
    seen.push_back(s);
    out.push_back(std::move(s));
  };
  for (uint16_t i : applied) {
    if (i >= cfg.policies.size()) continue;
    const config::Policy& p = cfg.policies[i];
    if (!p.filter.empty()) {
      for (const auto& r : p.filter) add(range_text(r));
    } else {
      for (size_t s = 0; s < p.subnets.size() && s < p.subnet_refs.size(); ++s)
        add(subnet_text(p.subnet_refs[s], p.subnets[s]));
    }
  }
  return out;
}

json peer_acls(const config::Config& cfg, const std::vector<uint16_t>& applied) {
  json out = json::array();
  for (uint16_t i : applied) {
    if (i >= cfg.policies.size()) continue;
    const config::Policy& p = cfg.policies[i];
    for (size_t r = 0; r < p.acl.size(); ++r) {
      const config::AclRule& rule = p.acl[r];
      json j = {{"policy", p.name},
                {"index", r},
                {"action", config::to_string(rule.action)},
                {"protocol", config::to_string(rule.protocol)},
                {"from", "peer"},
                {"to", p.name}};
      if (!rule.ports.empty()) j["ports"] = ports_json(rule);
      out.push_back(std::move(j));
    }
  }
  return out;
}

json policies_view(const config::Config& cfg, const std::vector<PeerRef>& peers, const AppliedPolicies& applied) {
  // Which policies apply to each peer, asked once per peer.
  std::vector<std::vector<uint16_t>> applied_to(peers.size());
  for (size_t k = 0; k < peers.size(); ++k) applied_to[k] = applied ? applied(peers[k].index) : std::vector<uint16_t>{};

  json list = json::array();
  for (size_t i = 0; i < cfg.policies.size(); ++i) {
    const config::Policy& p = cfg.policies[i];
    json subnets = json::array();
    for (size_t s = 0; s < p.subnets.size() && s < p.subnet_refs.size(); ++s)
      subnets.push_back({{"name", p.subnet_refs[s]}, {"prefix", config::to_string(p.subnets[s])}});
    json filter = json::array();
    for (const auto& r : p.filter) filter.push_back(range_text(r));
    json acl = json::array();
    for (size_t r = 0; r < p.acl.size(); ++r) {
      const config::AclRule& rule = p.acl[r];
      acl.push_back({{"index", r},
                     {"action", config::to_string(rule.action)},
                     {"protocol", config::to_string(rule.protocol)},
                     {"ports", ports_json(rule)},
                     {"text", rule_text(rule)}});
    }
    json source_ips = json::array();
    for (const auto& pre : p.require.source_ips) source_ips.push_back(config::to_string(pre));
    json in = json::array(), failing = json::array();
    for (size_t k = 0; k < peers.size(); ++k) {
      const auto& set = applied_to[k];
      if (std::find(set.begin(), set.end(), uint16_t(i)) != set.end()) {
        in.push_back(peers[k].name);
      } else if (has_sender_tag(peers[k].tags, p)) {
        failing.push_back(peers[k].name);
      }
    }
    list.push_back({{"index", i},
                    {"name", p.name},
                    {"senders", p.senders},
                    {"subnets", subnets},
                    {"filter", filter},
                    {"acl", acl},
                    {"require", {{"source_ips", source_ips}, {"attributes", p.require.attributes}}},
                    {"gateway_priority", config::to_string(p.gateway_priority)},
                    {"peers", in},
                    {"peers_failing_require", failing}});
  }
  return {{"policies", list}};
}

}  // namespace sluice::cp
