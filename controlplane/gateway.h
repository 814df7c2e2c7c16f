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
#include "controlplane/discovery/kernel.h"
#include "controlplane/discovery/registry.h"
#include "controlplane/policy/compiled.h"
#include "controlplane/policy_reaper.h"
#include "controlplane/policy/trust.h"
#include "controlplane/ctl/server.h"
#include "controlplane/metrics/metrics.h"
#include "controlplane/wg/noise.h"
#include "controlplane/wg/timers.h"
#include "dataplane/dataplane.h"
#include "dataplane/drop.h"

namespace sluice::cp {

// Packets waiting for a handshake to complete, per peer (wireguard-go's MaxStagedPackets).
inline constexpr size_t kMaxStagedPackets = 128;
// A freed peer slot is taken again no sooner than this after its grace period.
inline constexpr uint64_t kSlotQuarantineNs = 1'000'000'000;
// How long the configuration file must stay quiet after a change before it is reloaded.
inline constexpr uint64_t kWatchDebounceNs = 200'000'000;

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
  // The slot's counters when this peer took it (a reused slot keeps its previous owner's
  // counts; status reports the difference), and when, in TSC (older activity is not ours).
  uint64_t base_rx_bytes = 0, base_tx_bytes = 0, base_rx_packets = 0, base_tx_packets = 0;
  uint64_t base_inner_source_drops = 0;
  uint64_t added_tsc = 0;
};

// --- Peer changes (gateway_peers.cpp) ---------------------------------------------------------

// What differs between two versions of a peer with the same public key.
enum PeerField : uint32_t {
  kPeerName = 1u << 0,
  kPeerVirtualAddress = 1u << 1,
  kPeerPresharedKey = 1u << 2,
  kPeerEndpoint = 1u << 3,
  kPeerKeepalive = 1u << 4,
  kPeerTags = 1u << 5,
  kPeerAttributes = 1u << 6,
};
uint32_t peer_changes(const config::Peer& a, const config::Peer& b);  // PeerField bits

// Two peer lists matched by public key (a changed key is a removal and an addition). Pure.
struct PeerDiff {
  struct Match {
    size_t from, to;
    uint32_t changed;  // PeerField bits; 0: unchanged (the session is not touched at all)
  };
  std::vector<Match> keep;     // in both lists, in `to` order
  std::vector<size_t> remove;  // indexes into `from`
  std::vector<size_t> add;     // indexes into `to`
};
PeerDiff diff_peers(const std::vector<config::Peer>& from, const std::vector<config::Peer>& to);

// What the loader checks across peers, for lists changed at run time: unique names, keys and
// virtual addresses, none the gateway's own. Empty when fine.
std::string check_peers(const std::vector<config::Peer>& peers, const config::Gateway& gw);

// Where each peer of a new list goes: the diff against the running peers and a slot for each
// addition. by_slot is the list CompiledPolicy::build must see (index = peer slot; free slots
// hold a nameless peer without tags, which no policy applies to).
struct PeerLayout {
  PeerDiff diff;
  std::vector<uint32_t> from_slots;  // slot of each running peer, in diff `from` order
  std::vector<uint32_t> add_slots;   // slot of each diff.add entry
  std::vector<config::Peer> by_slot;
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

  // Peer changes. plan_peers assigns slots (fresh ones first, freed ones only after an RCU
  // grace period and kSlotQuarantineNs) without changing anything; build the policy from
  // policy_view(next, layout) and, once it is published, apply_peers(next, layout) commits:
  // removed peers are torn down, changed ones updated in place (their session is kept), added
  // ones take their slots. Nothing may change the peers between plan and apply.
  bool plan_peers(const std::vector<config::Peer>& next, PeerLayout* out, std::string* err) const;
  config::Config policy_view(const config::Config& next, const PeerLayout& layout) const;
  void apply_peers(const std::vector<config::Peer>& next, const PeerLayout& layout);
  // Run-time changes (control socket): check, plan, publish the policy, apply; cfg_.peers
  // becomes `next`. Until the next reload of the file, which replaces them.
  bool change_peers(std::vector<config::Peer> next, std::string* err);

 private:
  using Clock = std::chrono::steady_clock;
  static uint64_t now_ns();

  void add_peer(const config::Peer& p, uint32_t slot);
  void remove_peer(uint32_t slot);
  void update_peer(Peer& p, const config::Peer& next, uint32_t changed);
  std::vector<config::Peer> running_peers(std::vector<uint32_t>* slots) const;

  // inotify on the configuration file's directory (control.watch_config).
  void watch_config();
  void poll_config_watch(uint64_t now);
  // c.peers must be in slot order (index = peer slot): policy_view() or running_view().
  bool publish_policy(const config::Config& c, uint64_t generation, std::string* err);
  // c with its peers replaced by the running ones in slot order (republishing the running
  // configuration, e.g. after an attribute changed).
  config::Config running_view(const config::Config& c) const;
  nlohmann::json conntrack(const std::string& peer_filter);
  void register_handlers();
  void register_peer_handlers();  // peers_add, peers_remove, peers_set (gateway_peers.cpp)

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

  // Trust requirements (gateway_trust.cpp): facts of configured peer `index` (cfg_.peers), the
  // predicate a build starts from (a snapshot: safe on another thread), and the control tick's
  // re-evaluation that re-points peers at other classes when a requirement changes.
  static int64_t unix_now_ns();
  policy::PeerFacts peer_facts(size_t index, int64_t now_unix_ns) const;
  policy::AppliesFn trust_applies(const config::Config& c) const;
  void refresh_trust();
  void register_trust_handlers();
  // Subnet discovery and known subnets (gateway_discovery.cpp).
  void start_discovery();
  void poll_discovery(uint64_t now, bool force = false);
  void register_discovery_handlers();
  nlohmann::json subnets_json() const;
  // Metrics (gateway_metrics.cpp).
  bool start_metrics(std::string* err);
  void metrics_tick(uint64_t now);  // refreshes the snapshot each second and when a scrape waits
  metrics::Snapshot metrics_snapshot() const;
  // A policy generation compiled from c is about to be published: its rule-hit table goes first.
  void metrics_new_policy(const config::Config& c, uint64_t generation);

  config::Config cfg_;
  dp::Dataplane dp_;
  std::unique_ptr<wg::Noise> noise_;
  dp::NeighTable::Io neigh_io_;  // the control thread's ARP I/O, built once at start
  std::vector<std::unique_ptr<Peer>> peers_;  // index = peer id (slot); null = free
  // Slots that were never used, from next_fresh_slot_ on, are taken first. A removed peer's slot
  // joins free_slots_ once an RCU grace period has passed (no worker holds its keypairs or its
  // address entry) and can be taken again kSlotQuarantineNs later (packets for the old peer
  // still queued between threads are gone by then). Shared with the RCU callbacks.
  struct FreeSlot {
    uint32_t slot;
    uint64_t usable_ns;
  };
  uint32_t next_fresh_slot_ = 0;
  std::shared_ptr<std::deque<FreeSlot>> free_slots_ = std::make_shared<std::deque<FreeSlot>>();
  uint64_t peers_added_ = 0, peers_removed_ = 0, peers_updated_ = 0;
  int watch_fd_ = -1;
  int watch_wd_ = -1;
  std::string watch_name_;        // the file's name inside the watched directory
  uint64_t watch_due_ns_ = 0;     // a change was seen: reload at this time (debounce); 0 = none
  uint64_t watch_first_ns_ = 0;   // the first change of the current quiet period
  uint64_t watch_reloads_ = 0;
  uint64_t reload_file_hash_ = 0;  // contents of the file at the last reload attempt (any trigger)
  ctl::Server ctl_;
  metrics::Server metrics_;
  uint64_t next_metrics_ns_ = 0;
  double start_unix_s_ = 0, last_load_unix_s_ = 0;  // system clock: metrics timestamps
  uint64_t started_ns_ = 0;
  bool started_ = false;  // start() finished: peers added from now on are logged

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

  policy::Attestations attestations_;
  uint64_t trust_seen_generation_ = 0;   // generation trust_held_ belongs to
  std::vector<uint64_t> trust_held_;     // per peer: bit k = peer_requirements()[k] held
  std::vector<uint32_t> trust_classes_;  // scratch: the next peer classes
  uint64_t trust_republishes_ = 0, trust_rebuilds_ = 0;
  double trust_last_publish_us_ = 0;     // evaluation + publication of the last change
  // Subnet discovery (gateway_discovery.cpp): polled from the control loop.
  discovery::SubnetRegistry subnets_;
  discovery::KernelWatcher kernel_watch_;
  discovery::KernelSnapshot kernel_;       // the last complete dump
  std::string kernel_error_;               // why the last dump or the watch failed; empty = fine
  std::string subnets_file_;               // empty: not persisted (state_dir unusable)
  std::vector<bool> port_link_up_;         // per dp_.ports, from the last poll
  bool kernel_dirty_ = true;               // dump the kernel at the next poll
  uint64_t next_discovery_ns_ = 0, next_port_poll_ns_ = 0;
  uint64_t discovery_reloads_seen_ = 0;    // reloads_ when custom subnets were last taken
  // The reload in flight (see begin_reload): owned by the control thread; the compile thread
  // writes result/err/seconds, then sets done.
  struct PolicyJob {
    config::Config cfg;   // the validated next configuration, as the file has it
    config::Config view;  // the same with peers in slot order: what the policy is compiled from
    policy::AppliesFn applies;          // trust requirements: a snapshot taken when it started
    std::vector<config::Key> slots;     // the public key of each slot it was compiled for
    uint64_t generation = 0;            // provisional; commit_reload assigns the published one
    std::vector<uint64_t> waiters;  // control-socket tokens to answer
    std::unique_ptr<policy::CompiledPolicy> result;
    std::string err;
    double seconds = 0;
    std::atomic<bool> done{false};
    pthread_t thread{};
  };
  static void* compile_policy(void* job);  // the compile thread's body
  void commit_reload(config::Config next, const config::Config& view, const PeerLayout& layout,
                     std::unique_ptr<policy::CompiledPolicy> pol);
  void finish_reload(const std::vector<uint64_t>& waiters, bool ok, const std::vector<std::string>& errors);
  void wait_policy_job();
  std::unique_ptr<PolicyJob> policy_job_;
  // The one way a policy reaches the workers: the rule-hit table of its generation (from c's
  // policies), then the pointer; the old policy is retired. Sets policy_generation_.
  void install_policy(std::unique_ptr<policy::CompiledPolicy> pol, const config::Config& c);
  // Frees a policy the workers may still use: after the RCU grace period, on the reaper thread.
  void retire_policy(const policy::CompiledPolicy* old);
  // Counts and logs a reload that failed; the running configuration stays.
  void reject_reload(const std::vector<std::string>& errors);
  std::shared_ptr<PolicyReaper> reaper_;  // made in start(), once EAL pinned the main thread
  bool reload_queued_ = false;
  std::vector<uint64_t> queued_waiters_;  // control-socket tokens of the queued reload
  uint64_t next_ctl_token_ = 0;
};

dp::Settings dataplane_settings(const config::Config& c);
// A hash of a file's bytes; 0 when it cannot be read. The watch skips a change that leaves the
// file as the last reload read it (already reloaded by SIGHUP or sluicectl, or touched only).
uint64_t file_hash(const std::string& path);
// What a reload cannot change without a restart: empty when `next` only changes policies,
// subnets and peers.
std::string restart_needed(const config::Config& running, const config::Config& next);

}  // namespace sluice::cp
