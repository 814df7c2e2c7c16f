// Why a worker dropped a packet. One list generates the enum, the names used by
// `sluicectl status` and the `reason` label of sluice_drops_total.
#pragma once

#include <cstdint>

namespace sluice::dp {

#define SLUICE_FOREACH_DROP(_)                                                     \
  _(eth_malformed, "frame too short or not a single-segment Ethernet frame")       \
  _(eth_unknown_type, "neither IPv4 nor ARP")                                      \
  _(eth_not_for_us, "unicast frame to another MAC address")                        \
  _(arp_malformed, "ARP that is not Ethernet/IPv4 or too short")                   \
  _(arp_not_for_us, "ARP request for an address that is not ours")                 \
  _(ip_malformed, "bad IPv4 version, header length or total length")              \
  _(ip_bad_checksum, "IPv4 header checksum mismatch")                              \
  _(ip_truncated, "IPv4 packet longer than its frame (net_af_packet: raise framesz=)") \
  _(ip_fragment, "IPv4 fragment for the tunnel port or of a protocol not translated")  \
  _(ip_not_for_us, "IPv4 to an address the gateway does not serve")                \
  _(ip_ttl_exceeded, "TTL expired on the gateway")                                 \
  _(icmp_unhandled, "ICMP other than echo request to a gateway address")           \
  _(ip_proto_unhandled, "protocol the gateway does not serve on this address")      \
  _(udp_malformed, "UDP header or length inconsistent")                            \
  _(no_listener, "TCP/UDP to a gateway port nothing listens on")                        \
  _(wg_malformed, "UDP to the tunnel port that is no valid WireGuard message")     \
  _(wg_unknown_index, "transport message for a receiver index we do not know")     \
  _(wg_keypair_expired, "transport message on a keypair past REJECT_AFTER_TIME")  \
  _(wg_replay, "counter already seen or older than the replay window")             \
  _(wg_decrypt_failed, "transport message failed authentication")                  \
  _(wg_inner_malformed, "decrypted payload is not a valid IPv4 packet")            \
  _(wg_inner_source, "inner source is not the peer's virtual address")             \
  _(wg_no_keypair, "no usable keypair to encrypt to the peer")                     \
  _(wg_no_endpoint, "the peer's endpoint is unknown")                              \
  _(peer_removed, "for or from a peer removed while the packet was under way")     \
  _(wg_too_big, "packet larger than the tunnel MTU or the mbuf room")              \
  _(no_route, "no route to the destination")                                       \
  _(policy_deny, "no gateway access policy allows the flow")                       \
  _(ct_table_full, "connection table full: new flow refused")                      \
  _(ct_no_port, "no free SNAT port for the flow")                                  \
  _(ct_invalid, "TCP packet out of state, or not a SYN opening a flow")            \
  _(ct_no_conn, "from the LAN without a connection: devices never open flows")     \
  _(icmp_error_no_conn, "ICMP error about no connection of ours")                  \
  _(nat_malformed, "truncated or malformed L4 header")                             \
  _(frag_no_first, "IP fragment whose first fragment was not seen")                \
  _(frag_needed, "DF packet larger than the egress MTU (ICMP sent)")               \
  _(handshake_queue_full, "control-thread handshake queue full (under load)")      \
  _(control_queue_full, "control-thread queue full")                               \
  _(handoff_queue_full, "queue to the owning worker full")                         \
  _(neigh_queue_full, "too many packets waiting for ARP resolution")               \
  _(neigh_unreachable, "ARP resolution of the next hop failed")                    \
  _(tx_full, "port TX queue full")

enum class Drop : uint16_t {
#define SLUICE_DROP_ENUM(name, text) name,
  SLUICE_FOREACH_DROP(SLUICE_DROP_ENUM)
#undef SLUICE_DROP_ENUM
      count_
};

inline constexpr unsigned kDropCount = static_cast<unsigned>(Drop::count_);

inline constexpr const char* kDropNames[kDropCount] = {
#define SLUICE_DROP_NAME(name, text) #name,
    SLUICE_FOREACH_DROP(SLUICE_DROP_NAME)
#undef SLUICE_DROP_NAME
};

inline constexpr const char* kDropHelp[kDropCount] = {
#define SLUICE_DROP_HELP(name, text) text,
    SLUICE_FOREACH_DROP(SLUICE_DROP_HELP)
#undef SLUICE_DROP_HELP
};

}  // namespace sluice::dp
