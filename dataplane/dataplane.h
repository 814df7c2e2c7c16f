// The dataplane: EAL, ports, mbuf pool, the tables workers read, the rings between threads,
// and the worker lcores. The control thread (the EAL main lcore) owns this object; workers
// get a const view of the settings and single-writer access to their own Worker.
#pragma once

#include <rte_lpm.h>
#include <rte_mempool.h>
#include <rte_ring.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "dataplane/crypto/aead.h"
#include "dataplane/neigh.h"
#include "dataplane/peers.h"
#include "dataplane/rcu.h"
#include "dataplane/rule_hits.h"

namespace sluice::policy {
class CompiledPolicy;
}

namespace sluice::dp {

class Worker;

enum class PortRole : uint8_t { underlay, lan };

struct PortSettings {
  std::string name;
  PortRole role = PortRole::lan;
  std::string device;      // DPDK devargs: a vdev ("net_af_packet0,iface=x") or a PCI address
  uint32_t address = 0;    // host order
  uint8_t prefix_len = 0;
  uint32_t gateway = 0;    // optional default next hop (underlay), host order
};

struct Settings {
  std::vector<std::string> eal_args;
  unsigned workers = 1;
  std::vector<PortSettings> ports;
  uint32_t virtual_address = 0;  // the gateway's overlay address
  uint16_t listen_port = 51820;
  uint16_t mtu = 1420;           // inner MTU of the tunnel
  uint16_t rx_queue_size = 1024;
  uint16_t tx_queue_size = 1024;
  uint16_t burst = 32;
  uint32_t mbuf_pool_size = 0;   // 0: computed from queues and workers
  uint16_t mbuf_data_room = 0;   // bytes per mbuf after the headroom; 0: the DPDK default (2048),
                                 // or more for net_af_packet ports with a larger framesz=
  unsigned idle_sleep_us = 0;
  crypto::AeadBackend aead = crypto::default_backend();
  uint32_t max_peers = 4096;
  uint32_t conn_capacity = 65536;  // connections per worker
  NeighTable::Config neigh;
};

// What a port is at run time. Immutable once workers run.
struct Port {
  PortSettings cfg;
  uint16_t port_id = 0;  // DPDK port id
  MacAddr mac{};
  uint16_t l3_mtu = 1500;
};

struct NextHop {
  uint16_t port = 0;     // index into Dataplane::ports
  uint32_t gateway = 0;  // 0: on-link, the destination itself is the next hop
};

// Routes of the gateway's own ports: connected prefixes and the underlay default route.
// Built by the control thread, published by pointer, retired through Rcu.
struct RouteTable {
  rte_lpm* lpm = nullptr;
  std::vector<NextHop> hops;
  ~RouteTable();
};

// Control-thread events from workers, fixed 16-byte ring elements.
struct CpEvent {
  enum Type : uint8_t { neigh_learn, neigh_learn_create, want_handshake, keypair_confirmed };
  uint8_t type;
  uint8_t port;
  uint8_t mac[6];
  uint32_t ip;    // neigh_*: the address; keypair_confirmed: the local index
  uint32_t peer;
};
static_assert(sizeof(CpEvent) == 16);

std::vector<std::string> eal_argv(const Settings& s);
// Initialises the EAL once per process with eal_argv(s); later calls do nothing.
bool eal_init(const Settings& s, std::string* err);

class Dataplane {
 public:
  Dataplane();
  ~Dataplane();
  Dataplane(const Dataplane&) = delete;
  Dataplane& operator=(const Dataplane&) = delete;

  // Initialises the EAL (once per process), the pool, the ports and the tables.
  bool init(const Settings& s, std::string* err);
  bool start(std::string* err);  // launch the workers on their lcores
  void stop();                   // ask workers to return and wait for them

  // --- Shared state. Settings, ports and rings are immutable once workers run. ---
  Settings settings;
  std::vector<Port> ports;
  int underlay = -1;  // index of the underlay port
  rte_mempool* pool = nullptr;
  // Hits per policy rule; cp: publish() and totals(), dp: row() and its own counters. Declared
  // before rcu: rcu callbacks fold its retired tables, also from ~Rcu.
  RuleHits rule_hits;
  Rcu rcu;
  PeerTable peers;
  NeighTable neigh;
  std::atomic<RouteTable*> routes{nullptr};  // cp: rw (publish), dp: ro
  // Gateway access policies and routed subnets; cp: rw (publish, retire through rcu), dp: ro.
  std::atomic<const policy::CompiledPolicy*> policy{nullptr};
  rte_ring* to_cp_packets = nullptr;        // MP/SC: packets for the control thread
  rte_ring* to_cp_events = nullptr;         // MP/SC: CpEvent
  std::vector<rte_ring*> handoff;           // per worker, MP/SC: packets continuing on it
  std::vector<std::unique_ptr<Worker>> workers;
  std::atomic<bool> running{false};
  uint64_t tsc_hz = 0;

  // Control-thread helpers.
  std::unique_ptr<RouteTable> build_routes(std::string* err) const;
  void publish_routes(std::unique_ptr<RouteTable> t);
  // Hands a packet to worker w (stage in meta); frees and returns false if its ring is full.
  bool hand_to_worker(unsigned w, rte_mbuf* m);
  rte_mbuf* alloc() { return rte_pktmbuf_alloc(pool); }

 private:
  bool init_port(Port& p, std::string* err);
  bool started_ = false;
};

}  // namespace sluice::dp
