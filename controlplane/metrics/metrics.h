// Prometheus metrics at `metrics.listen` + /metrics (every name prefixed sluice_, counters end
// in _total).
//
// Threads: workers count into single-writer counters; only the control thread reads them and
// the state it owns (peers, configuration, handshake counters) and copies everything into a
// Snapshot, about once a second and whenever a scrape is waiting. The HTTP server's threads
// (civetweb, started from the control thread so they share its CPU set, never the workers')
// only ever render the latest published Snapshot, under a mutex. prometheus-cpp-core provides
// the data model and the text format; its pull Exposer is not used because it adds exposer_*
// series without the sluice_ prefix.
#pragma once

#include <array>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include <prometheus/metric_family.h>

#include "dataplane/drop.h"
#include "dataplane/rule_hits.h"

struct mg_context;
struct mg_connection;

namespace sluice::metrics {

struct PortStats {
  std::string name;
  std::string role;  // underlay | lan
  uint64_t rx_packets = 0, tx_packets = 0, rx_bytes = 0, tx_bytes = 0;
  uint64_t rx_errors = 0, tx_errors = 0, rx_missed = 0, rx_nombuf = 0;
};

struct WorkerStats {
  unsigned index = 0;
  uint64_t busy_cycles = 0, idle_cycles = 0;
  uint64_t conns = 0, conn_capacity = 0;
};

struct PeerStats {
  std::string name;
  bool up = false;  // has a keypair to send with
  uint64_t rx_bytes = 0, tx_bytes = 0, rx_packets = 0, tx_packets = 0;
  uint64_t handshakes = 0;
  std::optional<double> handshake_age_s;  // none before the first handshake
};

struct Snapshot {
  std::string gateway;  // gateway.name: the `gateway` label of every series
  double start_time_s = 0;  // unix seconds
  std::vector<PortStats> ports;
  std::vector<WorkerStats> workers;
  std::array<uint64_t, dp::kDropCount> drops{};  // workers and control thread, summed
  std::vector<PeerStats> peers;
  // Handshake messages by outcome (wg outcome names), and counters of the control thread.
  std::vector<std::pair<std::string, uint64_t>> handshake_outcomes;
  uint64_t initiations_sent = 0, responses_sent = 0, cookie_replies_sent = 0, keepalives_sent = 0;
  uint64_t completed_responder = 0, completed_initiator = 0;
  bool under_load = false;
  std::vector<dp::RuleHits::Total> rule_hits;
  uint64_t reloads = 0, reload_failures = 0;
  double last_reload_success_s = 0;  // unix seconds; start-up counts as the first load
  uint64_t config_generation = 0;
};

// The metric families of a snapshot, in a fixed order. Pure: tests call it directly.
std::vector<prometheus::MetricFamily> families(const Snapshot& s);
// Prometheus text exposition format 0.0.4 of families(s).
std::string render(const Snapshot& s);

// The HTTP endpoint. Control thread: start(), refresh(), want_refresh(); any thread: text().
class Server {
 public:
  Server() = default;
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // listen: "address:port". Fails with a message when the address cannot be bound.
  bool start(const std::string& listen, std::string* err);
  void stop();
  // Takes a snapshot with collect() and serves scrapes from it from now on; wakes the scrapes
  // that were waiting when collect() began.
  void refresh(const std::function<Snapshot()>& collect);
  // Whether a scrape is waiting for a snapshot newer than the last published one (one
  // relaxed load: the control loop asks every iteration).
  bool want_refresh() const {
    return wanted_.load(std::memory_order_relaxed) > published_.load(std::memory_order_relaxed);
  }
  // The text of the latest snapshot; first asks the control thread for a fresh one and waits
  // for it up to `wait_ms` (then serves the previous one: a busy control thread delays
  // nothing but the freshness of a scrape).
  std::string text(unsigned wait_ms);
  uint64_t scrapes() const { return scrapes_.load(std::memory_order_relaxed); }

 private:
  static int handle(mg_connection* conn, void* self);

  mg_context* ctx_ = nullptr;
  uint32_t listen_addr_ = 0;  // host order; 0: any (stop() wakes it through the loopback)
  std::mutex mu_;
  std::condition_variable cv_;
  std::shared_ptr<const Snapshot> snap_;  // under mu_; rendered by the scrape's own thread
  std::atomic<uint64_t> published_{0}, wanted_{0}, scrapes_{0};
};

}  // namespace sluice::metrics
