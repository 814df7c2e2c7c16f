// Stage 1: Ethernet in. Splits a port's RX burst into ARP (answered or learnt here) and IPv4,
// and delivers IPv4 for the gateway's own addresses: ICMP echo and the WireGuard port.
#include <rte_arp.h>

#include "dataplane/dataplane.h"
#include "dataplane/mbuf_meta.h"
#include "dataplane/packet.h"
#include "dataplane/worker.h"

namespace sluice::dp {

void Worker::eth_input(uint16_t port, rte_mbuf** pkts, uint16_t n) {
  rte_mbuf* ip[kMaxBurst];
  uint16_t n_ip = 0;
  const rte_ether_addr* own = reinterpret_cast<const rte_ether_addr*>(dp.ports[port].mac.b);
  for (uint16_t i = 0; i < n; ++i) {
    rte_mbuf* m = pkts[i];
    if (m->nb_segs != 1 || m->data_len < kEthLen) {
      drop(m, Drop::eth_malformed);
      continue;
    }
    auto* eth = at<rte_ether_hdr>(m);
    if (!rte_is_same_ether_addr(&eth->dst_addr, own) && !rte_is_multicast_ether_addr(&eth->dst_addr)) {
      drop(m, Drop::eth_not_for_us);
      continue;
    }
    switch (eth->ether_type) {
      case RTE_BE16(RTE_ETHER_TYPE_IPV4):
        meta(m)->port = port;
        rte_pktmbuf_adj(m, kEthLen);
        ip[n_ip++] = m;
        break;
      case RTE_BE16(RTE_ETHER_TYPE_ARP):
        arp_input(port, m);
        break;
      default:
        drop(m, Drop::eth_unknown_type);
    }
  }
  if (n_ip > 0) ip_input(port, ip, n_ip);
}

void Worker::arp_input(uint16_t port, rte_mbuf* m) {
  const Port& p = dp.ports[port];
  if (m->data_len < kEthLen + sizeof(rte_arp_hdr)) return drop(m, Drop::arp_malformed);
  auto* eth = at<rte_ether_hdr>(m);
  auto* arp = reinterpret_cast<rte_arp_hdr*>(eth + 1);
  if (arp->arp_hardware != RTE_BE16(RTE_ARP_HRD_ETHER) || arp->arp_protocol != RTE_BE16(RTE_ETHER_TYPE_IPV4) ||
      arp->arp_hlen != RTE_ETHER_ADDR_LEN || arp->arp_plen != 4)
    return drop(m, Drop::arp_malformed);

  const uint32_t sender_ip = rte_be_to_cpu_32(arp->arp_data.arp_sip);
  const uint32_t target_ip = rte_be_to_cpu_32(arp->arp_data.arp_tip);
  const bool for_us = target_ip == p.cfg.address;
  const uint16_t op = rte_be_to_cpu_16(arp->arp_opcode);

  // Learn (or refresh) the sender. RFC 826: merge when known; create only when the message
  // was meant for us. Gratuitous ARP (sender == target) refreshes existing entries.
  if (sender_ip != 0 && sender_ip != p.cfg.address) {
    CpEvent e{};
    e.type = for_us ? CpEvent::neigh_learn_create : CpEvent::neigh_learn;
    e.port = uint8_t(port);
    memcpy(e.mac, arp->arp_data.arp_sha.addr_bytes, 6);
    e.ip = sender_ip;
    const NeighEntry* known = dp.neigh.lookup(port, sender_ip);
    // Skip the event when the entry already says exactly this and is not being resolved.
    bool same = false;
    if (known != nullptr) {
      uint64_t v = known->mac.load(std::memory_order_relaxed);
      MacAddr mac;
      memcpy(mac.b, e.mac, 6);
      same = known->valid(v) && v == pack_mac(mac) && op == RTE_ARP_OP_REQUEST;
    }
    if (!same && (for_us || known != nullptr)) event(e);
  }

  if (op != RTE_ARP_OP_REQUEST || !for_us) {
    // Replies are consumed by the learning above; requests for others are not ours to answer.
    if (op == RTE_ARP_OP_REQUEST) return drop(m, Drop::arp_not_for_us);
    rte_pktmbuf_free(m);
    return;
  }

  // Answer in place.
  arp->arp_opcode = RTE_BE16(RTE_ARP_OP_REPLY);
  arp->arp_data.arp_tha = arp->arp_data.arp_sha;
  arp->arp_data.arp_tip = arp->arp_data.arp_sip;
  memcpy(arp->arp_data.arp_sha.addr_bytes, p.mac.b, 6);
  arp->arp_data.arp_sip = rte_cpu_to_be_32(p.cfg.address);
  eth->dst_addr = arp->arp_data.arp_tha;
  memcpy(eth->src_addr.addr_bytes, p.mac.b, 6);
  tx_stage(port, m);
}

void Worker::ip_input(uint16_t port, rte_mbuf** pkts, uint16_t n) {
  rte_mbuf* wg[kMaxBurst];
  uint16_t n_wg = 0;
  rte_mbuf* nat[kMaxBurst];
  uint16_t n_nat = 0;
  const Port& rx_port = dp.ports[port];
  for (uint16_t i = 0; i < n; ++i) {
    rte_mbuf* m = pkts[i];
    auto* ip = at<rte_ipv4_hdr>(m);
    uint16_t tl = ip_check(ip, m->data_len);
    if (tl == 0) {
      // A datagram the kernel reassembled for an AF_PACKET fanout group arrives cut to the
      // ring's frame size: say so, rather than "malformed".
      const bool cut = m->data_len >= kIpLen && (ip->version_ihl >> 4) == 4 &&
                       rte_be_to_cpu_16(ip->total_length) > m->data_len;
      drop(m, cut ? Drop::ip_truncated : Drop::ip_malformed);
      continue;
    }
    uint16_t hl = ip_hdr_len(ip);
    if (rte_raw_cksum(ip, hl) != 0xffff) {
      drop(m, Drop::ip_bad_checksum);
      continue;
    }
    // Ethernet pads short frames: from here on the mbuf is exactly the IP packet.
    rte_pktmbuf_trim(m, uint16_t(m->data_len - tl));

    const uint32_t dst = ip_dst(ip);
    bool local = false;
    for (const Port& p : dp.ports) local |= dst == p.cfg.address;
    if (!local) {
      drop(m, Drop::ip_not_for_us);
      continue;
    }
    if (ip_is_fragment(ip)) {
      // Fragments of replies to peers' flows continue to NAT, which matches the later ones to
      // their first. The tunnel port takes none: WireGuard keeps its packets whole.
      const bool first = (ip->fragment_offset & RTE_BE16(RTE_IPV4_HDR_OFFSET_MASK)) == 0;
      const auto* udp = reinterpret_cast<const rte_udp_hdr*>(reinterpret_cast<uint8_t*>(ip) + hl);
      const bool tunnel = ip->next_proto_id == IPPROTO_UDP && first && tl >= hl + kUdpLen &&
                          rte_be_to_cpu_16(udp->dst_port) == dp.settings.listen_port &&
                          rx_port.cfg.role == PortRole::underlay && dst == rx_port.cfg.address;
      const bool flow = ip->next_proto_id == IPPROTO_UDP || ip->next_proto_id == IPPROTO_TCP ||
                        ip->next_proto_id == IPPROTO_ICMP;
      if (tunnel || !flow) {
        drop(m, Drop::ip_fragment);
        continue;
      }
      nat[n_nat++] = m;
      continue;
    }

    if (ip->next_proto_id == IPPROTO_UDP) {
      if (tl < hl + kUdpLen) {
        drop(m, Drop::udp_malformed);
        continue;
      }
      auto* udp = reinterpret_cast<rte_udp_hdr*>(reinterpret_cast<uint8_t*>(ip) + hl);
      uint16_t ulen = rte_be_to_cpu_16(udp->dgram_len);
      if (ulen < kUdpLen || ulen > tl - hl) {
        drop(m, Drop::udp_malformed);
        continue;
      }
      if (rte_be_to_cpu_16(udp->dst_port) != dp.settings.listen_port || rx_port.cfg.role != PortRole::underlay ||
          dst != rx_port.cfg.address) {
        nat[n_nat++] = m;  // a reply to a peer's flow, or nothing of ours
        continue;
      }
      PktMeta* md = meta(m);
      md->src_addr = ip_src(ip);
      md->src_port = rte_be_to_cpu_16(udp->src_port);
      md->port = port;
      rte_pktmbuf_adj(m, uint16_t(hl + kUdpLen));
      rte_pktmbuf_trim(m, uint16_t(m->data_len - (ulen - kUdpLen)));
      wg[n_wg++] = m;
      continue;
    }

    if (ip->next_proto_id == IPPROTO_ICMP && tl >= hl + sizeof(rte_icmp_hdr)) {
      auto* icmp = reinterpret_cast<rte_icmp_hdr*>(reinterpret_cast<uint8_t*>(ip) + hl);
      if (icmp->icmp_type == RTE_IP_ICMP_ECHO_REQUEST && icmp->icmp_code == 0) {
        icmp_echo_to_reply(ip, icmp);
        meta(m)->nexthop = 0;
        ip_output(&m, 1);
        continue;
      }
      nat[n_nat++] = m;  // echo replies and errors for peers' flows
      continue;
    }
    if (ip->next_proto_id == IPPROTO_TCP) {
      nat[n_nat++] = m;
      continue;
    }
    drop(m, Drop::ip_proto_unhandled);
  }
  if (n_wg > 0) wg_input(wg, n_wg);
  if (n_nat > 0) nat_input(nat, n_nat);
}

}  // namespace sluice::dp
