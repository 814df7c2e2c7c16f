// Gateway access policies compiled for the fast path.
//
// The control thread builds a CompiledPolicy from the configuration (subnets, policies, ports and
// the peers with their tags), publishes it to workers with one pointer store and retires the
// previous generation through dp::Rcu. Once built it is immutable: workers call classify() and
// route()/route_bulk() concurrently without locks; a change of policies, peers, tags or trust
// facts means building a new generation.
//
// Semantics (gateway.yaml `policies`):
//  - A policy applies to a peer when the peer has one of its sender tags AND the caller's
//    `applies` predicate (trust requirements) holds for that pair.
//  - Peers with the same set of applicable policies share a sender class; class 0 = none applies.
//    Rules never multiply by the number of peers.
//  - A policy's destinations are its subnet filter (addresses, ranges, CIDR blocks) when it has
//    one, else its subnets, merged into disjoint address ranges. Its ACL is ordered, first match
//    wins; when no rule matches a destination inside the policy, the policy denies ("default
//    deny"). The loader turns an absent `acl:` into [allow any]; an empty list allows nothing.
//  - A flow is allowed iff SOME policy applying to its sender allows it: a deny ends only that
//    policy's evaluation.
//  - Ports in a rule only constrain tcp and udp (the loader rejects them elsewhere).
//
// How the union of first-match lists maps onto one rte_acl context:
//  - Key: {protocol, destination (range), sender class, destination port class}. Port classes
//    are the intervals into which the rules' port ranges cut 0-65535 (port_class_ maps a port
//    to its interval's number): the same matches as the ports, with much smaller tries.
//  - Within a policy, a rule emits only the (protocol, port) space no earlier rule of the policy
//    takes (first match within a policy depends on protocol and port alone): shadowed rules and
//    port ranges cost no rte rule. Policies that apply to
//    exactly the same peers form a sender group (in practice one per distinct senders/require
//    combination); a rule is emitted once per run of consecutive class ids of its group, never
//    per peer. Classes are numbered so that each group's classes form few runs (greedy: each
//    next class starts as few new groups as possible).
//  - Each policy gets one rte_acl category (its slot). Policies that can apply to a same peer and
//    whose destinations overlap get different slots (greedy colouring in policy order); the
//    others share, since no flow can match both. Priority decreases with rule order, so each
//    category yields its policy's first matching rule. When a policy finds all 16
//    (RTE_ACL_MAX_CATEGORIES) slots taken by such conflicting policies, the build fails with an
//    error naming the policies and a peer they apply to.
//  - Userdata = deny << 31 | policy << 16 | (rule + 1, or 0xFFFF for the default deny): the
//    smallest non-zero result over a flow's categories is the decision (allows first, then the
//    lowest policy index), with no branch per category.
//  (A bitmap of groups in the key instead of the class id was tried: rte_acl's tries explode on
//  BITMASK fields with a different bit per rule, and the build fails beyond 8 tries.)
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "controlplane/config/config.h"

struct rte_acl_ctx;
struct rte_lpm;

namespace sluice::policy {

// IP protocol numbers as they appear in the IPv4 header.
inline constexpr uint8_t kProtoIcmp = 1;
inline constexpr uint8_t kProtoTcp = 6;
inline constexpr uint8_t kProtoUdp = 17;

inline constexpr unsigned kMaxBurst = 64;          // keys per rte_acl_classify call
inline constexpr unsigned kMaxSlots = 16;          // RTE_ACL_MAX_CATEGORIES
inline constexpr size_t kMaxPolicies = 0x7FFF;     // policy index fits 15 bits of userdata
inline constexpr size_t kMaxRulesPerPolicy = 0xFFFD;
inline constexpr size_t kMaxClasses = 0xFFFF;      // class ids travel as 16 bits in the rte_acl key
inline constexpr size_t kMaxEnumeratedRequirements = 6;  // per peer: 2^6 precomputed classes at most

// Verdict::policy when no applicable policy's destinations contain the flow's destination.
inline constexpr uint16_t kNoPolicy = 0xFFFF;
// Verdict::rule when no rule decided: the policy's default deny, or no policy at all.
inline constexpr uint16_t kNoRule = 0xFFFF;

// A flow as the fast path sees it, host byte order. dport is ignored unless proto is tcp/udp.
struct FlowKey {
  uint32_t sender_class;
  uint32_t dst;
  uint8_t proto;
  uint16_t dport;
};

struct Verdict {
  bool allow;
  uint16_t policy;  // index into config.policies of the deciding policy, or kNoPolicy
  uint16_t rule;    // index into that policy's acl of the deciding rule, or kNoRule
  friend bool operator==(const Verdict&, const Verdict&) = default;
};

// Where a routed destination leaves the gateway.
struct Route {
  uint16_t port = 0;           // index into config.dataplane.ports (= dp::Dataplane::ports)
  uint32_t via = 0;            // next hop, host order; 0 = on-link (the destination itself)
  bool snat_underlay = false;  // egress through the underlay port (Internet egress)
  // Source address after SNAT: always the egress port's own address, so replies come back to
  // the gateway. LAN prefixes and on-link subnets: that LAN port's address; `via` subnets: the
  // address of the port whose network holds the router; 0.0.0.0/0 and subnets outside every port
  // network without `via`: the underlay port's address (snat_underlay = true).
  uint32_t snat_addr = 0;
  uint32_t subnet_index = 0;   // index into CompiledPolicy::subnets()
};

// A subnet this gateway routes to: config.subnets in order, then the networks of LAN ports that
// the configuration does not list (always routed, named by their prefix).
struct RoutedSubnet {
  config::Prefix prefix;  // no host bits
  std::string name;
  int config_index = -1;  // index into config.subnets; -1 for a LAN port's own network
  Route route;
};

enum class Reason : uint8_t {
  allowed_by_rule,     // rule `rule` of `policy` allows
  denied_by_rule,      // rule `rule` of `policy` denies, and no other policy allows
  default_deny,        // inside `policy`'s destinations but none of its rules matches
  outside_policies,    // no applicable policy covers the destination
  no_policy_for_peer,  // the peer is in class 0
  no_route,            // the gateway does not route the destination at all
  unknown_peer,        // peer index out of range
  requirement_unmet,   // denied, and a policy that would allow does not apply: its trust requirements fail
};
const char* to_string(Reason r);

struct Explanation {
  bool allow = false;
  Reason code = Reason::no_route;
  std::string reason;      // one sentence for people (sluicectl explain)
  std::string policy;      // name of the deciding policy; empty when none
  int policy_index = -1;   // index into config.policies; -1 when none
  int rule = -1;           // 0-based index of the deciding rule; -1 for default deny or none
  std::string rule_text;   // the deciding rule as written, e.g. "deny tcp 22"
  std::vector<std::string> considered;  // each applicable policy and what it said, in order
  std::optional<Route> route;
  uint32_t sender_class = 0;
};

// `applies` narrows tag matching (trust requirements): a policy applies to a peer iff
// tags_match(peer, policy) && applies(peer, policy). An empty function means tags alone.
using AppliesFn = std::function<bool(const config::Peer&, const config::Policy&)>;
bool tags_match(const config::Peer& peer, const config::Policy& policy);
// For explain(): why a trust requirement does not hold for the peer explained (trust.h
// requirement_unmet()); empty when it holds.
using UnmetFn = std::function<std::string(const config::TrustRequirements&)>;

std::string rule_text(const config::AclRule& rule);

class CompiledPolicy {
 public:
  struct Stats {
    size_t policies = 0;
    size_t acl_rules = 0;     // ACL rules over all policies, as configured
    size_t rte_rules = 0;     // rules in the rte_acl context: per class run x dst range x port range
    size_t port_classes = 0;  // intervals of destination ports the rules tell apart; 0: ports kept
    size_t classes = 0;       // sender classes, class 0 included
    size_t groups = 0;        // sender groups (policies applying to the same peers)
    size_t class_runs = 0;    // runs of consecutive class ids over all policies (rules repeat per run)
    unsigned categories = 0;  // rte_acl categories per flow (1 or a multiple of 4)
    size_t routes = 0;
    size_t acl_bytes = 0;     // rte_malloc heap growth while building the context (approximate)
    size_t lpm_bytes = 0;
    double build_seconds = 0;      // the whole of build()
    double acl_build_seconds = 0;  // rte_acl_build alone
  };

  // Needs the EAL. Returns nullptr and sets *err when the configuration cannot be compiled.
  // Trust requirements: besides each peer's class under `applies`, a class is precomputed for
  // every combination of the requirements relevant to a peer (those of the policies its tags
  // match, up to kMaxEnumeratedRequirements of them), so that when a requirement starts or stops
  // holding, with_classes() re-points the peer without rebuilding rte_acl.
  static std::unique_ptr<CompiledPolicy> build(const config::Config& cfg, const AppliesFn& applies,
                                               uint64_t generation, std::string* err);
  ~CompiledPolicy();
  CompiledPolicy& operator=(const CompiledPolicy&) = delete;

  uint64_t generation() const { return generation_; }
  // Before publication only: the generation is assigned when the policy is published.
  void set_generation(uint64_t g) { generation_ = g; }
  const Stats& stats() const { return stats_; }
  size_t memory_bytes() const { return stats_.acl_bytes + stats_.lpm_bytes; }

  // --- Sender classes. ---
  // peer_index: index into config.peers; 0 when out of range or no policy applies.
  uint32_t class_of(uint32_t peer_index) const {
    return peer_index < peer_class_.size() ? peer_class_[peer_index] : 0;
  }
  size_t class_count() const { return class_policies_.size(); }
  // Ascending policy indices applying to a class (empty for class 0 and unknown classes).
  const std::vector<uint16_t>& class_policies(uint32_t cls) const;
  // The class of a peer added after the build with this set of applicable policies (ascending),
  // or nullopt when no configured peer had it (then a rebuild is needed).
  std::optional<uint32_t> find_class(const std::vector<uint16_t>& policies) const;

  // --- Trust requirements (control thread). ---
  // The distinct non-empty `require` blocks of the policies; ids index this vector.
  const std::vector<config::TrustRequirements>& requirements() const { return requirements_; }
  // Requirement id of a policy, or -1 when it has none.
  int policy_requirement(uint16_t policy) const {
    return policy < policy_req_.size() ? policy_req_[policy] : -1;
  }
  // Ascending requirement ids of the policies a configured peer's tags match.
  const std::vector<uint16_t>& peer_requirements(uint32_t peer_index) const;
  // The class of a configured peer when exactly the requirements r with held[r] hold (ids not
  // in `held` count as not holding); nullopt when that combination has no precomputed class
  // (then build again with a matching `applies`).
  std::optional<uint32_t> class_with(uint32_t peer_index, const std::vector<bool>& held) const;
  // A new generation with the same tables (shared, not copied or rebuilt) and these peer
  // classes (indexed like config.peers; ids from this policy's classes).
  std::unique_ptr<CompiledPolicy> with_classes(std::vector<uint32_t> peer_class, uint64_t generation) const;

  // --- Fast path (workers). ---
  // Any n: bursts of kMaxBurst keys each go through one rte_acl_classify call.
  void classify(const FlowKey* keys, unsigned n, Verdict* out) const;
  // The key of a peer's flow. ACL ports name TCP/UDP ports only: an ICMP flow's "port" (the echo
  // identifier in the connection table) must not match them.
  FlowKey flow_key(uint32_t peer_index, uint32_t dst, uint8_t proto, uint16_t dport) const {
    return {class_of(peer_index), dst, proto, proto == 1 /* IPPROTO_ICMP */ ? uint16_t(0) : dport};
  }
  // nullptr when not routed. dst in host order.
  const Route* route(uint32_t dst) const;
  // One rte_lpm_lookup_bulk per kMaxBurst destinations; out[i] = nullptr when not routed.
  void route_bulk(const uint32_t* dst, unsigned n, const Route** out) const;

  // --- Control thread (sluicectl explain); agrees with classify() by construction and tests. ---
  // With `unmet`, a deny also names the tag-matched policies left out by trust requirements
  // (Reason::requirement_unmet when one of them would allow).
  Explanation explain(uint32_t peer_index, uint32_t dst, uint8_t proto, uint16_t dport,
                      const UnmetFn& unmet = {}) const;
  Explanation explain_class(uint32_t cls, uint32_t dst, uint8_t proto, uint16_t dport) const;

  const std::vector<RoutedSubnet>& subnets() const { return subnets_; }
  const std::string& policy_name(uint16_t policy) const { return policies_.at(policy).name; }

 private:
  struct PolicyInfo {
    std::string name;
    std::vector<config::AddrRange> dsts;  // canonical (merge_ranges)
    std::vector<config::AclRule> acl;
    int group = -1;    // -1: applies to no configured peer (no rules)
    uint8_t slot = 0;  // rte_acl category
  };

  struct RteTables;  // rte_acl/rte_lpm shared by the generations with_classes() makes

  CompiledPolicy() = default;
  CompiledPolicy(const CompiledPolicy&) = default;  // with_classes()
  void explain_unmet(uint32_t peer_index, uint32_t dst, uint8_t proto, uint16_t dport, const UnmetFn& unmet,
                     Explanation& e) const;
  bool build_policies(const config::Config& cfg, std::string* err);
  bool build_classes(const config::Config& cfg, const AppliesFn& applies, std::string* err);
  bool build_slots(std::string* err);
  bool build_routes(const config::Config& cfg, std::string* err);
  bool build_acl(std::string* err);
  void explain_policies(uint32_t cls, uint32_t dst, uint8_t proto, uint16_t dport, Explanation& e) const;

  uint64_t generation_ = 0;
  Stats stats_;
  std::vector<PolicyInfo> policies_;
  std::vector<uint32_t> peer_class_;
  std::vector<std::string> peer_names_;
  std::vector<std::vector<uint16_t>> class_policies_;  // [0] is empty
  std::vector<size_t> class_peer_;                     // a peer of each class (error messages)
  std::vector<std::vector<uint32_t>> group_classes_;   // classes of each group, ascending
  std::map<std::vector<uint16_t>, uint32_t> class_by_set_;

  rte_acl_ctx* acl_ = nullptr;  // nullptr when there is no rule at all
  std::vector<uint16_t> port_class_;  // destination port -> port class (the key's port field)
  unsigned categories_ = 1;
  std::vector<RoutedSubnet> subnets_;
  rte_lpm* lpm_ = nullptr;
  int default_route_ = -1;  // index into subnets_ of 0.0.0.0/0 (rte_lpm has no depth 0)

  // Trust requirements.
  std::vector<config::TrustRequirements> requirements_;
  std::vector<int> policy_req_;                        // per policy: id in requirements_ or -1
  std::vector<std::vector<uint16_t>> peer_policies_;   // per peer: policies its tags match
  std::vector<std::vector<uint16_t>> peer_reqs_;       // per peer: their requirement ids
  std::shared_ptr<RteTables> rte_tables_;              // set once built; frees acl_ and lpm_
};

}  // namespace sluice::policy
