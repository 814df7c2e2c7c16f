// Header access and checksum arithmetic shared by the stages.
#pragma once

#include <rte_byteorder.h>
#include <rte_ether.h>
#include <rte_icmp.h>
#include <rte_ip.h>
#include <rte_mbuf.h>
#include <rte_udp.h>

#include <cstdint>

namespace sluice::dp {

inline constexpr uint16_t kEthLen = sizeof(rte_ether_hdr);
inline constexpr uint16_t kIpLen = sizeof(rte_ipv4_hdr);
inline constexpr uint16_t kUdpLen = sizeof(rte_udp_hdr);

template <typename T>
inline T* at(rte_mbuf* m, uint32_t off = 0) {
  return rte_pktmbuf_mtod_offset(m, T*, off);
}

inline uint32_t ip_src(const rte_ipv4_hdr* ip) { return rte_be_to_cpu_32(ip->src_addr); }
inline uint32_t ip_dst(const rte_ipv4_hdr* ip) { return rte_be_to_cpu_32(ip->dst_addr); }
inline uint16_t ip_hdr_len(const rte_ipv4_hdr* ip) { return uint16_t((ip->version_ihl & 0xf) * 4); }
inline bool ip_is_fragment(const rte_ipv4_hdr* ip) {
  return (ip->fragment_offset & rte_cpu_to_be_16(RTE_IPV4_HDR_MF_FLAG | RTE_IPV4_HDR_OFFSET_MASK)) != 0;
}

// Validates an IPv4 header at the start of `len` bytes: version, header length, total length.
// Returns the total length, or 0 when malformed. Does not verify the checksum.
inline uint16_t ip_check(const rte_ipv4_hdr* ip, uint32_t len) {
  if (len < kIpLen || (ip->version_ihl >> 4) != 4) return 0;
  uint16_t hl = ip_hdr_len(ip);
  uint16_t tl = rte_be_to_cpu_16(ip->total_length);
  if (hl < kIpLen || tl < hl || tl > len) return 0;
  return tl;
}

// RFC 1624 eqn. 3: HC' = ~(~HC + ~m + m'), for one 16-bit word changing from m to m'
// (all in network order). Used wherever a single field changes so a packet is never re-summed.
inline uint16_t csum_update16(uint16_t csum, uint16_t old_word, uint16_t new_word) {
  uint32_t s = uint16_t(~csum) + uint32_t(uint16_t(~old_word)) + new_word;
  s = (s & 0xffff) + (s >> 16);
  s = (s & 0xffff) + (s >> 16);
  return uint16_t(~s);
}

inline uint16_t csum_update32(uint16_t csum, uint32_t old_val, uint32_t new_val) {
  csum = csum_update16(csum, uint16_t(old_val >> 16), uint16_t(new_val >> 16));
  return csum_update16(csum, uint16_t(old_val), uint16_t(new_val));
}

inline void ip_set_checksum(rte_ipv4_hdr* ip) {
  ip->hdr_checksum = 0;
  ip->hdr_checksum = rte_ipv4_cksum(ip);
}

// Turns an ICMP echo request (IP header at ip) into its reply in place: addresses swapped,
// type 0, checksums updated incrementally, TTL reset.
inline void icmp_echo_to_reply(rte_ipv4_hdr* ip, rte_icmp_hdr* icmp) {
  uint32_t a = ip->src_addr;
  ip->src_addr = ip->dst_addr;
  ip->dst_addr = a;
  ip->time_to_live = 64;
  ip_set_checksum(ip);
  uint16_t old_word = rte_cpu_to_be_16(uint16_t(icmp->icmp_type) << 8 | icmp->icmp_code);
  icmp->icmp_type = RTE_IP_ICMP_ECHO_REPLY;
  uint16_t new_word = rte_cpu_to_be_16(uint16_t(icmp->icmp_type) << 8 | icmp->icmp_code);
  icmp->icmp_cksum = csum_update16(icmp->icmp_cksum, old_word, new_word);
}

// Writes a UDP/IPv4 header in front of `payload_len` bytes already at data_off.
inline rte_ipv4_hdr* push_udp_ip(rte_mbuf* m, uint32_t src, uint16_t sport, uint32_t dst,
                                 uint16_t dport, uint16_t payload_len) {
  auto* ip = reinterpret_cast<rte_ipv4_hdr*>(rte_pktmbuf_prepend(m, kIpLen + kUdpLen));
  if (ip == nullptr) return nullptr;
  auto* udp = reinterpret_cast<rte_udp_hdr*>(ip + 1);
  ip->version_ihl = RTE_IPV4_VHL_DEF;
  ip->type_of_service = 0;
  ip->total_length = rte_cpu_to_be_16(uint16_t(kIpLen + kUdpLen + payload_len));
  ip->packet_id = 0;
  ip->fragment_offset = 0;  // outer packets may be fragmented on the underlay, as the kernel does
  ip->time_to_live = 64;
  ip->next_proto_id = IPPROTO_UDP;
  ip->src_addr = rte_cpu_to_be_32(src);
  ip->dst_addr = rte_cpu_to_be_32(dst);
  ip_set_checksum(ip);
  udp->src_port = rte_cpu_to_be_16(sport);
  udp->dst_port = rte_cpu_to_be_16(dport);
  udp->dgram_len = rte_cpu_to_be_16(uint16_t(kUdpLen + payload_len));
  udp->dgram_cksum = 0;
  udp->dgram_cksum = rte_ipv4_udptcp_cksum(ip, udp);
  return ip;
}

}  // namespace sluice::dp
