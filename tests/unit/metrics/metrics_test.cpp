// The metric families of a snapshot, their text rendering, and the HTTP endpoint that serves
// a fresh snapshot per scrape.
#include "controlplane/metrics/metrics.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <map>
#include <regex>
#include <set>
#include <sstream>
#include <thread>

#include <gtest/gtest.h>

namespace sluice::metrics {
namespace {

Snapshot sample() {
  Snapshot s;
  s.gateway = "menlo-park-1";
  s.start_time_s = 1700000000;
  s.ports.push_back({"wan", "underlay", 10, 20, 1000, 2000, 1, 2, 3, 4});
  s.ports.push_back({"lan", "lan", 5, 6, 500, 600, 0, 0, 0, 0});
  s.workers.push_back({0, 700, 300, 16384, 65536});
  s.drops[static_cast<unsigned>(dp::Drop::policy_deny)] = 5;
  s.drops[static_cast<unsigned>(dp::Drop::wg_replay)] = 2;
  s.peers.push_back({"laptop", true, 111, 222, 3, 4, 1, 2.5});
  s.peers.push_back({"phone \"x\"", false, 0, 0, 0, 0, 0, std::nullopt});
  s.handshake_outcomes = {{"ok", 3}, {"bad_mac1", 1}};
  s.initiations_sent = 1;
  s.responses_sent = 3;
  s.completed_responder = 3;
  s.under_load = true;
  s.rule_hits = {{"office", 0, 7}, {"office", -1, 1}, {"", -1, 2}};
  s.reloads = 2;
  s.reload_failures = 1;
  s.last_reload_success_s = 1700000100;
  s.config_generation = 3;
  return s;
}

const prometheus::MetricFamily* find(const std::vector<prometheus::MetricFamily>& fs, const std::string& name) {
  for (const auto& f : fs)
    if (f.name == name) return &f;
  return nullptr;
}

// The value of the sample whose labels include all of `want`.
double value(const std::vector<prometheus::MetricFamily>& fs, const std::string& name,
             const std::map<std::string, std::string>& want) {
  const auto* f = find(fs, name);
  if (f == nullptr) {
    ADD_FAILURE() << "no family " << name;
    return -1;
  }
  for (const auto& m : f->metric) {
    size_t matched = 0;
    for (const auto& l : m.label)
      if (auto it = want.find(l.name); it != want.end() && it->second == l.value) ++matched;
    if (matched == want.size())
      return f->type == prometheus::MetricType::Counter ? m.counter.value : m.gauge.value;
  }
  ADD_FAILURE() << "no sample of " << name << " with the labels asked";
  return -1;
}

TEST(Families, NamesFollowTheContract) {
  const auto fs = families(sample());
  std::set<std::string> names;
  for (const auto& f : fs) {
    EXPECT_EQ(f.name.rfind("sluice_", 0), 0u) << f.name;
    EXPECT_FALSE(f.help.empty()) << f.name;
    const bool total = f.name.size() > 6 && f.name.compare(f.name.size() - 6, 6, "_total") == 0;
    EXPECT_EQ(f.type == prometheus::MetricType::Counter, total) << f.name << ": counters, and only they, end in _total";
    EXPECT_TRUE(names.insert(f.name).second) << "duplicate family " << f.name;
    for (const auto& m : f.metric) {
      ASSERT_FALSE(m.label.empty());
      EXPECT_EQ(m.label[0].name, "gateway");
      EXPECT_EQ(m.label[0].value, "menlo-park-1");
    }
  }
}

TEST(Families, ValuesComeFromTheSnapshot) {
  const auto fs = families(sample());
  EXPECT_EQ(value(fs, "sluice_port_rx_packets_total", {{"port", "wan"}, {"role", "underlay"}}), 10);
  EXPECT_EQ(value(fs, "sluice_port_tx_bytes_total", {{"port", "lan"}}), 600);
  EXPECT_EQ(value(fs, "sluice_port_rx_missed_total", {{"port", "wan"}}), 3);
  EXPECT_EQ(value(fs, "sluice_worker_busy_cycles_total", {{"worker", "0"}}), 700);
  EXPECT_EQ(value(fs, "sluice_worker_idle_cycles_total", {{"worker", "0"}}), 300);
  EXPECT_EQ(value(fs, "sluice_conntrack_entries", {{"worker", "0"}}), 16384);
  EXPECT_EQ(value(fs, "sluice_conntrack_capacity", {{"worker", "0"}}), 65536);
  EXPECT_DOUBLE_EQ(value(fs, "sluice_conntrack_occupancy_ratio", {{"worker", "0"}}), 0.25);
  EXPECT_EQ(value(fs, "sluice_drops_total", {{"reason", "policy_deny"}}), 5);
  EXPECT_EQ(value(fs, "sluice_drops_total", {{"reason", "wg_replay"}}), 2);
  EXPECT_EQ(value(fs, "sluice_drops_total", {{"reason", "tx_full"}}), 0);
  EXPECT_EQ(find(fs, "sluice_drops_total")->metric.size(), dp::kDropCount);  // every reason, zeros too
  EXPECT_EQ(value(fs, "sluice_peers", {}), 2);
  EXPECT_EQ(value(fs, "sluice_peer_up", {{"peer", "laptop"}}), 1);
  EXPECT_EQ(value(fs, "sluice_peer_rx_bytes_total", {{"peer", "laptop"}}), 111);
  EXPECT_EQ(value(fs, "sluice_peer_tx_packets_total", {{"peer", "laptop"}}), 4);
  EXPECT_EQ(value(fs, "sluice_peer_last_handshake_age_seconds", {{"peer", "laptop"}}), 2.5);
  EXPECT_EQ(find(fs, "sluice_peer_last_handshake_age_seconds")->metric.size(), 1u);  // none before a handshake
  EXPECT_EQ(value(fs, "sluice_handshakes_total", {{"outcome", "ok"}}), 3);
  EXPECT_EQ(value(fs, "sluice_handshakes_total", {{"outcome", "bad_mac1"}}), 1);
  EXPECT_EQ(value(fs, "sluice_handshakes_completed_total", {{"role", "responder"}}), 3);
  EXPECT_EQ(value(fs, "sluice_handshake_messages_sent_total", {{"type", "response"}}), 3);
  EXPECT_EQ(value(fs, "sluice_under_load", {}), 1);
  EXPECT_EQ(value(fs, "sluice_policy_rule_hits_total", {{"policy", "office"}, {"rule", "0"}}), 7);
  EXPECT_EQ(value(fs, "sluice_policy_rule_hits_total", {{"policy", "office"}, {"rule", "default"}}), 1);
  EXPECT_EQ(value(fs, "sluice_policy_rule_hits_total", {{"policy", "(none)"}, {"rule", "(none)"}}), 2);
  EXPECT_EQ(value(fs, "sluice_reloads_total", {}), 2);
  EXPECT_EQ(value(fs, "sluice_reload_failures_total", {}), 1);
  EXPECT_EQ(value(fs, "sluice_last_reload_success_timestamp_seconds", {}), 1700000100);
  EXPECT_EQ(value(fs, "sluice_config_generation", {}), 3);
}

TEST(Render, TextExpositionFormat) {
  const std::string text = render(sample());
  EXPECT_NE(text.find("# TYPE sluice_drops_total counter\n"), std::string::npos);
  EXPECT_NE(text.find("# TYPE sluice_under_load gauge\n"), std::string::npos);
  EXPECT_NE(text.find("sluice_port_rx_bytes_total{gateway=\"menlo-park-1\",port=\"wan\",role=\"underlay\"} 1000\n"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("sluice_policy_rule_hits_total{gateway=\"menlo-park-1\",policy=\"office\",rule=\"0\"} 7\n"),
            std::string::npos);
  // Label values are escaped.
  EXPECT_NE(text.find("peer=\"phone \\\"x\\\"\""), std::string::npos) << text;
  // Every sample line: name{labels} value.
  const std::regex line(R"(^sluice_[a-z_]+\{[a-z_]+="([^"\\]|\\.)*"(,[a-z_]+="([^"\\]|\\.)*")*\} -?[0-9.e+]+$)");
  std::istringstream in(text);
  size_t samples = 0;
  for (std::string l; std::getline(in, l);) {
    if (l.empty() || l[0] == '#') continue;
    EXPECT_TRUE(std::regex_match(l, line)) << l;
    ++samples;
  }
  EXPECT_GT(samples, 60u);
}

TEST(Render, LargeCountersKeepTheirDigits) {
  Snapshot s = sample();
  s.ports[0].rx_bytes = 123456789012345ull;
  const std::string text = render(s);
  EXPECT_NE(text.find("port=\"wan\",role=\"underlay\"} 123456789012345\n"), std::string::npos) << text;
}

// --- The HTTP endpoint ------------------------------------------------------------------------

int free_port() {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
  socklen_t len = sizeof a;
  getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  close(fd);
  return ntohs(a.sin_port);
}

std::string http(int port, const std::string& request) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(uint16_t(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    close(fd);
    return "";
  }
  (void)!write(fd, request.data(), request.size());
  std::string out;
  char buf[4096];
  for (ssize_t n; (n = read(fd, buf, sizeof buf)) > 0;) out.append(buf, size_t(n));
  close(fd);
  return out;
}

TEST(Server, ServesAFreshSnapshotPerScrape) {
  Server server;
  const int port = free_port();
  std::string err;
  ASSERT_TRUE(server.start("127.0.0.1:" + std::to_string(port), &err)) << err;
  // A stand-in control loop: refreshes only when a scrape waits, counting its snapshots.
  std::atomic<bool> stop{false};
  std::atomic<uint64_t> taken{0};
  std::thread loop([&] {
    while (!stop) {
      if (server.want_refresh())
        server.refresh([&] {
          Snapshot s = sample();
          s.reloads = ++taken;
          return s;
        });
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
  });
  for (uint64_t i = 1; i <= 3; ++i) {
    const std::string r = http(port, "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    ASSERT_EQ(r.rfind("HTTP/1.1 200", 0), 0u) << r;
    EXPECT_NE(r.find("Content-Type: text/plain; version=0.0.4"), std::string::npos);
    // Each scrape waited for a snapshot taken after it arrived.
    EXPECT_NE(r.find("sluice_reloads_total{gateway=\"menlo-park-1\"} " + std::to_string(i) + "\n"), std::string::npos)
        << r;
  }
  EXPECT_EQ(server.scrapes(), 3u);
  EXPECT_EQ(http(port, "GET /other HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").rfind("HTTP/1.1 404", 0), 0u);
  stop = true;
  loop.join();
  // civetweb's master thread sleeps 2 s in poll(); stop() wakes it rather than wait.
  const auto t0 = std::chrono::steady_clock::now();
  server.stop();
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::milliseconds(1500));
}

TEST(Server, AStalledControlThreadDelaysOnlyFreshness) {
  Server server;
  const int port = free_port();
  std::string err;
  ASSERT_TRUE(server.start("127.0.0.1:" + std::to_string(port), &err)) << err;
  server.refresh([] { return sample(); });
  // Nobody refreshes: the scrape gets the last snapshot after the bounded wait.
  const std::string r = http(port, "GET /metrics HTTP/1.0\r\n\r\n");
  EXPECT_NE(r.find("sluice_reloads_total{gateway=\"menlo-park-1\"} 2\n"), std::string::npos) << r;
}

TEST(Server, RefusesAnAddressItCannotBind) {
  Server a;
  const int port = free_port();
  std::string err;
  ASSERT_TRUE(a.start("127.0.0.1:" + std::to_string(port), &err)) << err;
  Server b;
  EXPECT_FALSE(b.start("127.0.0.1:" + std::to_string(port), &err));
  EXPECT_NE(err.find("cannot listen on 127.0.0.1:" + std::to_string(port)), std::string::npos) << err;
}

}  // namespace
}  // namespace sluice::metrics
