// Trust requirements of gateway access policies (gateway.yaml `policies[].require`), evaluated
// by the control thread for each peer against what it knows now:
//  - source_ips: the peer's current underlay endpoint (PeerSlot::endpoint, which the owner
//    worker moves when the peer roams) must be inside one of the prefixes;
//  - attributes: each named attestation must hold, either set to `true` in the peer's
//    configuration (`attributes: {mfa: true}`: permanent) or attested over the control socket
//    (`sluicectl attest PEER NAME --for 15m`), until it expires or is revoked.
// A policy applies to a peer iff the peer has one of its sender tags AND all of its requirements
// hold; CompiledPolicy precomputes a sender class for every combination, so a change only
// re-points peers at other classes (CompiledPolicy::with_classes), see gateway_trust.cpp.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "controlplane/config/config.h"

namespace sluice::policy {

// Attestations set over the control socket, per peer name and attribute name. Times are Unix
// nanoseconds (system clock: `--until` names a wall-clock instant).
class Attestations {
 public:
  struct Entry {
    int64_t set_ns = 0;
    int64_t expires_ns = 0;  // 0 = until revoked
  };
  using Key = std::pair<std::string, std::string>;  // peer, attribute

  void set(const std::string& peer, const std::string& name, int64_t now_ns, int64_t expires_ns);
  bool revoke(const std::string& peer, const std::string& name);
  // Removes the attestations expired at `now_ns` and returns their keys.
  std::vector<Key> expire(int64_t now_ns);
  bool holds(const std::string& peer, const std::string& name, int64_t now_ns) const;
  const Entry* find(const std::string& peer, const std::string& name) const;
  const std::map<Key, Entry>& all() const { return entries_; }
  // The earliest expiry, or INT64_MAX when none expires.
  int64_t next_expiry() const { return next_expiry_; }

 private:
  void recompute_next();
  std::map<Key, Entry> entries_;
  int64_t next_expiry_ = INT64_MAX;
};

// What the control thread knows about a peer when it evaluates requirements.
struct PeerFacts {
  const config::Peer* peer = nullptr;       // configuration (name, attributes)
  std::optional<uint32_t> endpoint_addr;    // current underlay source address; nullopt = unknown
  const Attestations* attestations = nullptr;
  int64_t now_ns = 0;                       // Unix time
};

// A configured attribute counts when it is the boolean true.
bool configured_attribute(const config::Peer& peer, const std::string& name);
bool attribute_holds(const PeerFacts& f, const std::string& name);
bool requirement_holds(const config::TrustRequirements& r, const PeerFacts& f);
// Why `r` does not hold, for people (sluicectl explain), e.g. "requires source_ips
// [203.0.113.0/24]; peer endpoint 192.0.2.10 is outside"; empty when it holds.
std::string requirement_unmet(const config::TrustRequirements& r, const PeerFacts& f);
// "source_ips [203.0.113.0/24], attributes [mfa]"
std::string requirement_text(const config::TrustRequirements& r);
bool requirement_empty(const config::TrustRequirements& r);

// "15m", "90s", "2h", "1h30m", "500ms", "1d": nanoseconds > 0; nullopt when malformed.
std::optional<int64_t> parse_duration(std::string_view s);
// RFC 3339: "2026-11-21T23:00:00Z", "2026-11-21T23:00:00.5+01:00" -> Unix nanoseconds.
std::optional<int64_t> parse_rfc3339(std::string_view s);
// Unix nanoseconds -> "2026-11-21T23:00:00Z" (UTC, whole seconds).
std::string format_rfc3339(int64_t unix_ns);

}  // namespace sluice::policy
