// A poll-mode worker: its state lives in one cache-aligned object that only its lcore writes
// (the control thread reads the counters). The loop: RX bursts from every port, packets handed
// over by other threads, flush TX, report a quiescent state.
#pragma once

#include <rte_mbuf.h>

#include <cstdint>
#include <string>

#include "dataplane/conntrack.h"
#include "dataplane/counter.h"
#include "dataplane/crypto/aead.h"
#include "dataplane/drop.h"

namespace sluice::dp {

class Dataplane;
struct Port;

inline constexpr unsigned kMaxBurst = 64;
inline constexpr unsigned kMaxPorts = 8;

class alignas(64) Worker {
 public:
  Worker(Dataplane& dp, unsigned index, unsigned lcore_id);
  bool init(std::string* err);  // allocates the connection table and fragment trackers

  int run();  // the lcore entry point; returns when dp.running goes false

  // One loop iteration; returns how many packets it handled (tests and benchmarks drive it).
  unsigned poll_once();

  // --- Stages (each takes a burst, consumes every mbuf: forwards, stages for TX, or drops). ---
  void eth_input(uint16_t port, rte_mbuf** pkts, uint16_t n);
  void arp_input(uint16_t port, rte_mbuf* m);
  void ip_input(uint16_t port, rte_mbuf** pkts, uint16_t n);
  void wg_input(rte_mbuf** pkts, uint16_t n);
  void tunnel_local(uint32_t peer, rte_mbuf* m);
  void forward(rte_mbuf** pkts, uint16_t n);    // peer -> LAN: classify, SNAT (meta.peer set)
  void nat_input(rte_mbuf** pkts, uint16_t n);  // LAN -> peer: reverse SNAT
  void icmp_error_to_peer(uint32_t peer, rte_mbuf* orig, uint8_t type, uint8_t code, uint16_t mtu);
  void wg_output(uint32_t peer, rte_mbuf** pkts, uint16_t n);
  void ip_output(rte_mbuf** pkts, uint16_t n);
  void tx_stage(uint16_t port, rte_mbuf* m);
  void tx_flush();

  void drop(rte_mbuf* m, Drop why) {
    drops[static_cast<unsigned>(why)].add();
    rte_pktmbuf_free(m);
  }
  void to_control(rte_mbuf* m, Drop if_full);
  void event(const struct CpEvent& e);

  Dataplane& dp;
  const unsigned index;
  const unsigned lcore_id;
  crypto::Aead aead;
  uint64_t now_tsc = 0;  // read once per loop iteration

  // Statistics: this worker writes, the control thread reads.
  Counter drops[kDropCount];
  Counter busy_cycles, idle_cycles, rx_packets, tx_packets;
  Counter keepalives_rx, handshakes_to_cp, handoffs;
  Counter policy_lookups, icmp_errors_sent;

  // This worker's flows (its peers' connections), and where later fragments of a flow go.
  ConnTable ct;
  FragTracker frags_out, frags_in;
  ConnSnapshot snapshot;  // sluicectl conntrack: the control thread asks, this worker copies

 private:
  struct TxBuffer {
    uint16_t n = 0;
    rte_mbuf* pkts[kMaxBurst];
  };
  TxBuffer tx_[kMaxPorts];
  unsigned idle_loops_ = 0;
};

}  // namespace sluice::dp
