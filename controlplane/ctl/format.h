// Human-readable rendering of control socket results for sluicectl.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

namespace sluice::ctl {

// `status`: a Gateway block, one Port block per port, one Peer block per peer and a Counters
// block of the non-zero handshake outcomes and drops. Unknown fields are ignored, missing ones
// leave their line out.
std::string format_status(const nlohmann::json& status);

// `peers`: a table of name, state, endpoint, virtual address, handshake age, rx and tx.
// Takes the array of peers, or an object holding it under "peers".
std::string format_peers(const nlohmann::json& peers);

// `policies`: one Policy block per policy (senders, subnets, filter, the ACL one rule a line with its
// index, trust requirements, gateway priority, the peers it applies to and those its trust requirements
// hold back). Takes {"policies": [...]} or the array.
std::string format_policies(const nlohmann::json& policies);
// `attestations`: a table of peer, attribute, source (config or control) and expiry.
std::string format_attestations(const nlohmann::json& result);
// `subnets`: a table of name, prefix, origin, preferred, available, interface, the DPDK port the
// data path routes it through, and when it was last seen. Takes the list or {"subnets": [...]}.
std::string format_subnets(const nlohmann::json& result);

// Any other result: `key: value` lines, nested objects indented, arrays of objects as tables.
std::string format_generic(const nlohmann::json& result);

// Picks the renderer for `command` (the wire name, e.g. "status", "dns_log").
std::string format_result(const std::string& command, const nlohmann::json& result);

// Building blocks, exposed for tests.

// "   Label . . . . . : value\n": the label padded with alternating dots to `width` columns.
std::string field_line(std::string_view label, std::string_view value, std::size_t indent = 3,
                       std::size_t width = 20);
// 512 -> "512 B", 3545 -> "3.462 KB" (1024-based, three decimals), then MB, GB, TB.
std::string format_bytes(double bytes);
// An age: 0.5 -> "0.50 seconds", 3.2 -> "3.2 seconds", 150 -> "2.5 minutes", then hours, days.
std::string format_age(double seconds);
// A duration in whole units: 12.5 -> "12 seconds", 3725 -> "1 hour 2 minutes".
std::string format_duration(double seconds);
// A JSON scalar as text (strings without quotes, null as "-"); containers as compact JSON.
std::string scalar_text(const nlohmann::json& value);

}  // namespace sluice::ctl
