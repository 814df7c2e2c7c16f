#include "tests/unit/policy/reference.h"

namespace sluice::policy::test {

namespace {

bool rule_matches(const config::AclRule& r, uint8_t proto, uint16_t dport) {
  switch (r.protocol) {
    case config::Protocol::any:
      return true;
    case config::Protocol::icmp:
      return proto == 1;
    case config::Protocol::tcp:
    case config::Protocol::udp:
      if (proto != (r.protocol == config::Protocol::tcp ? 6 : 17)) {
        return false;
      }
      if (r.ports.empty()) {
        return true;
      }
      for (const auto& p : r.ports) {
        if (p.first <= dport && dport <= p.last) {
          return true;
        }
      }
      return false;
  }
  return false;
}

bool in_destinations(const config::Policy& pol, uint32_t dst) {
  if (!pol.filter.empty()) {
    for (const auto& f : pol.filter) {
      if (f.first <= dst && dst <= f.last) {
        return true;
      }
    }
    return false;
  }
  for (const auto& s : pol.subnets) {
    if (s.contains(dst)) {
      return true;
    }
  }
  return false;
}

bool applies_to(const config::Peer& peer, const config::Policy& pol, const AppliesFn& applies) {
  bool tag = false;
  for (const auto& t : peer.tags) {
    for (const auto& s : pol.senders) {
      tag = tag || t == s;
    }
  }
  return tag && (!applies || applies(peer, pol));
}

}  // namespace

bool reference_routed(const config::Config& cfg, uint32_t dst) {
  for (const auto& s : cfg.subnets) {
    if (s.prefix.contains(dst)) {
      return true;
    }
  }
  for (const auto& p : cfg.dataplane.ports) {
    if (p.role == config::PortRole::lan && p.address.contains(dst)) {
      return true;
    }
  }
  return false;
}

Verdict reference_verdict(const config::Config& cfg, const AppliesFn& applies, size_t peer, uint32_t dst,
                          uint8_t proto, uint16_t dport) {
  Verdict none{false, kNoPolicy, kNoRule};
  if (peer >= cfg.peers.size() || !reference_routed(cfg, dst)) {
    return none;
  }
  std::optional<Verdict> deny;
  for (size_t p = 0; p < cfg.policies.size(); p++) {
    const config::Policy& pol = cfg.policies[p];
    if (!applies_to(cfg.peers[peer], pol, applies) || !in_destinations(pol, dst)) {
      continue;
    }
    std::optional<size_t> match;
    for (size_t i = 0; i < pol.acl.size() && !match; i++) {
      if (rule_matches(pol.acl[i], proto, dport)) {
        match = i;
      }
    }
    if (match && pol.acl[*match].action == config::AclAction::allow) {
      return Verdict{true, uint16_t(p), uint16_t(*match)};
    }
    if (!deny) {
      deny = Verdict{false, uint16_t(p), match ? uint16_t(*match) : kNoRule};
    }
  }
  return deny.value_or(none);
}

}  // namespace sluice::policy::test
