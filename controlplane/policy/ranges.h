// Sets of IPv4 addresses as sorted, disjoint inclusive ranges. Policy destinations (subnets,
// subnet filters) are such sets; the rte_acl destination field matches one range per rule.
#pragma once

#include <cstdint>
#include <vector>

#include "controlplane/config/address.h"

namespace sluice::policy {

using config::AddrRange;
using config::Prefix;

// Sorted, disjoint port ranges: overlapping and adjacent ones joined.
std::vector<config::PortRange> merge_ports(std::vector<config::PortRange> ports);

inline AddrRange to_range(const Prefix& p) { return {p.network(), p.broadcast()}; }

// Sorted by first address, overlapping and adjacent ranges joined: the canonical form of a set.
std::vector<AddrRange> merge_ranges(std::vector<AddrRange> ranges);

// Both arguments canonical (merge_ranges).
bool ranges_overlap(const std::vector<AddrRange>& a, const std::vector<AddrRange>& b);
bool ranges_contain(const std::vector<AddrRange>& set, uint32_t addr);

}  // namespace sluice::policy
