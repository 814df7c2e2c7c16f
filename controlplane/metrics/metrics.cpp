#include "controlplane/metrics/metrics.h"

#include <arpa/inet.h>
#include <civetweb.h>
#include <netinet/in.h>
#include <prometheus/text_serializer.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <sstream>
#include <thread>
#include <utility>

namespace sluice::metrics {

namespace {

using prometheus::ClientMetric;
using prometheus::MetricFamily;
using prometheus::MetricType;
using Labels = std::vector<ClientMetric::Label>;

// Builds families with the gateway label on every sample.
class Builder {
 public:
  explicit Builder(std::string gateway) : gateway_(std::move(gateway)) {}

  MetricFamily& family(const char* name, const char* help, MetricType type) {
    out_.push_back({name, help, type, {}});
    return out_.back();
  }
  void sample(MetricFamily& f, double v, Labels labels = {}) {
    ClientMetric m;
    m.label.push_back({"gateway", gateway_});
    for (auto& l : labels) m.label.push_back(std::move(l));
    if (f.type == MetricType::Counter)
      m.counter.value = v;
    else
      m.gauge.value = v;
    f.metric.push_back(std::move(m));
  }
  // A family with one sample per element of `items`.
  template <typename T, typename Fn>
  void each(const char* name, const char* help, MetricType type, const std::vector<T>& items, Fn fn) {
    MetricFamily& f = family(name, help, type);
    for (const auto& it : items) {
      auto [v, labels] = fn(it);
      sample(f, double(v), std::move(labels));
    }
  }
  void one(const char* name, const char* help, MetricType type, double v) { sample(family(name, help, type), v); }
  std::vector<MetricFamily> take() { return std::move(out_); }

 private:
  std::string gateway_;
  std::vector<MetricFamily> out_;
};

constexpr auto kCounter = MetricType::Counter;
constexpr auto kGauge = MetricType::Gauge;

// Series of each port, peer and worker: one family per field.
template <typename T>
struct Field {
  const char* name;
  const char* help;
  uint64_t T::*member;
};

const Field<PortStats> kPortFields[] = {
    {"sluice_port_rx_packets_total", "Packets received on the port (rte_eth_stats ipackets).", &PortStats::rx_packets},
    {"sluice_port_tx_packets_total", "Packets sent on the port (rte_eth_stats opackets).", &PortStats::tx_packets},
    {"sluice_port_rx_bytes_total", "Bytes received on the port (rte_eth_stats ibytes).", &PortStats::rx_bytes},
    {"sluice_port_tx_bytes_total", "Bytes sent on the port (rte_eth_stats obytes).", &PortStats::tx_bytes},
    {"sluice_port_rx_errors_total", "Erroneous packets received (rte_eth_stats ierrors).", &PortStats::rx_errors},
    {"sluice_port_tx_errors_total", "Packets the port failed to send (rte_eth_stats oerrors).", &PortStats::tx_errors},
    {"sluice_port_rx_missed_total", "Packets the NIC dropped for lack of RX descriptors (rte_eth_stats imissed).",
     &PortStats::rx_missed},
    {"sluice_port_rx_nombuf_total", "RX mbuf allocation failures (rte_eth_stats rx_nombuf).", &PortStats::rx_nombuf},
};

const Field<PeerStats> kPeerFields[] = {
    {"sluice_peer_rx_bytes_total", "Transport bytes received from the peer.", &PeerStats::rx_bytes},
    {"sluice_peer_tx_bytes_total", "Transport bytes sent to the peer.", &PeerStats::tx_bytes},
    {"sluice_peer_rx_packets_total", "Transport packets received from the peer.", &PeerStats::rx_packets},
    {"sluice_peer_tx_packets_total", "Transport packets sent to the peer.", &PeerStats::tx_packets},
    {"sluice_peer_handshakes_total", "Completed handshakes with the peer.", &PeerStats::handshakes},
};

std::string rule_label(const dp::RuleHits::Total& t) {
  if (t.policy.empty()) return "(none)";
  return t.rule < 0 ? "default" : std::to_string(t.rule);
}

}  // namespace

std::vector<MetricFamily> families(const Snapshot& s) {
  Builder b(s.gateway);

  b.one("sluice_start_time_seconds", "When sluiced started, unix seconds.", kGauge, s.start_time_s);
  b.one("sluice_config_generation", "Policy generation in use: 1 at start, +1 per successful reload.", kGauge,
        double(s.config_generation));
  b.one("sluice_reloads_total", "Successful configuration reloads.", kCounter, double(s.reloads));
  b.one("sluice_reload_failures_total", "Configuration reloads refused (the running configuration stayed).",
        kCounter, double(s.reload_failures));
  b.one("sluice_last_reload_success_timestamp_seconds",
        "When the configuration was last loaded successfully (start-up or reload), unix seconds.", kGauge,
        s.last_reload_success_s);

  for (const auto& f : kPortFields)
    b.each(f.name, f.help, kCounter, s.ports, [&](const PortStats& p) {
      return std::pair{p.*f.member, Labels{{"port", p.name}, {"role", p.role}}};
    });

  b.each("sluice_worker_busy_cycles_total", "TSC cycles of worker loop iterations that handled packets.", kCounter,
         s.workers, [](const WorkerStats& w) { return std::pair{w.busy_cycles, Labels{{"worker", std::to_string(w.index)}}}; });
  b.each("sluice_worker_idle_cycles_total", "TSC cycles of worker loop iterations that found nothing to do.", kCounter,
         s.workers, [](const WorkerStats& w) { return std::pair{w.idle_cycles, Labels{{"worker", std::to_string(w.index)}}}; });
  b.each("sluice_conntrack_entries", "Connections in the worker's connection table.", kGauge, s.workers,
         [](const WorkerStats& w) { return std::pair{w.conns, Labels{{"worker", std::to_string(w.index)}}}; });
  b.each("sluice_conntrack_capacity", "Size of the worker's connection table.", kGauge, s.workers,
         [](const WorkerStats& w) { return std::pair{w.conn_capacity, Labels{{"worker", std::to_string(w.index)}}}; });
  b.each("sluice_conntrack_occupancy_ratio", "Connections over the size of the worker's connection table (0..1).",
         kGauge, s.workers, [](const WorkerStats& w) {
           return std::pair{w.conn_capacity ? double(w.conns) / double(w.conn_capacity) : 0.0,
                            Labels{{"worker", std::to_string(w.index)}}};
         });

  {
    MetricFamily& f = b.family("sluice_drops_total", "Packets dropped, by reason (workers and control thread).", kCounter);
    for (unsigned r = 0; r < dp::kDropCount; ++r) b.sample(f, double(s.drops[r]), {{"reason", dp::kDropNames[r]}});
  }

  b.one("sluice_peers", "Configured peers.", kGauge, double(s.peers.size()));
  b.each("sluice_peer_up", "1 while the gateway has a keypair to send to the peer.", kGauge, s.peers,
         [](const PeerStats& p) { return std::pair{p.up ? 1 : 0, Labels{{"peer", p.name}}}; });
  for (const auto& f : kPeerFields)
    b.each(f.name, f.help, kCounter, s.peers,
           [&](const PeerStats& p) { return std::pair{p.*f.member, Labels{{"peer", p.name}}}; });
  {
    MetricFamily& f = b.family("sluice_peer_last_handshake_age_seconds",
                               "Seconds since the peer's latest handshake (absent before the first).", kGauge);
    for (const auto& p : s.peers)
      if (p.handshake_age_s) b.sample(f, *p.handshake_age_s, {{"peer", p.name}});
  }

  b.each("sluice_handshakes_total", "Handshake messages received, by outcome.", kCounter, s.handshake_outcomes,
         [](const auto& o) { return std::pair{o.second, Labels{{"outcome", o.first}}}; });
  {
    MetricFamily& f = b.family("sluice_handshakes_completed_total", "Sessions established, by our role.", kCounter);
    b.sample(f, double(s.completed_responder), {{"role", "responder"}});
    b.sample(f, double(s.completed_initiator), {{"role", "initiator"}});
  }
  {
    MetricFamily& f = b.family("sluice_handshake_messages_sent_total", "Handshake messages sent, by type.", kCounter);
    b.sample(f, double(s.initiations_sent), {{"type", "initiation"}});
    b.sample(f, double(s.responses_sent), {{"type", "response"}});
    b.sample(f, double(s.cookie_replies_sent), {{"type", "cookie_reply"}});
  }
  b.one("sluice_keepalives_sent_total", "Keepalives the gateway sent.", kCounter, double(s.keepalives_sent));
  b.one("sluice_under_load", "1 while the gateway is under load and answers initiations with cookies.", kGauge,
        s.under_load ? 1 : 0);

  b.each("sluice_policy_rule_hits_total",
         "Flows decided by a gateway access policy rule: flows opened (allow), packets refused (deny). "
         "rule is the 0-based position in the policy's acl, or default (its default deny); "
         "policy and rule (none): no policy covers the destination.",
         kCounter, s.rule_hits, [](const dp::RuleHits::Total& t) {
           return std::pair{t.hits, Labels{{"policy", t.policy.empty() ? "(none)" : t.policy}, {"rule", rule_label(t)}}};
         });
  return b.take();
}

std::string render(const Snapshot& s) {
  std::ostringstream out;
  prometheus::TextSerializer().Serialize(out, families(s));
  return out.str();
}

// --- HTTP -------------------------------------------------------------------------------------

namespace {
// How long a scrape waits for the control thread's fresh snapshot before it takes the previous
// one (at most ~1 s old). Freeing a replaced policy generation can hold the control thread for
// a few hundred milliseconds in the lab (rte_free of the old rte_lpm/rte_acl memory).
constexpr unsigned kScrapeWaitMs = 2000;
thread_local std::string g_start_error;  // what civetweb logged while mg_start failed
int log_start_error(const mg_connection*, const char* msg) {
  g_start_error = msg;
  return 1;
}
}  // namespace

Server::~Server() { stop(); }

bool Server::start(const std::string& listen, std::string* err) {
  mg_init_library(0);
  mg_callbacks cb{};
  cb.log_message = log_start_error;
  // Two threads: a scrape never waits behind another, and nothing else is served (no
  // document_root: only the /metrics handler answers, anything else is a 404).
  const char* options[] = {"listening_ports", listen.c_str(), "num_threads", "2", "request_timeout_ms", "10000",
                           nullptr};
  g_start_error.clear();
  // The address part, to reach the socket ourselves in stop(); "" or 0.0.0.0 mean any.
  in_addr addr{};
  const auto colon = listen.rfind(':');
  listen_addr_ = colon != std::string::npos && inet_pton(AF_INET, listen.substr(0, colon).c_str(), &addr) == 1
                     ? ntohl(addr.s_addr)
                     : 0;
  ctx_ = mg_start(&cb, this, options);
  if (ctx_ == nullptr) {
    *err = "cannot listen on " + listen + (g_start_error.empty() ? "" : ": " + g_start_error);
    return false;
  }
  mg_set_request_handler(ctx_, "/metrics$", &Server::handle, this);
  return true;
}

void Server::stop() {
  if (ctx_ == nullptr) return;
  {
    std::lock_guard lk(mu_);
    published_.store(UINT64_MAX, std::memory_order_relaxed);  // release waiting scrapes
  }
  cv_.notify_all();
  // civetweb's master thread polls its listening socket with a 2 s timeout and mg_stop() waits
  // for it: connections to the socket wake it so that sluiced stops at once.
  mg_server_port port{};
  const bool wake = mg_get_server_ports(ctx_, 1, &port) == 1 && port.protocol == 1;
  std::atomic<bool> stopped{false};
  std::thread stopper([&] {
    mg_stop(ctx_);
    stopped.store(true);
  });
  for (int i = 0; wake && i < 40 && !stopped.load(); ++i) {
    const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) break;
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(uint16_t(port.port));
    a.sin_addr.s_addr = listen_addr_ != 0 ? htonl(listen_addr_) : htonl(INADDR_LOOPBACK);
    (void)!::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    ::close(fd);
  }
  stopper.join();
  ctx_ = nullptr;
}

void Server::refresh(const std::function<Snapshot()>& collect) {
  const uint64_t covers = wanted_.load(std::memory_order_relaxed);
  auto snap = std::make_shared<const Snapshot>(collect());
  {
    std::lock_guard lk(mu_);
    snap_ = std::move(snap);
    if (covers > published_.load(std::memory_order_relaxed)) published_.store(covers, std::memory_order_relaxed);
  }
  cv_.notify_all();
}

std::string Server::text(unsigned wait_ms) {
  std::shared_ptr<const Snapshot> snap;
  {
    std::unique_lock lk(mu_);
    const uint64_t want = wanted_.fetch_add(1, std::memory_order_relaxed) + 1;
    cv_.wait_for(lk, std::chrono::milliseconds(wait_ms),
                 [&] { return published_.load(std::memory_order_relaxed) >= want; });
    snap = snap_;
  }
  scrapes_.fetch_add(1, std::memory_order_relaxed);
  return snap ? render(*snap) : std::string();
}

int Server::handle(mg_connection* conn, void* self) {
  const mg_request_info* ri = mg_get_request_info(conn);
  if (std::string(ri->request_method) != "GET" && std::string(ri->request_method) != "HEAD") {
    mg_send_http_error(conn, 405, "%s", "only GET\n");
    return 405;
  }
  const std::string body = static_cast<Server*>(self)->text(kScrapeWaitMs);
  mg_printf(conn,
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n"
            "Content-Length: %zu\r\nConnection: close\r\n\r\n",
            body.size());
  if (std::string(ri->request_method) == "GET") mg_write(conn, body.data(), body.size());
  return 200;
}

}  // namespace sluice::metrics
