// Per-packet metadata, kept in the mbuf private area (pool priv_size), so stages and the
// rings between threads carry it with the packet at no extra cost.
#pragma once

#include <rte_mbuf.h>

#include <cstdint>

namespace sluice::dp {

// Where a packet handed over a ring continues.
enum class Stage : uint8_t {
  ip_output,  // an IPv4 packet at data_off: route, resolve the next hop, transmit
  wg_input,   // an Ethernet frame holding a WireGuard message for this worker's peer
  wg_output,  // an inner IPv4 packet (or nothing: a keepalive) to encrypt for meta.peer
  tx,         // a complete Ethernet frame for meta.port
  nat_input,  // an IPv4 packet to a SNAT address, for the worker owning its port
};

// Why a packet goes to the control thread.
enum class CpKind : uint8_t {
  handshake,   // WireGuard message type 1-3; data_off at the message; outer source in meta
  neigh_wait,  // waits for ARP resolution of meta.nexthop on meta.port
  peer_wait,   // inner packet waits for a keypair to meta.peer (handshake in progress)
};

struct PktMeta {
  uint32_t peer;       // peer slot (wg_input/wg_output/peer_wait)
  uint32_t nexthop;    // host order (neigh_wait; ip_output: when non-zero, port and next hop are preset)
  uint32_t src_addr;   // outer source address of a received tunnel packet, host order
  uint16_t src_port;   // outer source port, host order
  uint16_t port;       // receiving port, or the port to send on
  Stage stage;
  CpKind cp_kind;
};

inline PktMeta* meta(rte_mbuf* m) { return static_cast<PktMeta*>(rte_mbuf_to_priv(m)); }

inline constexpr uint16_t kMetaPrivSize = RTE_ALIGN_CEIL(sizeof(PktMeta), RTE_MBUF_PRIV_ALIGN);

}  // namespace sluice::dp
