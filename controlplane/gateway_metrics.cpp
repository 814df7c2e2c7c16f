// The control thread's side of the Prometheus metrics: it alone reads the workers' counters and
// its own state into a snapshot, which the metrics server's threads render (controlplane/metrics).
#include <rte_ethdev.h>

#include <chrono>

#include "controlplane/gateway.h"
#include "controlplane/log.h"
#include "dataplane/worker.h"

namespace sluice::cp {

namespace {

constexpr uint64_t kMetricsRefreshNs = 1'000'000'000;

}  // namespace

bool Gateway::start_metrics(std::string* err) {
  start_unix_s_ = double(unix_now_ns()) / 1e9;
  const std::string listen = config::to_string(cfg_.metrics.listen);
  if (!metrics_.start(listen, err)) {
    *err = "metrics.listen " + *err;
    return false;
  }
  metrics_.refresh([this] { return metrics_snapshot(); });
  log::info("metrics_listening", {{"address", listen}, {"path", "/metrics"}});
  return true;
}

void Gateway::metrics_tick(uint64_t now) {
  if (now < next_metrics_ns_ && !metrics_.want_refresh()) return;
  metrics_.refresh([this] { return metrics_snapshot(); });
  next_metrics_ns_ = now + kMetricsRefreshNs;
}

void Gateway::metrics_new_policy(const config::Config& c, uint64_t generation) {
  std::vector<std::string> names;
  std::vector<size_t> rules;
  for (const auto& p : c.policies) {
    names.push_back(p.name);
    rules.push_back(p.acl.size());
  }
  dp_.rule_hits.publish(generation, std::move(names), rules, dp_.settings.workers, dp_.rcu);
}

metrics::Snapshot Gateway::metrics_snapshot() const {
  metrics::Snapshot s;
  const uint64_t now = now_ns();
  s.gateway = cfg_.gateway.name;
  s.start_time_s = start_unix_s_;
  for (const auto& p : dp_.ports) {
    rte_eth_stats st{};
    rte_eth_stats_get(p.port_id, &st);
    s.ports.push_back({p.cfg.name, p.cfg.role == dp::PortRole::underlay ? "underlay" : "lan", st.ipackets,
                       st.opackets, st.ibytes, st.obytes, st.ierrors, st.oerrors, st.imissed, st.rx_nombuf});
  }
  for (unsigned r = 0; r < dp::kDropCount; ++r) s.drops[r] = cp_drops_[r];
  for (const auto& w : dp_.workers) {
    s.workers.push_back({w->index, w->busy_cycles.get(), w->idle_cycles.get(), w->ct.stats().size.get(),
                         w->ct.capacity()});
    for (unsigned r = 0; r < dp::kDropCount; ++r) s.drops[r] += w->drops[r].get();
  }
  for (const auto& pp : peers_) {
    if (!pp) continue;
    const Peer& p = *pp;
    const dp::PeerSlot& slot = dp_.peers.slot(p.id);
    metrics::PeerStats ps;
    ps.name = p.cfg.name;
    ps.up = has_sending_keypair(p);
    ps.rx_bytes = slot.rx_bytes.get();
    ps.tx_bytes = slot.tx_bytes.get();
    ps.rx_packets = slot.rx_packets.get();
    ps.tx_packets = slot.tx_packets.get();
    ps.handshakes = p.handshakes;
    if (p.last_handshake_ns) ps.handshake_age_s = double(now - p.last_handshake_ns) / 1e9;
    s.peers.push_back(std::move(ps));
  }
  for (size_t i = 0; i < wg::kOutcomeCount; ++i)
    s.handshake_outcomes.emplace_back(std::string(wg::outcome_name(static_cast<wg::Outcome>(i))), outcomes_[i]);
  s.initiations_sent = initiation_sent_;
  s.responses_sent = response_sent_;
  s.cookie_replies_sent = cookie_reply_sent_;
  s.keepalives_sent = keepalive_sent_;
  s.completed_responder = initiation_ok_;
  s.completed_initiator = response_ok_;
  s.under_load = now < under_load_until_;
  s.rule_hits = dp_.rule_hits.totals();
  s.reloads = reloads_;
  s.reload_failures = reload_failures_;
  s.last_reload_success_s = last_load_unix_s_;
  s.config_generation = policy_generation_;
  return s;
}

}  // namespace sluice::cp
