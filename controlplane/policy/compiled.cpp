#include "controlplane/policy/compiled.h"

#include <rte_acl.h>
#include <rte_byteorder.h>
#include <rte_errno.h>
#include <rte_lcore.h>
#include <rte_lpm.h>
#include <rte_malloc.h>

#include <algorithm>
#include <atomic>
#include <bit>
#include <chrono>
#include <climits>
#include <cstddef>
#include <cstring>

#include "controlplane/policy/ranges.h"
#include "controlplane/policy/trust.h"

namespace sluice::policy {

namespace {

using config::AclAction;
using config::AclRule;
using config::Prefix;
using config::Protocol;

// The rte_acl key: protocol (rte_acl consumes the first byte on its own), then 4-byte groups,
// network byte order. Class and port share a group: rte_acl wants 2-byte fields paired (a lone
// 2-byte range in a group only ever matched 0-65535 in tests, DPDK 22.11), and fewer groups mean
// fewer trie levels to build and walk.
//
// The destination is a RANGE field, not a MASK over CIDR blocks: a policy's destinations are
// merged address ranges (filters "a-b", subnets), one rule each. With the CIDR cover of the same
// ranges the 10k-rule benchmark needed 1.6x the rte rules and 1.7x the build time, for the same
// classify cost (bench/policy).
struct AclKey {
  uint8_t proto;
  uint8_t pad[3];
  uint32_t dst;
  uint16_t cls;
  uint16_t dport;
};
static_assert(sizeof(AclKey) == 12);

enum : uint8_t { kFieldProto, kFieldDst, kFieldClass, kFieldPort, kNumFields };
RTE_ACL_RULE_DEF(AclRule4, kNumFields);

const rte_acl_field_def kFieldDefs[kNumFields] = {
    {RTE_ACL_FIELD_TYPE_BITMASK, sizeof(uint8_t), kFieldProto, 0, offsetof(AclKey, proto)},
    {RTE_ACL_FIELD_TYPE_RANGE, sizeof(uint32_t), kFieldDst, 1, offsetof(AclKey, dst)},
    {RTE_ACL_FIELD_TYPE_RANGE, sizeof(uint16_t), kFieldClass, 2, offsetof(AclKey, cls)},
    {RTE_ACL_FIELD_TYPE_RANGE, sizeof(uint16_t), kFieldPort, 2, offsetof(AclKey, dport)},
};

constexpr uint32_t kDenyBit = 1u << 31;
// Above this many port classes the key carries the port itself (see build_acl).
constexpr size_t kMaxPortClasses = 1024;
constexpr uint16_t kDefaultCode = 0xFFFF;  // userdata rule code of a policy's default deny

constexpr uint32_t encode(bool allow, uint16_t policy, uint16_t code) {
  return (allow ? 0 : kDenyBit) | uint32_t(policy) << 16 | code;
}

// The deciding result among a flow's categories: smallest non-zero userdata; 0 when none.
inline uint32_t decide(const uint32_t* results, unsigned categories) {
  uint32_t best = UINT32_MAX;  // results[c] - 1 wraps 0 (no match) to the largest value
  for (unsigned c = 0; c < categories; c++) {
    best = std::min(best, results[c] - 1);
  }
  return best + 1;
}

inline Verdict to_verdict(uint32_t userdata) {
  if (userdata == 0) {
    return {false, kNoPolicy, kNoRule};
  }
  uint16_t code = uint16_t(userdata);
  return {(userdata & kDenyBit) == 0, uint16_t((userdata >> 16) & 0x7FFF),
          code == kDefaultCode ? kNoRule : uint16_t(code - 1)};
}

uint8_t proto_number(Protocol p) {
  switch (p) {
    case Protocol::tcp: return kProtoTcp;
    case Protocol::udp: return kProtoUdp;
    case Protocol::icmp: return kProtoIcmp;
    case Protocol::any: break;
  }
  return 0;
}

bool ports_apply(const AclRule& r) {
  return (r.protocol == Protocol::tcp || r.protocol == Protocol::udp) && !r.ports.empty();
}

bool rule_matches(const AclRule& r, uint8_t proto, uint16_t dport) {
  if (r.protocol != Protocol::any && proto_number(r.protocol) != proto) {
    return false;
  }
  if (!ports_apply(r)) {
    return true;
  }
  return std::any_of(r.ports.begin(), r.ports.end(), [&](const config::PortRange& p) { return p.contains(dport); });
}

// Rules after the first `protocol: any` rule can never decide; neither can the default deny.
size_t reachable_rules(const std::vector<AclRule>& acl, bool* default_reachable) {
  for (size_t i = 0; i < acl.size(); i++) {
    if (acl[i].protocol == Protocol::any) {
      *default_reachable = false;
      return i + 1;
    }
  }
  *default_reachable = true;
  return acl.size();
}

size_t heap_allocated() {
  size_t total = 0;
  for (unsigned i = 0; i < rte_socket_count(); i++) {
    rte_malloc_socket_stats st{};
    if (rte_malloc_get_socket_stats(rte_socket_id_by_idx(i), &st) == 0) {
      total += st.heap_allocsz_bytes;
    }
  }
  return total;
}

// Several generations coexist during an RCU grace period: every rte object gets its own name.
std::string unique_name(const char* what) {
  static std::atomic<uint64_t> counter{0};
  return std::string("pol_") + what + "_" + std::to_string(counter.fetch_add(1));
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

std::string join(const std::vector<std::string>& v, size_t max = 8) {
  std::string out;
  for (size_t i = 0; i < v.size() && i < max; i++) {
    out += (i ? ", " : "") + v[i];
  }
  if (v.size() > max) {
    out += ", ... (" + std::to_string(v.size()) + " in all)";
  }
  return out;
}


// The part of each reachable rule's (protocol, port) space that no earlier rule of the same
// policy already takes: a policy's rules share its destinations and senders, so first match
// within a policy depends on protocol and port alone, and a rule only ever decides where the
// rules before it do not match. Rules (and port ranges) shadowed that way emit no rte rule at all,
// which keeps the verdict (and the deciding rule) the same. [0] = [0, 65535] for rules without
// ports; an empty list: the rule can never decide.
std::vector<std::vector<config::PortRange>> effective_ports(const std::vector<AclRule>& acl, size_t n) {
  std::vector<std::vector<config::PortRange>> out(n);
  std::vector<config::PortRange> covered[3];  // tcp, udp, icmp: sorted, disjoint
  auto slot = [](Protocol p) { return p == Protocol::tcp ? 0 : p == Protocol::udp ? 1 : 2; };
  for (size_t i = 0; i < n; i++) {
    const AclRule& a = acl[i];
    std::vector<config::PortRange> want =
        ports_apply(a) ? merge_ports(a.ports) : std::vector<config::PortRange>{{0, 0xFFFF}};
    if (a.protocol == Protocol::any) {
      out[i] = std::move(want);  // the last reachable rule
      continue;
    }
    std::vector<config::PortRange>& cov = covered[slot(a.protocol)];
    size_t k = 0;
    for (const config::PortRange& w : want) {
      uint32_t from = w.first;
      for (; k < cov.size() && cov[k].last < w.first; k++) {
      }
      for (size_t j = k; j < cov.size() && cov[j].first <= w.last && from <= w.last; j++) {
        if (cov[j].first > from) {
          out[i].push_back({uint16_t(from), uint16_t(cov[j].first - 1)});
        }
        from = std::max<uint32_t>(from, uint32_t(cov[j].last) + 1);
      }
      if (from <= w.last) {
        out[i].push_back({uint16_t(from), w.last});
      }
    }
    cov.insert(cov.end(), want.begin(), want.end());
    cov = merge_ports(std::move(cov));
  }
  return out;
}

// rte rules a policy emits per run of class ids: destination ranges x effective port ranges of
// each reachable rule, plus the default deny.
size_t rules_per_run(const std::vector<config::AddrRange>& dsts, const std::vector<AclRule>& acl) {
  bool default_reachable = false;
  size_t n = reachable_rules(acl, &default_reachable);
  size_t per_dst = default_reachable ? 1 : 0;
  for (const auto& ports : effective_ports(acl, n)) {
    per_dst += ports.size();
  }
  return per_dst * dsts.size();
}

// Total weight of the groups in a but not in b (bitsets of `words` words).
double started(const uint64_t* a, const uint64_t* b, size_t words, const std::vector<double>& weight) {
  double sum = 0;
  for (size_t w = 0; w < words; w++) {
    for (uint64_t m = a[w] & ~b[w]; m != 0; m &= m - 1) {
      sum += weight[w * 64 + size_t(std::countr_zero(m))];
    }
  }
  return sum;
}

// An order of the classes (group bitsets) that keeps the classes of heavy groups adjacent:
// sum over groups of runs x weight is what the rule count pays. Greedy nearest neighbour (each
// next class starts the least weight of new runs), from several starting classes when there are
// few; set order past a few thousand classes.
std::vector<uint32_t> order_classes(const std::vector<uint64_t>& bits, size_t words, const std::vector<double>& weight) {
  const size_t n = bits.size() / words;
  std::vector<uint32_t> best_order(n);
  for (uint32_t i = 0; i < n; i++) {
    best_order[i] = i;
  }
  if (n <= 2 || n > 4096) {
    return best_order;
  }
  const std::vector<uint64_t> none(words, 0);
  std::vector<double> total(n);
  for (size_t i = 0; i < n; i++) {
    total[i] = started(&bits[i * words], none.data(), words, weight);
  }
  std::vector<uint32_t> starts = best_order;
  std::sort(starts.begin(), starts.end(), [&](uint32_t a, uint32_t b) { return total[a] > total[b]; });
  starts.resize(n <= 256 ? std::min<size_t>(n, 16) : 1);
  double best_cost = -1;
  for (uint32_t first : starts) {
    std::vector<bool> used(n, false);
    std::vector<uint32_t> order;
    size_t cur = first;
    double cost = total[cur];
    for (size_t k = 0; k < n; k++) {
      used[cur] = true;
      order.push_back(uint32_t(cur));
      size_t next = SIZE_MAX;
      std::pair<double, double> next_cost{0, 0};
      for (size_t t = 0; t < n; t++) {
        if (used[t]) {
          continue;
        }
        std::pair<double, double> c{started(&bits[t * words], &bits[cur * words], words, weight),
                                    started(&bits[cur * words], &bits[t * words], words, weight)};
        if (next == SIZE_MAX || c < next_cost) {
          next_cost = c;
          next = t;
        }
      }
      if (next != SIZE_MAX) {
        cost += next_cost.first;
      }
      cur = next;
    }
    if (best_cost < 0 || cost < best_cost) {
      best_cost = cost;
      best_order = std::move(order);
    }
  }
  return best_order;
}

}  // namespace

const char* to_string(Reason r) {
  switch (r) {
    case Reason::allowed_by_rule: return "allowed_by_rule";
    case Reason::denied_by_rule: return "denied_by_rule";
    case Reason::default_deny: return "default_deny";
    case Reason::outside_policies: return "outside_policies";
    case Reason::no_policy_for_peer: return "no_policy_for_peer";
    case Reason::no_route: return "no_route";
    case Reason::unknown_peer: return "unknown_peer";
    case Reason::requirement_unmet: return "requirement_unmet";
  }
  return "?";
}

bool tags_match(const config::Peer& peer, const config::Policy& policy) {
  for (const std::string& t : policy.senders) {
    if (std::find(peer.tags.begin(), peer.tags.end(), t) != peer.tags.end()) {
      return true;
    }
  }
  return false;
}

std::string rule_text(const AclRule& rule) {
  std::string s = std::string(config::to_string(rule.action)) + " " + config::to_string(rule.protocol);
  if (ports_apply(rule)) {
    s += " ";
    for (size_t i = 0; i < rule.ports.size(); i++) {
      s += (i ? "," : "") + config::to_string(rule.ports[i]);
    }
  }
  return s;
}

struct CompiledPolicy::RteTables {
  rte_acl_ctx* acl;
  rte_lpm* lpm;
  RteTables(rte_acl_ctx* a, rte_lpm* l) : acl(a), lpm(l) {}
  RteTables(const RteTables&) = delete;
  RteTables& operator=(const RteTables&) = delete;
  ~RteTables() {
    if (acl != nullptr) {
      rte_acl_free(acl);
    }
    if (lpm != nullptr) {
      rte_lpm_free(lpm);
    }
  }
};

CompiledPolicy::~CompiledPolicy() {
  if (rte_tables_ != nullptr) {
    return;  // the last generation sharing them frees the tables
  }
  if (acl_ != nullptr) {
    rte_acl_free(acl_);
  }
  if (lpm_ != nullptr) {
    rte_lpm_free(lpm_);
  }
}

const std::vector<uint16_t>& CompiledPolicy::class_policies(uint32_t cls) const {
  static const std::vector<uint16_t> kNone;
  return cls < class_policies_.size() ? class_policies_[cls] : kNone;
}

std::optional<uint32_t> CompiledPolicy::find_class(const std::vector<uint16_t>& policies) const {
  if (policies.empty()) {
    return 0;
  }
  auto it = class_by_set_.find(policies);
  if (it == class_by_set_.end()) {
    return std::nullopt;
  }
  return it->second;
}

std::unique_ptr<CompiledPolicy> CompiledPolicy::build(const config::Config& cfg, const AppliesFn& applies,
                                                      uint64_t generation, std::string* err) {
  auto t0 = std::chrono::steady_clock::now();
  std::string dummy;
  err = err != nullptr ? err : &dummy;
  if (cfg.policies.size() > kMaxPolicies) {
    *err = "policies: " + std::to_string(cfg.policies.size()) + " policies, at most " +
           std::to_string(kMaxPolicies) + " can be compiled";
    return nullptr;
  }
  std::unique_ptr<CompiledPolicy> cp(new CompiledPolicy());
  cp->generation_ = generation;
  if (!cp->build_routes(cfg, err) || !cp->build_policies(cfg, err) || !cp->build_classes(cfg, applies, err) ||
      !cp->build_slots(err) || !cp->build_acl(err)) {
    return nullptr;
  }
  // Built in place: a temporary RteTables would free the tables when it goes.
  cp->rte_tables_ = std::shared_ptr<RteTables>(new RteTables(cp->acl_, cp->lpm_));
  cp->stats_.build_seconds = seconds_since(t0);
  return cp;
}

// --- Trust requirements ----------------------------------------------------------------------

const std::vector<uint16_t>& CompiledPolicy::peer_requirements(uint32_t peer_index) const {
  static const std::vector<uint16_t> kNone;
  return peer_index < peer_reqs_.size() ? peer_reqs_[peer_index] : kNone;
}

std::optional<uint32_t> CompiledPolicy::class_with(uint32_t peer_index, const std::vector<bool>& held) const {
  if (peer_index >= peer_policies_.size()) {
    return std::nullopt;
  }
  std::vector<uint16_t> set;
  for (uint16_t p : peer_policies_[peer_index]) {
    const int r = policy_req_[p];
    if (r < 0 || (size_t(r) < held.size() && held[size_t(r)])) {
      set.push_back(p);
    }
  }
  return find_class(set);
}

std::unique_ptr<CompiledPolicy> CompiledPolicy::with_classes(std::vector<uint32_t> peer_class,
                                                             uint64_t generation) const {
  std::unique_ptr<CompiledPolicy> cp(new CompiledPolicy(*this));
  cp->generation_ = generation;
  cp->peer_class_ = std::move(peer_class);
  cp->peer_class_.resize(peer_class_.size(), 0);
  for (uint32_t& c : cp->peer_class_) {
    c = c < class_policies_.size() ? c : 0;
  }
  return cp;
}

// --- Routes ---------------------------------------------------------------------------------

bool CompiledPolicy::build_routes(const config::Config& cfg, std::string* err) {
  const auto& ports = cfg.dataplane.ports;
  int underlay = -1;
  for (size_t i = 0; i < ports.size() && underlay < 0; i++) {
    if (ports[i].role == config::PortRole::underlay) {
      underlay = int(i);
    }
  }
  auto port_route = [&](size_t i, uint32_t via) {
    Route r;
    r.port = uint16_t(i);
    r.via = via;
    r.snat_underlay = ports[i].role == config::PortRole::underlay;
    r.snat_addr = ports[i].address.addr;
    return r;
  };

  for (size_t s = 0; s < cfg.subnets.size(); s++) {
    const config::Subnet& sub = cfg.subnets[s];
    RoutedSubnet rs;
    rs.prefix = Prefix{sub.prefix.network(), sub.prefix.len};
    rs.name = sub.name.empty() ? config::to_string(rs.prefix) : sub.name;
    rs.config_index = int(s);
    bool done = false;
    if (sub.via) {
      for (size_t i = 0; i < ports.size() && !done; i++) {
        if (ports[i].address.contains(*sub.via)) {
          rs.route = port_route(i, *sub.via);
          done = true;
        }
      }
      if (!done) {
        *err = "subnets[" + std::to_string(s) + "]: router " + config::to_string(*sub.via) +
               " is not on any port's network";
        return false;
      }
    } else if (rs.prefix.len > 0) {
      // Inside a port's network without a router: on-link there (LAN ports first).
      for (int pass = 0; pass < 2 && !done; pass++) {
        for (size_t i = 0; i < ports.size() && !done; i++) {
          bool lan = ports[i].role == config::PortRole::lan;
          if (lan == (pass == 0) && ports[i].address.contains(rs.prefix)) {
            rs.route = port_route(i, 0);
            done = true;
          }
        }
      }
    }
    if (!done) {
      // 0.0.0.0/0, and any other subnet no port reaches directly: Internet egress.
      if (underlay < 0) {
        *err = "subnets[" + std::to_string(s) + "]: " + rs.name + " needs an underlay port for egress";
        return false;
      }
      rs.route = port_route(size_t(underlay), ports[size_t(underlay)].gateway.value_or(0));
    }
    subnets_.push_back(std::move(rs));
  }
  for (size_t i = 0; i < ports.size(); i++) {
    if (ports[i].role != config::PortRole::lan) {
      continue;
    }
    Prefix net{ports[i].address.network(), ports[i].address.len};
    bool listed = std::any_of(subnets_.begin(), subnets_.end(), [&](const RoutedSubnet& r) { return r.prefix == net; });
    if (!listed) {
      RoutedSubnet rs;
      rs.prefix = net;
      rs.name = config::to_string(net);
      rs.route = port_route(i, 0);
      subnets_.push_back(std::move(rs));
    }
  }

  uint32_t tbl8s = 16;
  for (size_t i = 0; i < subnets_.size(); i++) {
    subnets_[i].route.subnet_index = uint32_t(i);
    tbl8s += subnets_[i].prefix.len > 24 ? 1 : 0;
  }
  rte_lpm_config lc{};
  lc.max_rules = uint32_t(subnets_.size()) + 1;
  lc.number_tbl8s = tbl8s;
  std::string name = unique_name("lpm");
  lpm_ = rte_lpm_create(name.c_str(), SOCKET_ID_ANY, &lc);
  if (lpm_ == nullptr) {
    *err = "rte_lpm_create: " + std::string(rte_strerror(rte_errno));
    return false;
  }
  stats_.lpm_bytes = sizeof(rte_lpm) + size_t(tbl8s) * RTE_LPM_TBL8_GROUP_NUM_ENTRIES * sizeof(rte_lpm_tbl_entry);
  for (size_t i = 0; i < subnets_.size(); i++) {
    const Prefix& p = subnets_[i].prefix;
    if (p.len == 0) {
      default_route_ = int(i);  // rte_lpm takes depths 1..32 only
      continue;
    }
    int rc = rte_lpm_add(lpm_, p.addr, p.len, uint32_t(i));
    if (rc < 0) {
      *err = "rte_lpm_add " + config::to_string(p) + ": " + rte_strerror(-rc);
      return false;
    }
  }
  stats_.routes = subnets_.size();
  return true;
}

const Route* CompiledPolicy::route(uint32_t dst) const {
  uint32_t nh = 0;
  if (rte_lpm_lookup(lpm_, dst, &nh) == 0) {
    return &subnets_[nh].route;
  }
  return default_route_ >= 0 ? &subnets_[size_t(default_route_)].route : nullptr;
}

void CompiledPolicy::route_bulk(const uint32_t* dst, unsigned n, const Route** out) const {
  const Route* dflt = default_route_ >= 0 ? &subnets_[size_t(default_route_)].route : nullptr;
  uint32_t hops[kMaxBurst];
  for (unsigned base = 0; base < n; base += kMaxBurst) {
    unsigned m = std::min(n - base, kMaxBurst);
    rte_lpm_lookup_bulk(lpm_, dst + base, hops, m);
    for (unsigned i = 0; i < m; i++) {
      out[base + i] = (hops[i] & RTE_LPM_LOOKUP_SUCCESS) ? &subnets_[hops[i] & 0x00FFFFFF].route : dflt;
    }
  }
}

// --- Policies, sender classes and groups ----------------------------------------------------

bool CompiledPolicy::build_policies(const config::Config& cfg, std::string* err) {
  // A policy must never allow what route() would drop, or explain() and classify() could disagree.
  std::vector<config::AddrRange> routed;
  for (const RoutedSubnet& r : subnets_) {
    routed.push_back(to_range(r.prefix));
  }
  routed = merge_ranges(std::move(routed));
  auto inside = [](const std::vector<config::AddrRange>& outer, const config::AddrRange& r) {
    return std::any_of(outer.begin(), outer.end(), [&](const config::AddrRange& o) {
      return o.first <= r.first && r.last <= o.last;
    });
  };
  for (const config::Policy& pol : cfg.policies) {
    if (pol.acl.size() > kMaxRulesPerPolicy) {
      *err = "policy '" + pol.name + "': " + std::to_string(pol.acl.size()) + " ACL rules, at most " +
             std::to_string(kMaxRulesPerPolicy);
      return false;
    }
    std::vector<config::AddrRange> subs;
    for (const Prefix& s : pol.subnets) {
      if (!inside(routed, to_range(s))) {
        *err = "policy '" + pol.name + "': subnet " + config::to_string(s) + " is not routed by this gateway";
        return false;
      }
      subs.push_back(to_range(s));
    }
    subs = merge_ranges(std::move(subs));
    PolicyInfo info;
    info.name = pol.name;
    info.acl = pol.acl;
    if (pol.filter.empty()) {
      info.dsts = std::move(subs);
    } else {
      for (const config::AddrRange& f : pol.filter) {
        if (f.first > f.last || !inside(subs, f)) {
          *err = "policy '" + pol.name + "': filter " + config::to_string(f) + " is outside the policy's subnets";
          return false;
        }
      }
      info.dsts = merge_ranges(pol.filter);
    }
    policies_.push_back(std::move(info));
  }
  stats_.policies = policies_.size();
  return true;
}

bool CompiledPolicy::build_classes(const config::Config& cfg, const AppliesFn& applies, std::string* err) {
  // Trust requirements: distinct non-empty `require` blocks.
  policy_req_.assign(cfg.policies.size(), -1);
  for (size_t p = 0; p < cfg.policies.size(); p++) {
    const config::TrustRequirements& r = cfg.policies[p].require;
    if (requirement_empty(r)) {
      continue;
    }
    size_t id = 0;
    while (id < requirements_.size() &&
           !(requirements_[id].source_ips == r.source_ips && requirements_[id].attributes == r.attributes)) {
      id++;
    }
    if (id == requirements_.size()) {
      requirements_.push_back(r);
    }
    policy_req_[p] = int(id);
  }

  // The distinct sets of applicable policies (future classes) and a peer of each: each peer's
  // set under `applies`, and every combination of its requirements holding or not.
  std::vector<std::vector<uint16_t>> peer_sets(cfg.peers.size());
  std::map<std::vector<uint16_t>, size_t> first_peer;
  std::map<std::vector<uint16_t>, size_t> combos;  // enumerated sets, apart until they fit
  std::map<std::vector<uint16_t>, bool> enumerated;  // tag-matched policy sets done
  peer_policies_.assign(cfg.peers.size(), {});
  peer_reqs_.assign(cfg.peers.size(), {});
  for (size_t i = 0; i < cfg.peers.size(); i++) {
    std::vector<uint16_t>& tagged = peer_policies_[i];
    for (size_t p = 0; p < cfg.policies.size(); p++) {
      if (tags_match(cfg.peers[i], cfg.policies[p])) {
        tagged.push_back(uint16_t(p));
        if (!applies || applies(cfg.peers[i], cfg.policies[p])) {
          peer_sets[i].push_back(uint16_t(p));
        }
      }
    }
    std::vector<uint16_t>& reqs = peer_reqs_[i];
    for (uint16_t p : tagged) {
      if (policy_req_[p] >= 0) {
        reqs.push_back(uint16_t(policy_req_[p]));
      }
    }
    std::sort(reqs.begin(), reqs.end());
    reqs.erase(std::unique(reqs.begin(), reqs.end()), reqs.end());
    if (!peer_sets[i].empty()) {
      first_peer.emplace(peer_sets[i], i);
    }
    if (!reqs.empty() && reqs.size() <= kMaxEnumeratedRequirements && enumerated.emplace(tagged, true).second) {
      for (uint32_t mask = 0; mask < (1u << reqs.size()); mask++) {
        std::vector<uint16_t> set;
        for (uint16_t p : tagged) {
          const int r = policy_req_[p];
          const size_t bit = r < 0 ? 0 : size_t(std::lower_bound(reqs.begin(), reqs.end(), uint16_t(r)) - reqs.begin());
          if (r < 0 || (mask >> bit & 1u) != 0) {
            set.push_back(p);
          }
        }
        if (!set.empty()) {
          combos.emplace(std::move(set), i);
        }
      }
    }
    peer_names_.push_back(cfg.peers[i].name);
  }
  // Combinations only while they fit the class id space; beyond, changes rebuild.
  std::map<std::vector<uint16_t>, size_t> with_combos = first_peer;
  with_combos.insert(combos.begin(), combos.end());
  if (with_combos.size() < kMaxClasses) {
    first_peer = std::move(with_combos);
  }
  std::vector<const std::vector<uint16_t>*> sets;
  for (const auto& [set, peer] : first_peer) {
    sets.push_back(&set);
  }
  if (sets.size() >= kMaxClasses) {
    *err = std::to_string(sets.size()) + " sender classes (distinct sets of policies applying to peers), at most " +
           std::to_string(kMaxClasses - 1);
    return false;
  }

  // Groups: policies applying to the same sets (hence the same peers).
  std::vector<std::vector<uint32_t>> sets_of(policies_.size());
  for (uint32_t s = 0; s < sets.size(); s++) {
    for (uint16_t p : *sets[s]) {
      sets_of[p].push_back(s);
    }
  }
  std::map<std::vector<uint32_t>, int> group_of;
  for (size_t p = 0; p < policies_.size(); p++) {
    if (!sets_of[p].empty()) {
      policies_[p].group = group_of.emplace(sets_of[p], int(group_of.size())).first->second;
    }
  }
  const size_t ng = group_of.size();
  stats_.groups = ng;

  // Class order: a rule covers a run of consecutive class ids and is repeated per run.
  const size_t words = std::max<size_t>(1, (ng + 63) / 64);
  std::vector<uint64_t> bits(sets.size() * words, 0);
  for (size_t s = 0; s < sets.size(); s++) {
    for (uint16_t p : *sets[s]) {
      bits[s * words + size_t(policies_[p].group) / 64] |= uint64_t{1} << (policies_[p].group % 64);
    }
  }
  std::vector<double> weight(ng, 0);
  for (const PolicyInfo& pol : policies_) {
    if (pol.group >= 0) {
      weight[size_t(pol.group)] += double(rules_per_run(pol.dsts, pol.acl));
    }
  }
  std::vector<uint32_t> order = order_classes(bits, words, weight);

  class_policies_.emplace_back();
  class_peer_.push_back(0);
  group_classes_.resize(ng);
  for (uint32_t s : order) {
    uint32_t cls = uint32_t(class_policies_.size());
    class_by_set_[*sets[s]] = cls;
    class_policies_.push_back(*sets[s]);
    class_peer_.push_back(first_peer.at(*sets[s]));
    for (uint16_t p : *sets[s]) {
      auto& gc = group_classes_[size_t(policies_[p].group)];
      if (gc.empty() || gc.back() != cls) {
        gc.push_back(cls);
      }
    }
  }
  peer_class_.resize(cfg.peers.size(), 0);
  for (size_t i = 0; i < cfg.peers.size(); i++) {
    if (!peer_sets[i].empty()) {
      peer_class_[i] = class_by_set_.at(peer_sets[i]);
    }
  }
  stats_.classes = class_policies_.size();
  return true;
}

bool CompiledPolicy::build_slots(std::string* err) {
  // Groups sharing a class can apply to the same peer.
  const size_t ng = group_classes_.size();
  std::vector<uint8_t> together(ng * ng, 0);
  for (uint32_t c = 1; c < class_policies_.size(); c++) {
    for (uint16_t p : class_policies_[c]) {
      for (uint16_t q : class_policies_[c]) {
        together[size_t(policies_[p].group) * ng + size_t(policies_[q].group)] = 1;
      }
    }
  }
  auto conflict = [&](size_t p, size_t q) {
    return together[size_t(policies_[p].group) * ng + size_t(policies_[q].group)] &&
           ranges_overlap(policies_[p].dsts, policies_[q].dsts);
  };
  std::vector<std::vector<uint16_t>> slot_members;
  for (size_t p = 0; p < policies_.size(); p++) {
    if (policies_[p].group < 0) {
      continue;
    }
    size_t s = 0;
    while (s < slot_members.size() &&
           std::any_of(slot_members[s].begin(), slot_members[s].end(), [&](uint16_t q) { return conflict(p, q); })) {
      s++;
    }
    if (s == kMaxSlots) {
      std::vector<std::string> others;
      std::string peer;
      for (const auto& members : slot_members) {
        for (uint16_t q : members) {
          if (conflict(p, q)) {
            others.push_back("'" + policies_[q].name + "'");
            for (uint32_t c : group_classes_[size_t(policies_[p].group)]) {
              const auto& cp = class_policies_[c];
              if (peer.empty() && std::binary_search(cp.begin(), cp.end(), q)) {
                peer = peer_names_[class_peer_[c]];
              }
            }
            break;
          }
        }
      }
      *err = "policy '" + policies_[p].name + "' gets no rte_acl category: each of the " +
             std::to_string(kMaxSlots) + " categories holds a policy whose destinations overlap its own and that applies " +
             "to a same peer (" + join(others, kMaxSlots) + "; e.g. peer '" + peer + "'); at most " +
             std::to_string(kMaxSlots) + " policies with overlapping destinations can apply to one peer: " +
             "merge some of them, or narrow their subnets or senders";
      return false;
    }
    if (s == slot_members.size()) {
      slot_members.emplace_back();
    }
    slot_members[s].push_back(uint16_t(p));
    policies_[p].slot = uint8_t(s);
  }
  unsigned slots = unsigned(slot_members.size());
  categories_ = slots <= 1 ? 1
                           : (slots + RTE_ACL_RESULTS_MULTIPLIER - 1) / RTE_ACL_RESULTS_MULTIPLIER *
                                 RTE_ACL_RESULTS_MULTIPLIER;
  stats_.categories = categories_;
  return true;
}

// --- rte_acl ---------------------------------------------------------------------------------

bool CompiledPolicy::build_acl(std::string* err) {
  std::vector<AclRule4> rules;
  for (size_t p = 0; p < policies_.size(); p++) {
    const PolicyInfo& pol = policies_[p];
    stats_.acl_rules += pol.acl.size();
    if (pol.group < 0) {
      continue;
    }
    // Runs of consecutive class ids: one rule each through the class range field. Rules are
    // emitted per run x destination range x (effective) port range.
    std::vector<std::pair<uint32_t, uint32_t>> runs;
    for (uint32_t c : group_classes_[size_t(pol.group)]) {
      if (!runs.empty() && runs.back().second + 1 == c) {
        runs.back().second = c;
      } else {
        runs.emplace_back(c, c);
      }
    }
    stats_.class_runs += runs.size();

    bool default_reachable = false;
    size_t n = reachable_rules(pol.acl, &default_reachable);
    auto emit = [&](int32_t priority, uint32_t userdata, uint8_t proto, bool any_proto, uint16_t lo, uint16_t hi) {
      for (const auto& [first, last] : runs) {
        for (const config::AddrRange& d : pol.dsts) {
          AclRule4 r{};
          r.data.category_mask = 1u << pol.slot;
          r.data.priority = priority;
          r.data.userdata = userdata;
          r.field[kFieldProto].value.u8 = any_proto ? 0 : proto;
          r.field[kFieldProto].mask_range.u8 = any_proto ? 0 : 0xFF;
          r.field[kFieldClass].value.u16 = uint16_t(first);
          r.field[kFieldClass].mask_range.u16 = uint16_t(last);
          r.field[kFieldDst].value.u32 = d.first;
          r.field[kFieldDst].mask_range.u32 = d.last;
          r.field[kFieldPort].value.u16 = lo;
          r.field[kFieldPort].mask_range.u16 = hi;
          rules.push_back(r);
        }
      }
    };
    std::vector<std::vector<config::PortRange>> effective = effective_ports(pol.acl, n);
    for (size_t i = 0; i < n; i++) {
      const AclRule& a = pol.acl[i];
      int32_t priority = int32_t(RTE_ACL_MAX_PRIORITY - i);
      uint32_t ud = encode(a.action == AclAction::allow, uint16_t(p), uint16_t(i + 1));
      for (const config::PortRange& pr : effective[i]) {
        emit(priority, ud, proto_number(a.protocol), a.protocol == Protocol::any, pr.first, pr.last);
      }
    }
    if (default_reachable) {
      emit(RTE_ACL_MIN_PRIORITY, encode(false, uint16_t(p), kDefaultCode), 0, true, 0, 0xFFFF);
    }
  }
  stats_.rte_rules = rules.size();
  if (rules.empty()) {
    return true;  // classify() answers "no policy" without a context
  }

  // Port classes: the rules' port ranges cut 0-65535 into intervals; the key carries the
  // interval's number instead of the port (port_class_ maps them), and each rule's port range
  // becomes a range of interval numbers. Same matches, but ranges over small numbers make much
  // smaller tries: 10k rules with ports from common services build in about 0.7x the time and
  // half the memory (bench/policy).
  std::vector<uint32_t> bounds;  // first port of each interval but the first
  for (const AclRule4& r : rules) {
    bounds.push_back(r.field[kFieldPort].value.u16);
    bounds.push_back(uint32_t(r.field[kFieldPort].mask_range.u16) + 1);
  }
  std::sort(bounds.begin(), bounds.end());
  bounds.erase(std::unique(bounds.begin(), bounds.end()), bounds.end());
  port_class_.assign(0x10000, 0);
  const size_t classes = size_t(std::count_if(bounds.begin(), bounds.end(), [](uint32_t b) { return b > 0 && b <= 0xFFFF; })) + 1;
  if (classes > kMaxPortClasses) {
    // Thousands of distinct port ranges: the classes save nothing there, the ports are kept.
    for (uint32_t port = 0; port <= 0xFFFF; port++) {
      port_class_[port] = uint16_t(port);
    }
    stats_.port_classes = 0;
  } else {
    uint16_t cls = 0;
    for (uint32_t port = 0, b = 0; port <= 0xFFFF; port++) {
      for (; b < bounds.size() && bounds[b] <= port; b++) {
        cls += bounds[b] > 0 ? 1 : 0;  // class 0 starts at port 0
      }
      port_class_[port] = cls;
    }
    stats_.port_classes = classes;
  }
  for (AclRule4& r : rules) {
    r.field[kFieldPort].value.u16 = port_class_[r.field[kFieldPort].value.u16];
    r.field[kFieldPort].mask_range.u16 = port_class_[r.field[kFieldPort].mask_range.u16];
  }

  size_t heap_before = heap_allocated();
  std::string name = unique_name("acl");
  rte_acl_param param{};
  param.name = name.c_str();
  param.socket_id = SOCKET_ID_ANY;
  param.rule_size = RTE_ACL_RULE_SZ(kNumFields);
  param.max_rule_num = uint32_t(rules.size());
  acl_ = rte_acl_create(&param);
  if (acl_ == nullptr) {
    *err = "rte_acl_create: " + std::string(rte_strerror(rte_errno));
    return false;
  }
  int rc = rte_acl_add_rules(acl_, reinterpret_cast<const rte_acl_rule*>(rules.data()), uint32_t(rules.size()));
  if (rc != 0) {
    *err = "rte_acl_add_rules (" + std::to_string(rules.size()) + " rules): " + rte_strerror(-rc);
    return false;
  }
  rte_acl_config bc{};
  bc.num_categories = categories_;
  bc.num_fields = kNumFields;
  memcpy(bc.defs, kFieldDefs, sizeof(kFieldDefs));
  bc.max_size = 0;  // no limit: rte_acl splits into more tries on its own when one grows too big
  auto t0 = std::chrono::steady_clock::now();
  rc = rte_acl_build(acl_, &bc);
  stats_.acl_build_seconds = seconds_since(t0);
  if (rc != 0) {
    *err = "rte_acl_build (" + std::to_string(rules.size()) + " rules): " + rte_strerror(-rc);
    return false;
  }
  size_t heap_after = heap_allocated();
  stats_.acl_bytes = (heap_after > heap_before ? heap_after - heap_before : 0) + port_class_.size() * sizeof(uint16_t);
  return true;
}

void CompiledPolicy::classify(const FlowKey* keys, unsigned n, Verdict* out) const {
  if (acl_ == nullptr) {
    for (unsigned i = 0; i < n; i++) {
      out[i] = Verdict{false, kNoPolicy, kNoRule};
    }
    return;
  }
  const uint32_t nclasses = uint32_t(class_policies_.size());
  const uint16_t* port_class = port_class_.data();
  AclKey in[kMaxBurst];
  const uint8_t* data[kMaxBurst];
  uint32_t results[kMaxBurst * RTE_ACL_MAX_CATEGORIES];
  for (unsigned base = 0; base < n; base += kMaxBurst) {
    unsigned m = std::min(n - base, kMaxBurst);
    for (unsigned i = 0; i < m; i++) {
      const FlowKey& k = keys[base + i];
      in[i].proto = k.proto;
      // Unknown classes (beyond 16 bits too) become class 0, which no rule matches.
      in[i].cls = rte_cpu_to_be_16(k.sender_class < nclasses ? uint16_t(k.sender_class) : 0);
      in[i].dport = rte_cpu_to_be_16(port_class[k.dport]);
      in[i].dst = rte_cpu_to_be_32(k.dst);
      data[i] = reinterpret_cast<const uint8_t*>(&in[i]);
    }
    rte_acl_classify(acl_, data, results, m, categories_);
    for (unsigned i = 0; i < m; i++) {
      out[base + i] = to_verdict(decide(&results[i * categories_], categories_));
    }
  }
}

// --- explain ---------------------------------------------------------------------------------

Explanation CompiledPolicy::explain(uint32_t peer_index, uint32_t dst, uint8_t proto, uint16_t dport,
                                    const UnmetFn& unmet) const {
  if (peer_index >= peer_class_.size()) {
    Explanation e;
    e.code = Reason::unknown_peer;
    e.reason = "peer #" + std::to_string(peer_index) + " is not in this configuration";
    if (const Route* r = route(dst)) {
      e.route = *r;
    }
    return e;
  }
  Explanation e = explain_class(peer_class_[peer_index], dst, proto, dport);
  if (e.code == Reason::no_policy_for_peer) {
    e.reason = "no policy applies to peer '" + peer_names_[peer_index] + "' (its tags match none, or it " +
               "does not meet their trust requirements)";
  }
  if (unmet && !e.allow && e.code != Reason::no_route) {
    explain_unmet(peer_index, dst, proto, dport, unmet, e);
  }
  return e;
}

void CompiledPolicy::explain_unmet(uint32_t peer_index, uint32_t dst, uint8_t proto, uint16_t dport,
                                   const UnmetFn& unmet, Explanation& e) const {
  const std::vector<uint16_t>& applied = class_policies(e.sender_class);
  for (uint16_t p : peer_policies_[peer_index]) {
    if (policy_req_[p] < 0 || std::binary_search(applied.begin(), applied.end(), p)) {
      continue;
    }
    const PolicyInfo& pol = policies_[p];
    if (!ranges_contain(pol.dsts, dst)) {
      continue;
    }
    const std::string why = unmet(requirements_[size_t(policy_req_[p])]);
    if (why.empty()) {
      continue;  // holds now; the published classes catch up on the next control tick
    }
    e.considered.push_back(pol.name + ": not applied: " + why);
    const AclRule* matched = nullptr;
    for (const AclRule& r : pol.acl) {
      if (rule_matches(r, proto, dport)) {
        matched = &r;
        break;
      }
    }
    if (matched != nullptr && matched->action == AclAction::allow && e.code != Reason::requirement_unmet) {
      e.code = Reason::requirement_unmet;
      e.reason = "denied: policy '" + pol.name + "' would allow it, but it " + why;
    }
  }
}

Explanation CompiledPolicy::explain_class(uint32_t cls, uint32_t dst, uint8_t proto, uint16_t dport) const {
  Explanation e;
  e.sender_class = cls;
  const Route* r = route(dst);
  if (r == nullptr) {
    e.code = Reason::no_route;
    e.reason = config::to_string(dst) + " is not inside any subnet this gateway routes";
    return e;
  }
  e.route = *r;
  if (cls == 0 || cls >= class_policies_.size()) {
    e.code = Reason::no_policy_for_peer;
    e.reason = "no policy applies to sender class " + std::to_string(cls);
    return e;
  }
  explain_policies(cls, dst, proto, dport, e);
  return e;
}

void CompiledPolicy::explain_policies(uint32_t cls, uint32_t dst, uint8_t proto, uint16_t dport,
                                      Explanation& e) const {
  // Same order as classify(): an allowing policy beats every deny; among allows, then among
  // denies, the lowest policy index decides.
  int deny_policy = -1, deny_rule = -1;
  for (uint16_t p : class_policies_[cls]) {
    const PolicyInfo& pol = policies_[p];
    if (!ranges_contain(pol.dsts, dst)) {
      e.considered.push_back(pol.name + ": destination outside its subnets and filter");
      continue;
    }
    int matched = -1;
    for (size_t i = 0; i < pol.acl.size() && matched < 0; i++) {
      if (rule_matches(pol.acl[i], proto, dport)) {
        matched = int(i);
      }
    }
    if (matched < 0) {
      e.considered.push_back(pol.name + ": no rule matches (default deny)");
    } else {
      e.considered.push_back(pol.name + ": rule " + std::to_string(matched + 1) + " (" +
                             rule_text(pol.acl[size_t(matched)]) + ") matches");
    }
    bool allow = matched >= 0 && pol.acl[size_t(matched)].action == AclAction::allow;
    if (allow && !e.allow) {
      e.allow = true;
      e.policy_index = p;
      e.rule = matched;
    } else if (!allow && deny_policy < 0) {
      deny_policy = p;
      deny_rule = matched;
    }
  }
  if (!e.allow && deny_policy >= 0) {
    e.policy_index = deny_policy;
    e.rule = deny_rule;
  }
  if (e.policy_index < 0) {
    e.code = Reason::outside_policies;
    e.reason = config::to_string(dst) + " is outside the subnets and filters of every policy applying to the sender";
    return;
  }
  const PolicyInfo& pol = policies_[size_t(e.policy_index)];
  e.policy = pol.name;
  if (e.rule < 0) {
    e.code = Reason::default_deny;
    e.rule_text = "default deny";
    e.reason = "denied by policy '" + pol.name + "': no rule matches (default deny), and no other policy allows";
    return;
  }
  e.rule_text = rule_text(pol.acl[size_t(e.rule)]);
  std::string where = "rule " + std::to_string(e.rule + 1) + " (" + e.rule_text + ") of policy '" + pol.name + "'";
  if (e.allow) {
    e.code = Reason::allowed_by_rule;
    e.reason = "allowed by " + where;
  } else {
    e.code = Reason::denied_by_rule;
    e.reason = "denied by " + where + ", and no other policy allows";
  }
}

}  // namespace sluice::policy
