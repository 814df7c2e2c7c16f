#include "controlplane/gateway.h"

#include <rte_ethdev.h>

#include <chrono>
#include <thread>

#include "controlplane/config/keys.h"
#include "controlplane/gateway_util.h"
#include "controlplane/log.h"
#include "controlplane/policy_view.h"
#include "dataplane/worker.h"

namespace sluice::cp {

using nlohmann::json;
using config::to_string;

// --- Control socket -------------------------------------------------------------------------

namespace {

// The policies that apply to a peer in the published policy (tags and trust requirements), ascending.
std::vector<uint16_t> applied_policies(const policy::CompiledPolicy* pol, uint32_t peer_id) {
  if (pol == nullptr) return {};
  return pol->class_policies(pol->class_of(peer_id));
}

}  // namespace

Peer* Gateway::find_peer(const std::string& name) {
  for (auto& p : peers_)
    if (p && p->cfg.name == name) return p.get();
  return nullptr;
}

json Gateway::counters() const {
  json drops = json::object();
  for (unsigned r = 0; r < dp::kDropCount; ++r) {
    uint64_t v = cp_drops_[r];
    for (const auto& w : dp_.workers) v += w->drops[r].get();
    drops[dp::kDropNames[r]] = v;
  }
  return drops;
}

json Gateway::status() const {
  const uint64_t now = now_ns();
  const uint64_t tsc = rte_rdtsc();
  const double hz = double(dp_.tsc_hz);
  json j;
  j["gateway"] = {{"name", cfg_.gateway.name},
                  {"public_key", config::encode_key(cfg_.gateway.public_key)},
                  {"listen_port", cfg_.gateway.listen_port},
                  {"virtual_address", to_string(cfg_.gateway.virtual_address)},
                  {"mtu", cfg_.gateway.mtu},
                  {"uptime_s", double(now - started_ns_) / 1e9},
                  {"workers", dp_.settings.workers},
                  {"aead_backend", crypto::backend_name(dp_.settings.aead)}};
  json ports = json::array();
  for (const auto& p : dp_.ports) {
    rte_eth_stats st{};
    rte_eth_stats_get(p.port_id, &st);
    ports.push_back({{"name", p.cfg.name},
                     {"role", p.cfg.role == dp::PortRole::underlay ? "underlay" : "lan"},
                     {"device", p.cfg.device},
                     {"address", to_string(config::Prefix{p.cfg.address, p.cfg.prefix_len})},
                     {"mac", mac_text(p.mac)},
                     {"rx_packets", st.ipackets},
                     {"tx_packets", st.opackets},
                     {"rx_bytes", st.ibytes},
                     {"tx_bytes", st.obytes},
                     {"rx_errors", st.ierrors},
                     {"tx_errors", st.oerrors},
                     {"rx_missed", st.imissed}});
  }
  j["ports"] = ports;

  json peers = json::array();
  for (const auto& pp : peers_) {
    if (!pp) continue;
    const Peer& p = *pp;
    const dp::PeerSlot& s = dp_.peers.slot(p.id);
    const bool up = has_sending_keypair(p);
    const uint64_t ep = s.endpoint.load(std::memory_order_relaxed);
    uint64_t last = std::max(s.last_rx_tsc.get(), s.last_tx_tsc.get());
    if (last < p.added_tsc) last = 0;  // the slot's previous owner
    json pj = {{"name", p.cfg.name},
               {"public_key", config::encode_key(p.cfg.public_key)},
               {"state", up ? "up" : "down"},
               {"endpoint", ep ? json(endpoint_text(ep)) : json(nullptr)},
               {"virtual_address", to_string(p.cfg.virtual_address)},
               {"tags", p.cfg.tags},
               {"latest_handshake_age_s", p.last_handshake_ns ? json(double(now - p.last_handshake_ns) / 1e9) : json(nullptr)},
               {"last_activity_age_s", last ? json(double(tsc - last) / hz) : json(nullptr)},
               {"handshakes", p.handshakes},
               {"rx_bytes", s.rx_bytes.get() - p.base_rx_bytes},
               {"tx_bytes", s.tx_bytes.get() - p.base_tx_bytes},
               {"rx_packets", s.rx_packets.get() - p.base_rx_packets},
               {"tx_packets", s.tx_packets.get() - p.base_tx_packets},
               {"inner_source_drops", s.inner_source_drops.get() - p.base_inner_source_drops},
               {"persistent_keepalive", p.cfg.persistent_keepalive},
               {"staged_packets", p.staged.size()}};
    // What the policies give this peer through this gateway ("Gateway for", "ACLs").
    const auto applied = applied_policies(dp_.policy.load(), p.id);
    pj["gateway_for"] = gateway_for(cfg_, applied);
    pj["acls"] = peer_acls(cfg_, applied);
    peers.push_back(pj);
  }
  j["peers"] = peers;

  json hs = json::object();
  for (size_t i = 0; i < wg::kOutcomeCount; ++i) {
    const auto o = static_cast<wg::Outcome>(i);
    if (o == wg::Outcome::ok) continue;  // split by message type below
    hs[std::string(wg::outcome_name(o))] = outcomes_[i];
  }
#define SLUICE_CP_COUNTER_JSON(name) hs[#name] = name##_;
  SLUICE_FOREACH_CP_COUNTER(SLUICE_CP_COUNTER_JSON)
#undef SLUICE_CP_COUNTER_JSON
  hs["under_load"] = now < under_load_until_;
  j["config"] = {{"file", config_path_}, {"policy_generation", policy_generation_}, {"reloads", reloads_},
                 {"reload_failures", reload_failures_}, {"watching", watch_fd_ >= 0},
                 {"watch_reloads", watch_reloads_}, {"peers_added", peers_added_},
                 {"peers_removed", peers_removed_}, {"peers_updated", peers_updated_},
                 {"reload_in_progress", policy_job_ != nullptr}};
  j["trust"] = {{"republishes", trust_republishes_}, {"rebuilds", trust_rebuilds_},
                {"last_publish_us", trust_last_publish_us_}, {"attestations", attestations_.all().size()}};
  j["handshakes"] = hs;
  j["drops"] = counters();

  json workers = json::array();
  for (const auto& w : dp_.workers) {
    workers.push_back({{"index", w->index},
                       {"lcore", w->lcore_id},
                       {"rx_packets", w->rx_packets.get()},
                       {"tx_packets", w->tx_packets.get()},
                       {"busy_cycles", w->busy_cycles.get()},
                       {"idle_cycles", w->idle_cycles.get()},
                       {"keepalives_rx", w->keepalives_rx.get()},
                       {"handshakes_to_control", w->handshakes_to_cp.get()},
                       {"handoffs", w->handoffs.get()},
                       {"handed_off", w->handed_off.get()},
                       {"fragments_out", w->fragments_out.get()},
                       {"icmp_errors_sent", w->icmp_errors_sent.get()}});
  }
  j["workers"] = workers;
  return j;
}

json Gateway::conntrack(const std::string& peer_filter) {
  // Each worker copies its table on request, a bounded slice per loop iteration; wait for all
  // of them (bounded, so a stuck worker cannot hang the control thread).
  const size_t max = 65536;
  std::vector<std::vector<dp::Conn>> bufs(dp_.workers.size());
  for (size_t w = 0; w < dp_.workers.size(); ++w) {
    auto& snap = dp_.workers[w]->snapshot;
    bufs[w].resize(max);
    snap.buf = bufs[w].data();
    snap.max = max;
    snap.count = 0;
    snap.state.store(dp::ConnSnapshot::requested, std::memory_order_release);
  }
  const auto deadline = Clock::now() + std::chrono::seconds(2);
  json out = json::array();
  const uint64_t tsc = rte_rdtsc();
  for (size_t w = 0; w < dp_.workers.size(); ++w) {
    auto& snap = dp_.workers[w]->snapshot;
    while (snap.state.load(std::memory_order_acquire) != dp::ConnSnapshot::done && Clock::now() < deadline)
      std::this_thread::sleep_for(std::chrono::microseconds(200));
    if (snap.state.load(std::memory_order_acquire) != dp::ConnSnapshot::done) {
      // The worker may still write into the buffer: hand it over for good (a deliberate, rare
      // leak) rather than free memory a worker is writing.
      new std::vector<dp::Conn>(std::move(bufs[w]));
      continue;
    }
    for (size_t i = 0; i < snap.count; ++i) {
      const dp::Conn& c = snap.buf[i];
      const std::string peer = c.peer < peers_.size() && peers_[c.peer] ? peers_[c.peer]->cfg.name : "?";
      if (!peer_filter.empty() && peer != peer_filter) continue;
      const char* proto = c.proto == IPPROTO_TCP ? "tcp" : c.proto == IPPROTO_UDP ? "udp" : "icmp";
      out.push_back({{"peer", peer},
                     {"proto", proto},
                     {"original", to_string(c.src) + ":" + std::to_string(c.sport) + " -> " + to_string(c.dst) + ":" +
                                      std::to_string(c.dport)},
                     {"translated", to_string(c.snat_addr) + ":" + std::to_string(c.snat_port) + " -> " +
                                        to_string(c.dst) + ":" + std::to_string(c.dport)},
                     {"state", dp::conn_state_name(c.state)},
                     {"expires_in_s", c.expires > tsc ? double(c.expires - tsc) / double(dp_.tsc_hz) : 0.0},
                     {"packets_out", c.packets_orig},
                     {"packets_in", c.packets_reply},
                     {"policy", c.policy_id < cfg_.policies.size() ? cfg_.policies[c.policy_id].name : ""},
                     {"worker", w}});
    }
    snap.state.store(dp::ConnSnapshot::idle, std::memory_order_release);
  }
  return out;
}

void Gateway::register_handlers() {
  ctl_.add_handler("status", [this](const json&) { return ctl::Reply::success(status()); });
  ctl_.add_handler("peers", [this](const json&) { return ctl::Reply::success(status()["peers"]); });
  ctl_.add_handler("neighbors", [this](const json&) {
    json out = json::array();
    for (const auto& v : dp_.neigh.snapshot(rte_rdtsc()))
      out.push_back({{"port", dp_.ports[v.port].cfg.name},
                     {"address", to_string(v.ip)},
                     {"mac", mac_text(v.mac)},
                     {"state", dp::NeighTable::state_name(v.state)},
                     {"confirmed_age_s", v.age_s < 0 ? json(nullptr) : json(v.age_s)},
                     {"queued", v.queued}});
    return ctl::Reply::success(out);
  });
  ctl_.add_handler("reload", [this](const json&) {
    // Validation errors come back at once; otherwise the reply waits for the compile (see
    // Gateway::begin_reload) while this thread goes on serving handshakes.
    std::vector<std::string> errors;
    const uint64_t token = ++next_ctl_token_;
    if (begin_reload(&errors, token) == ReloadStart::kFailed) {
      std::string msg = "configuration rejected, the running one stays:";
      for (const auto& e : errors) msg += "\n" + e;
      return ctl::Reply::failure(msg);
    }
    return ctl::Reply::deferred(token);
  });
  ctl_.add_handler("explain", [this](const json& args) {
    const std::string name = args.value("peer", "");
    Peer* p = find_peer(name);
    if (p == nullptr) return ctl::Reply::failure("no peer named '" + name + "'");
    auto addr = config::parse_ipv4(args.value("address", ""));
    if (!addr) return ctl::Reply::failure("explain needs an IPv4 address");
    const std::string proto = args.value("proto", "any");
    uint8_t pn = 0;
    if (proto == "tcp") pn = IPPROTO_TCP;
    else if (proto == "udp") pn = IPPROTO_UDP;
    else if (proto == "icmp") pn = IPPROTO_ICMP;
    else return ctl::Reply::failure("--proto must be tcp, udp or icmp");
    const uint16_t port = uint16_t(args.value("port", 0));
    const policy::CompiledPolicy* pol = dp_.policy.load();
    const int64_t now = unix_now_ns();
    const policy::Explanation e = pol->explain(p->id, *addr, pn, port, [&](const config::TrustRequirements& req) {
      return policy::requirement_unmet(req, peer_facts(p->id, now));
    });
    json r = {{"peer", name}, {"destination", to_string(*addr)}, {"proto", proto},
              {"port", port}, {"verdict", e.allow ? "allow" : "deny"}, {"reason", e.reason},
              {"code", policy::to_string(e.code)}, {"policy", e.policy}, {"rule", e.rule},
              {"rule_text", e.rule_text}, {"considered", e.considered},
              {"sender_class", e.sender_class}, {"policy_generation", pol->generation()}};
    if (e.route) {
      r["route"] = {{"port", dp_.ports[e.route->port].cfg.name},
                    {"via", e.route->via ? json(to_string(e.route->via)) : json(nullptr)},
                    {"snat_address", to_string(e.route->snat_addr)}};
    }
    return ctl::Reply::success(r);
  });
  ctl_.add_handler("conntrack", [this](const json& args) {
    return ctl::Reply::success(conntrack(args.value("peer", "")));
  });
  // sluicectl policies: each policy, its ACL and the peers it applies to now.
  ctl_.add_handler("policies", [this](const json&) {
    const policy::CompiledPolicy* pol = dp_.policy.load();
    std::vector<PeerRef> refs;
    for (const auto& p : peers_)
      if (p) refs.push_back({p->cfg.name, p->id, p->cfg.tags});
    json r = policies_view(cfg_, refs, [pol](uint32_t id) { return applied_policies(pol, id); });
    r["policy_generation"] = pol ? pol->generation() : 0;
    return ctl::Reply::success(r);
  });
  register_peer_handlers();
  ctl_.add_handler("rekey", [this](const json& args) {
    const std::string name = args.value("peer", "");
    Peer* p = find_peer(name);
    if (p == nullptr) return ctl::Reply::failure("no peer named '" + name + "'");
    if (dp_.peers.slot(p->id).endpoint.load() == 0)
      return ctl::Reply::failure("peer '" + name + "' has no known endpoint yet");
    send_initiation(*p, now_ns());
    return ctl::Reply::success({{"peer", name}, {"initiation_sent", true}});
  });
  register_trust_handlers();
  register_discovery_handlers();
}

}  // namespace sluice::cp
