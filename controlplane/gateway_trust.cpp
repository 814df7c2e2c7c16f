// Trust requirements on the control thread: each tick (and at once after `sluicectl attest`)
// every peer's requirements are evaluated against its current endpoint (moved by its owner
// worker when the peer roams) and its attestations. When a peer's outcome changes, the
// published CompiledPolicy is replaced by a new generation that shares its rte_acl/rte_lpm
// tables and only points the peer at another precomputed class (with_classes); workers then
// re-classify every flow decided under an older generation on its next packet, so open
// connections of a peer that lost access stop within a tick plus one RCU publication.
#include <algorithm>
#include <cctype>
#include <chrono>
#include <unordered_map>

#include "controlplane/gateway.h"
#include "controlplane/gateway_util.h"
#include "controlplane/log.h"

namespace sluice::cp {

using nlohmann::json;

int64_t Gateway::unix_now_ns() {
  return int64_t(std::chrono::duration_cast<std::chrono::nanoseconds>(
                     std::chrono::system_clock::now().time_since_epoch())
                     .count());
}

policy::PeerFacts Gateway::peer_facts(size_t slot, int64_t now_unix_ns) const {
  policy::PeerFacts f;
  f.now_ns = now_unix_ns;
  f.attestations = &attestations_;
  // The compiled policy indexes peers by slot (policy_view / running_view); a free slot has none.
  if (slot >= peers_.size() || !peers_[slot]) return f;
  const Peer& p = *peers_[slot];
  f.peer = &p.cfg;
  const uint64_t ep = dp_.peers.slot(p.id).endpoint.load(std::memory_order_relaxed);
  if (ep != 0) f.endpoint_addr = dp::endpoint_addr(ep);
  return f;
}

policy::AppliesFn Gateway::trust_applies(const config::Config& c) const {
  bool any = false;
  for (const auto& pol : c.policies) any = any || !policy::requirement_empty(pol.require);
  if (!any) return {};
  // A snapshot of the facts now, by peer name: the build may run on another thread, and the
  // control tick corrects whatever changes meanwhile.
  struct Snapshot {
    std::unordered_map<std::string, uint32_t> endpoints;
    policy::Attestations attestations;
    int64_t now = 0;
  };
  auto snap = std::make_shared<Snapshot>();
  snap->now = unix_now_ns();
  snap->attestations = attestations_;
  for (const auto& pp : peers_) {
    if (!pp) continue;
    const uint64_t ep = dp_.peers.slot(pp->id).endpoint.load(std::memory_order_relaxed);
    if (ep != 0) snap->endpoints[pp->cfg.name] = dp::endpoint_addr(ep);
  }
  return [snap](const config::Peer& peer, const config::Policy& pol) {
    policy::PeerFacts f;
    f.peer = &peer;
    f.now_ns = snap->now;
    f.attestations = &snap->attestations;
    if (auto it = snap->endpoints.find(peer.name); it != snap->endpoints.end()) f.endpoint_addr = it->second;
    return policy::requirement_holds(pol.require, f);
  };
}

void Gateway::refresh_trust() {
  const int64_t now = unix_now_ns();
  for (const auto& [peer, name] : attestations_.expire(now))
    log::info("attestation_expired", {{"peer", peer}, {"attribute", name}});
  const policy::CompiledPolicy* pol = dp_.policy.load(std::memory_order_acquire);
  if (pol == nullptr || pol->requirements().empty()) return;
  const auto t0 = Clock::now();
  const size_t n = peers_.size();  // slots: the compiled policy's peer index
  if (trust_seen_generation_ != pol->generation() || trust_held_.size() != n) {
    trust_held_.assign(n, UINT64_MAX);  // unknown: evaluate every peer against this generation
    trust_seen_generation_ = pol->generation();
  }
  trust_classes_.resize(n);
  std::vector<bool> held(pol->requirements().size());
  std::string moved;
  bool changed = false;
  for (size_t i = 0; i < n; ++i) {
    const uint32_t cls = pol->class_of(uint32_t(i));
    trust_classes_[i] = cls;
    const auto& reqs = pol->peer_requirements(uint32_t(i));
    if (reqs.empty()) continue;
    const policy::PeerFacts f = peer_facts(i, now);
    uint64_t mask = 0;
    for (size_t k = 0; k < reqs.size(); ++k) {
      const bool h = policy::requirement_holds(pol->requirements()[reqs[k]], f);
      held[reqs[k]] = h;
      if (h && k < 63) mask |= uint64_t{1} << k;
    }
    if (mask == trust_held_[i] && reqs.size() < 63) continue;
    auto next = pol->class_with(uint32_t(i), held);
    if (!next) {
      // A combination the build did not precompute (too many requirements on one peer).
      std::string err;
      if (publish_policy(running_view(cfg_), policy_generation_ + 1, &err)) {
        ++trust_rebuilds_;
        trust_last_publish_us_ = std::chrono::duration<double, std::micro>(Clock::now() - t0).count();
        log::info("trust_rebuilt", {{"peer", peers_[i]->cfg.name},
                                    {"policy_generation", std::to_string(policy_generation_)},
                                    {"publish_us", std::to_string(int64_t(trust_last_publish_us_))}});
      } else {
        log::error("trust_rebuild_failed", {{"error", err}});
      }
      return;
    }
    trust_held_[i] = mask;
    if (*next != cls) {
      trust_classes_[i] = *next;
      changed = true;
      moved += (moved.empty() ? "" : ",") + peers_[i]->cfg.name;
    }
  }
  if (!changed) return;
  std::vector<uint64_t> held_now = trust_held_;
  // Same policies and rules as the running generation: its rule-hit table has the same slots.
  install_policy(pol->with_classes(trust_classes_, policy_generation_ + 1), cfg_);
  // The masks stay valid for the new generation: it has the same classes.
  trust_seen_generation_ = policy_generation_;
  trust_held_ = std::move(held_now);
  ++trust_republishes_;
  trust_last_publish_us_ = std::chrono::duration<double, std::micro>(Clock::now() - t0).count();
  log::info("trust_changed", {{"peers", moved},
                              {"policy_generation", std::to_string(policy_generation_)},
                              {"publish_us", std::to_string(int64_t(trust_last_publish_us_))}});
}

namespace {

bool valid_attribute_name(const std::string& s) {
  if (s.empty() || s.size() > 64) return false;
  return std::all_of(s.begin(), s.end(), [](unsigned char c) { return std::isalnum(c) || c == '_' || c == '-' || c == '.'; });
}

std::string arg_text(const json& args, const char* key) {
  auto it = args.find(key);
  if (it == args.end() || it->is_null()) return "";
  return it->is_string() ? it->get<std::string>() : it->dump();
}

bool arg_flag(const json& args, const char* key) {
  auto it = args.find(key);
  if (it == args.end()) return false;
  if (it->is_boolean()) return it->get<bool>();
  return it->is_string() && (*it == "true" || *it == "1" || *it == "yes");
}

}  // namespace

void Gateway::register_trust_handlers() {
  ctl_.add_handler("attest", [this](const json& args) {
    const std::string peer = arg_text(args, "peer"), name = arg_text(args, "name");
    const auto it = std::find_if(cfg_.peers.begin(), cfg_.peers.end(), [&](const config::Peer& p) { return p.name == peer; });
    if (it == cfg_.peers.end()) return ctl::Reply::failure("no peer named '" + peer + "'");
    if (!valid_attribute_name(name))
      return ctl::Reply::failure("attribute name '" + name + "': expected 1-64 letters, digits, '_', '-' or '.'");
    const std::string until = arg_text(args, "until"), dur = arg_text(args, "for");
    const int64_t now = unix_now_ns();
    if (arg_flag(args, "revoke")) {
      if (!until.empty() || !dur.empty()) return ctl::Reply::failure("--revoke takes neither --until nor --for");
      if (!attestations_.revoke(peer, name)) {
        if (policy::configured_attribute(*it, name))
          return ctl::Reply::failure("attribute '" + name + "' of peer '" + peer +
                                     "' is set in the configuration file: change it there and reload");
        return ctl::Reply::failure("peer '" + peer + "' has no attestation of '" + name + "'");
      }
      log::info("attestation_revoked", {{"peer", peer}, {"attribute", name}});
      refresh_trust();
      return ctl::Reply::success({{"peer", peer}, {"attribute", name}, {"revoked", true},
                                  {"policy_generation", policy_generation_}});
    }
    if (!until.empty() && !dur.empty()) return ctl::Reply::failure("give --until or --for, not both");
    int64_t expires = 0;
    if (!until.empty()) {
      auto t = policy::parse_rfc3339(until);
      if (!t) return ctl::Reply::failure("--until '" + until + "': expected RFC 3339, e.g. 2026-11-21T23:00:00Z");
      if (*t <= now) return ctl::Reply::failure("--until '" + until + "' is in the past");
      expires = *t;
    } else if (!dur.empty()) {
      auto d = policy::parse_duration(dur);
      if (!d) return ctl::Reply::failure("--for '" + dur + "': expected a duration such as 90s, 15m, 8h or 1h30m");
      expires = now + *d;
    }
    attestations_.set(peer, name, now, expires);
    log::info("attested", {{"peer", peer}, {"attribute", name},
                           {"expires", expires ? policy::format_rfc3339(expires) : std::string("never")}});
    refresh_trust();
    return ctl::Reply::success({{"peer", peer},
                                {"attribute", name},
                                {"expires", expires ? json(policy::format_rfc3339(expires)) : json(nullptr)},
                                {"expires_in_s", expires ? json(double(expires - now) / 1e9) : json(nullptr)},
                                {"policy_generation", policy_generation_}});
  });
  ctl_.add_handler("attestations", [this](const json&) {
    const int64_t now = unix_now_ns();
    json out = json::array();
    for (const auto& p : cfg_.peers) {
      for (const auto& [name, value] : p.attributes) {
        if (value != config::AttributeValue(true)) continue;
        out.push_back({{"peer", p.name}, {"attribute", name}, {"source", "config"},
                       {"expires", nullptr}, {"expires_in_s", nullptr}});
      }
    }
    for (const auto& [key, e] : attestations_.all()) {
      if (e.expires_ns != 0 && e.expires_ns <= now) continue;  // expiring on this tick
      out.push_back({{"peer", key.first},
                     {"attribute", key.second},
                     {"source", "control"},
                     {"expires", e.expires_ns ? json(policy::format_rfc3339(e.expires_ns)) : json(nullptr)},
                     {"expires_in_s", e.expires_ns ? json(double(e.expires_ns - now) / 1e9) : json(nullptr)}});
    }
    std::stable_sort(out.begin(), out.end(), [](const json& a, const json& b) {
      return std::make_pair(a["peer"].get<std::string>(), a["attribute"].get<std::string>()) <
             std::make_pair(b["peer"].get<std::string>(), b["attribute"].get<std::string>());
    });
    return ctl::Reply::success({{"attestations", out}});
  });
}

}  // namespace sluice::cp
