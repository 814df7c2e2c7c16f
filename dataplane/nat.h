// Source NAT on IPv4 packets: header rewriting with incremental checksums (RFC 1624), TTL,
// TCP MSS clamping, ICMP errors (translating the LAN's, building our own) and fragments.
//
// Every function works on a contiguous IPv4 packet (`pkt` points at the IP header, `len` is
// the bytes available there, Ethernet padding allowed) and needs no mbuf or EAL. Addresses
// and ports are host order. Functions that rewrite validate what they touch and leave the
// packet unchanged when they return false.
//
// Fragments: only a first fragment (offset 0) carries the L4 header. Its L4 checksum covers
// the whole datagram, and an incremental update stays right even though the rest is not
// here, so first fragments translate like whole packets. Non-first fragments get the address
// rewrite only (their L4 checksum is in the first fragment); which connection they belong to
// comes from a FragTracker (conntrack.h) fed by first fragments: frag_key() is its key.
#pragma once

#include <cstdint>

#include "dataplane/conntrack.h"

namespace sluice::dp {

// Tunnel MTU 1420 - 20 (IPv4) - 20 (TCP).
inline constexpr uint16_t kDefaultClampMss = 1380;

enum class FlowParse : uint8_t {
  ok,           // key filled (a first fragment is ok too: is_first_fragment())
  fragment,     // a non-first fragment: no ports, see FragTracker
  icmp_error,   // ICMP destination unreachable / time exceeded / parameter problem
  unsupported,  // another protocol or ICMP type: no connection for it
  malformed,    // bad IPv4 header or truncated L4 header
};

// The conntrack key of a packet as seen (conntrack.h explains ICMP echo keys) and, for TCP,
// its flags.
FlowParse parse_flow(const uint8_t* pkt, uint32_t len, FlowKey* key, uint8_t* tcp_flags);

bool is_fragment(const uint8_t* pkt);        // MF set or offset != 0
bool is_first_fragment(const uint8_t* pkt);  // MF set and offset 0
FragKey frag_key(const uint8_t* pkt);

// Peer -> LAN: source becomes (new_src, new_sport); LAN -> peer: destination becomes
// (new_dst, new_dport). The port is the TCP/UDP port or the ICMP echo identifier (of a
// request going out, of a reply coming in). IPv4 and L4 checksums are updated incrementally;
// a UDP checksum of 0 (none) stays 0. Non-first fragments: address only. false: malformed.
// Neither touches the TTL.
bool snat_out(uint8_t* pkt, uint32_t len, uint32_t new_src, uint16_t new_sport);
bool unsnat_in(uint8_t* pkt, uint32_t len, uint32_t new_dst, uint16_t new_dport);

// Decrements the TTL and updates the checksum. false (packet unchanged) when TTL <= 1:
// the caller drops it and answers with build_time_exceeded().
bool ip_ttl_decrement(uint8_t* pkt);

// On a TCP SYN (with or without ACK), lowers an MSS option above `mss` to `mss`, updating
// the TCP checksum. Returns whether it changed the packet; malformed options, no MSS option
// or not a SYN leave it alone.
bool tcp_clamp_mss(uint8_t* pkt, uint32_t len, uint16_t mss = kDefaultClampMss);

// An ICMP error and the packet it quotes.
struct IcmpError {
  uint8_t type = 0, code = 0;
  uint16_t inner_off = 0;     // the embedded IPv4 header, from pkt
  uint16_t inner_l4_off = 0;  // its L4 header, from pkt
  uint16_t inner_l4_len = 0;  // bytes of it present (>= 8)
  FlowKey inner;              // the embedded tuple as seen in the embedded packet

  // The quoted packet went the other way: its reversed tuple is the conntrack key of the
  // direction the error travels. An error from the LAN quotes a translated packet
  // (src = SNAT addr/port): look the key up with FlowDir::reply. An error from a peer quotes a
  // packet we delivered to it: FlowDir::orig.
  FlowKey lookup_key() const { return inner.reversed(); }
};

// Accepts types 3 (all codes, frag-needed included), 11 and 12 quoting an IPv4 TCP, UDP or
// ICMP echo packet with at least 8 bytes of its L4 header (a first fragment at most).
bool parse_icmp_error(const uint8_t* pkt, uint32_t len, IcmpError* e);

// Translates an ICMP error of connection c going `dir`:
//   FlowDir::reply (LAN -> peer): outer dst and embedded src/sport := (addr, port),
//                                 i.e. (c.src, c.sport), the peer's VA and port;
//   FlowDir::orig  (peer -> LAN): outer src and embedded dst/dport := (addr, port),
//                                 i.e. (c.snat_addr, c.snat_port).
// Fixes the outer IPv4 checksum, the embedded IPv4 checksum, the embedded L4 checksum when it
// was quoted (UDP: non-zero; TCP: with 18+ bytes quoted) and the ICMP checksum.
bool translate_icmp_error(uint8_t* pkt, uint32_t len, const IcmpError& e, FlowDir dir,
                          uint32_t addr, uint16_t port);

// Building ICMP errors from the gateway: outer IPv4 (src = from, dst = the original source,
// TTL 64, TOS 0xc0), ICMP header, the original IP header and its first 8 payload bytes.
inline constexpr uint32_t kIcmpErrorMaxLen = 20 + 8 + 60 + 8;

// Whether RFC 1122 3.2.2 / RFC 1812 4.3.2.7 allow an error about this packet: not about an
// ICMP error, a non-first fragment, or a packet from 0.0.0.0, a multicast/broadcast or
// loopback address.
bool icmp_error_allowed(const uint8_t* orig, uint32_t len);
// Whether a packet with DF set is larger than mtu (answer with build_frag_needed).
bool needs_frag(const uint8_t* pkt, uint16_t mtu);

// Return the length written into out (0 when not allowed or cap is too small).
uint32_t build_icmp_error(uint8_t* out, uint32_t cap, const uint8_t* orig, uint32_t orig_len,
                          uint8_t type, uint8_t code, uint16_t mtu, uint32_t from);
inline uint32_t build_frag_needed(uint8_t* out, uint32_t cap, const uint8_t* orig,
                                  uint32_t orig_len, uint32_t from, uint16_t mtu) {
  return build_icmp_error(out, cap, orig, orig_len, 3, 4, mtu, from);
}
inline uint32_t build_time_exceeded(uint8_t* out, uint32_t cap, const uint8_t* orig,
                                    uint32_t orig_len, uint32_t from) {
  return build_icmp_error(out, cap, orig, orig_len, 11, 0, 0, from);
}

// IPv4 fragmentation (RFC 791) of a packet with DF clear for a smaller MTU, for the tunnel
// (the LAN's reassembled or 1500-byte datagrams towards a peer behind a 1420-byte tunnel).
// Every fragment but the last carries a multiple of 8 payload bytes; the first keeps all of the
// header's options, the others only those with the copy flag. A packet that is itself a
// fragment is split further: offsets add up and the last piece keeps its MF.
//
// ip_fragment_count: how many fragments of at most `mtu` bytes the packet becomes (1 when it
// fits as it is), 0 when it cannot be split (DF set, malformed, mtu too small).
unsigned ip_fragment_count(const uint8_t* pkt, uint32_t len, uint16_t mtu);
// Writes fragment `i` (0-based, < ip_fragment_count) into out; returns its length, 0 on error.
uint32_t ip_fragment_build(const uint8_t* pkt, uint32_t len, uint16_t mtu, unsigned i, uint8_t* out,
                           uint32_t cap);

// Beyond packet.h's csum_update16/32: an RFC 1624 update for n bytes changed at any offset,
// odd ones included (an MSS option after a lone NOP). `base` is where the checksummed region
// starts; bytes [off, off+n) changed from old_bytes to their present value.
uint16_t csum_update_bytes(uint16_t csum, const uint8_t* base, uint32_t off,
                           const uint8_t* old_bytes, uint32_t n);

}  // namespace sluice::dp
