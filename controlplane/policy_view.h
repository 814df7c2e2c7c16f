// What sluicectl shows of the gateway access policies: `sluicectl policies` (each policy, its ACL with
// rule indices, its trust requirements and the peers it admits), and per peer in `sluicectl status`
// the subnets the peer may reach through this gateway ("Gateway for") and the ACL rules that apply to
// it. Plain functions of the configuration and of which policies apply to which peer, so they are
// tested without DPDK; the control thread takes "which policies apply" from the published
// CompiledPolicy (its sender classes, trust requirements included).
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "controlplane/config/config.h"

namespace sluice::cp {

struct PeerRef {
  std::string name;
  uint32_t index = 0;  // the peer's index for the policy (config.peers order, = the dataplane peer id)
  std::vector<std::string> tags;
};

// Ascending indices into config.policies of the policies that apply to a peer.
using AppliedPolicies = std::function<std::vector<uint16_t>(uint32_t peer_index)>;

// {"policies": [{"index", "name", "senders", "subnets": [{"name", "prefix"}], "filter", "acl": [{"index",
// "action", "protocol", "ports", "text"}], "require": {"source_ips", "attributes"}, "gateway_priority",
// "peers": [names it applies to], "peers_failing_require": [names with a sender tag it does not apply
// to]}]}
nlohmann::json policies_view(const config::Config& cfg, const std::vector<PeerRef>& peers,
                             const AppliedPolicies& applied);

// The destinations of the applied policies, in policy order without repeats: the filter entries of a
// policy with a filter, else its subnets as "PREFIX (NAME)" ("PREFIX" when the name is the prefix).
nlohmann::json gateway_for(const config::Config& cfg, const std::vector<uint16_t>& applied);

// The ACL rules of the applied policies in order, each {"policy", "index", "action", "protocol",
// "ports", "from": "peer", "to": policy name}, as `sluicectl status` lists them after "ACLs".
nlohmann::json peer_acls(const config::Config& cfg, const std::vector<uint16_t>& applied);

// An address range as text: one address, a CIDR block when the range is one, else "FIRST-LAST".
std::string range_text(const config::AddrRange& r);

}  // namespace sluice::cp
