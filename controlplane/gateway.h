// The control thread: runs on the EAL main lcore next to the workers. It answers and starts
// WireGuard handshakes, installs keypairs for the workers, drives the per-peer timers,
// resolves next hops (ARP), and serves the control socket. Workers reach it through the
// dataplane's rings; it reaches them through their handoff rings and RCU-published tables.
#pragma once

#include <pthread.h>
#include <rte_mbuf.h>

#include <array>
#include <atomic>
#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "controlplane/config/config.h"
#include "controlplane/policy/compiled.h"
#include "controlplane/ctl/server.h"
#include "controlplane/wg/noise.h"
#include "controlplane/wg/timers.h"
#include "dataplane/dataplane.h"
#include "dataplane/drop.h"

namespace sluice::cp {

// Packets waiting for a handshake to complete, per peer (wireguard-go's MaxStagedPackets).
inline constexpr size_t kMaxStagedPackets = 128;

// Counted on the control thread, reported next to the workers' drop reasons.
#define SLUICE_FOREACH_CP_COUNTER(_) \
  _(initiation_sent)                 \
  _(response_sent)                   \
  _(cookie_reply_sent)               \
  _(initiation_ok)                   \
  _(response_ok)                     \
  _(cookie_reply_ok)                 \
  _(keepalive_sent)                  \
  _(staged_dropped)                  \
  _(send_failed)

struct Peer {
  config::Peer cfg;
  uint32_t id = 0;  // peer slot in the dataplane, and the Noise peer id
  wg::PeerTimers timers;
  std::deque<rte_mbuf*> staged;
  // Last values of the owner worker's counters, turned into timer events each tick.
  uint64_t seen_rx_packets = 0, seen_tx_packets = 0;
  uint64_t seen_rx_data_tsc = 0, seen_tx_data_tsc = 0;
  uint64_t last_handshake_ns = 0;  // steady clock; 0 = never
  uint64_t handshakes = 0;
};

class Gateway {
 public:
  Gateway(config::Config cfg, std::string config_path);
  ~Gateway();
  Gateway(const Gateway&) = delete;
  Gateway& operator=(const Gateway&) = delete;

  bool start(std::string* err);  // dataplane, peers, control socket, workers
  void run();                    // the control loop; returns after request_stop()
  static void request_stop();    // async-signal-safe
  static void request_reload();  // async-signal-safe (SIGHUP)

  // Reloads run in three steps (gateway_reload.cpp), so that the control thread keeps answering
  // handshakes while a big policy compiles:
  //  1. begin_reload (control thread, fast): read and validate the file (load_file,
  //     restart_needed). Errors come back at once (kFailed). Otherwise a compile job starts on a
  //     control thread off the workers' lcores (rte_ctrl_thread_create, nice 10) building the
  //     CompiledPolicy of the new configuration (kStarted). Only one job runs at a time: a
  //     request meanwhile is coalesced into ONE queued reload (kQueued) that reads the file again
  //     when the running job ends, so the last request always sees the file as it is then.
  //  2. poll_reload (control loop, every iteration): when the job is done, commit_reload()
  //     publishes the policy (pointer exchange + RCU retire of the old one), adopts the
  //     configuration, and answers the waiters; on failure the running configuration stays.
  //  3. Waiters: control-socket tokens (ctl::Reply::deferred) answered with the outcome;
  //     SIGHUP reloads wait with no token (outcome logged).
  enum class ReloadStart { kFailed, kStarted, kQueued };
  ReloadStart begin_reload(std::vector<std::string>* errors, uint64_t waiter);
  void poll_reload();
  bool reload_in_progress() const { return policy_job_ != nullptr; }

  // What `sluicectl status` shows.
  nlohmann::json status() const;

 private:
  using Clock = std::chrono::steady_clock;
  static uint64_t now_ns();

  void add_peer(const config::Peer& p);
  bool publish_policy(const config::Config& c, uint64_t generation, std::string* err);
  nlohmann::json conntrack(const std::string& peer_filter);
  void register_handlers();

  // Work arriving from workers.
  unsigned drain_packets(uint64_t now);
  unsigned drain_events(uint64_t now);
  void on_handshake(rte_mbuf* m, uint64_t now);
  void on_peer_wait(rte_mbuf* m, uint64_t now);

  // Handshakes and keypairs.
  bool under_load(uint64_t now);
  void send_initiation(Peer& p, uint64_t now);
  void send_keepalive(Peer& p);
  bool send_udp(uint64_t endpoint, const void* payload, size_t len, unsigned worker);
  void install_keys(Peer& p, wg::SessionKeys& keys);
  void confirm_keypair(Peer& p, uint32_t local_index, uint64_t now);
  void retire_keypair(dp::Keypair* kp);
  void zero_keys(Peer& p);
  void flush_staged(Peer& p);
  void drop_staged(Peer& p);
  bool has_sending_keypair(const Peer& p) const;

  // Timers and housekeeping.
  void tick_peers(uint64_t now);
  void feed_timer_events(Peer& p, uint64_t now);
  void act(Peer& p, const wg::TimerActions& a, uint64_t now);

  // Neighbours.
  dp::NeighTable::Io make_neigh_io();
  void send_arp_request(uint16_t port, uint32_t ip, const dp::MacAddr* unicast);

  Peer* find_peer(const std::string& name);
  nlohmann::json counters() const;

  config::Config cfg_;
  dp::Dataplane dp_;
  std::unique_ptr<wg::Noise> noise_;
  dp::NeighTable::Io neigh_io_;  // the control thread's ARP I/O, built once at start
  std::vector<std::unique_ptr<Peer>> peers_;  // index = peer id
  ctl::Server ctl_;
  uint64_t started_ns_ = 0;

  // Handshake load: messages in the current one-second window, and until when we demand cookies.
  uint64_t load_window_start_ = 0;
  uint64_t load_window_count_ = 0;
  uint64_t under_load_until_ = 0;

  std::array<uint64_t, wg::kOutcomeCount> outcomes_{};
#define SLUICE_CP_COUNTER_FIELD(name) uint64_t name##_ = 0;
  SLUICE_FOREACH_CP_COUNTER(SLUICE_CP_COUNTER_FIELD)
#undef SLUICE_CP_COUNTER_FIELD
  std::array<uint64_t, dp::kDropCount> cp_drops_{};

  static std::atomic<bool> stop_;
  static std::atomic<bool> reload_;
  std::string config_path_;
  uint64_t policy_generation_ = 0;
  uint64_t reloads_ = 0, reload_failures_ = 0;

  // The reload in flight (see begin_reload): owned by the control thread; the compile thread
  // writes result/err/seconds, then sets done.
  struct PolicyJob {
    config::Config cfg;  // the validated next configuration
    uint64_t generation = 0;
    std::vector<uint64_t> waiters;  // control-socket tokens to answer
    std::unique_ptr<policy::CompiledPolicy> result;
    std::string err;
    double seconds = 0;
    std::atomic<bool> done{false};
    pthread_t thread{};
  };
  static void* compile_policy(void* job);  // the compile thread's body
  void commit_reload(config::Config next, std::unique_ptr<policy::CompiledPolicy> pol);
  void finish_reload(const std::vector<uint64_t>& waiters, bool ok, const std::vector<std::string>& errors);
  void wait_policy_job();
  std::unique_ptr<PolicyJob> policy_job_;
  bool reload_queued_ = false;
  std::vector<uint64_t> queued_waiters_;  // control-socket tokens of the queued reload
  uint64_t next_ctl_token_ = 0;
};

dp::Settings dataplane_settings(const config::Config& c);
// What a reload cannot change without a restart yet: empty when `next` only changes policies,
// subnets, tags and attributes.
std::string restart_needed(const config::Config& running, const config::Config& next);

}  // namespace sluice::cp
