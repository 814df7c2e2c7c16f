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

namespace sluice::policy {
class CompiledPolicy;
}

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
  void forward_flows(const policy::CompiledPolicy* pol, rte_mbuf** pkts, const FlowKey* keys,
                     const uint8_t* tcp_flags, uint16_t n);
  void forward_fragment(const policy::CompiledPolicy* pol, rte_mbuf* m);
  // LAN -> peer: reverse SNAT. `handed`: the packets came over this worker's handoff ring (a
  // fragment steered here is not steered on again).
  void nat_input(rte_mbuf** pkts, uint16_t n, bool handed = false);
  // ICMP errors of the gateway's own about `orig` (left to the caller): to the peer that sent it,
  // through the tunnel, from the virtual address; or to the LAN/Internet host that sent it,
  // from the address it was sent to (a SNAT address of ours).
  void icmp_error_to_peer(uint32_t peer, rte_mbuf* orig, uint8_t type, uint8_t code, uint16_t mtu);
  void icmp_error_to_sender(rte_mbuf* orig, uint8_t type, uint8_t code, uint16_t mtu);
  void wg_output(uint32_t peer, rte_mbuf** pkts, uint16_t n);
  void ip_output(rte_mbuf** pkts, uint16_t n);
  // Splits an IPv4 packet with DF clear into fragments of at most mtu bytes (new mbufs) and
  // frees it; returns how many went to out (0: it could not, m is still the caller's).
  unsigned fragment(rte_mbuf* m, uint16_t mtu, rte_mbuf** out, unsigned max);
  bool hand_off(unsigned owner, rte_mbuf* m);  // onto the owner's ring, or a counted drop
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
  Counter keepalives_rx, handshakes_to_cp;
  Counter handoffs;    // packets taken from this worker's handoff ring (other workers, control thread)
  Counter handed_off;  // packets this worker handed to the worker owning their peer or port
  Counter policy_lookups, icmp_errors_sent;
  Counter fragments_out;  // fragments made for the tunnel MTU or a port's MTU

  // This worker's flows (its peers' connections), and where later fragments of a flow go:
  // frags_out/frags_in map to a connection of ours; frags_steer maps fragments of replies
  // whose first fragment this worker handed to the owning worker to that worker.
  ConnTable ct;
  FragTracker frags_out, frags_in, frags_steer;
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
