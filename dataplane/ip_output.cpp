// Stage: IPv4 out. Route lookup (rte_lpm over the ports' connected prefixes and the default
// route), fragments for the port's MTU, next-hop resolution through the neighbour table,
// Ethernet header, TX staging. Unresolved next hops go to the control thread, which holds the
// packet while it ARPs.
#include "dataplane/dataplane.h"
#include "dataplane/mbuf_meta.h"
#include "dataplane/packet.h"
#include "dataplane/worker.h"

namespace sluice::dp {

void Worker::ip_output(rte_mbuf** pkts, uint16_t n) {
  const RouteTable* rt = dp.routes.load(std::memory_order_acquire);
  for (uint16_t i = 0; i < n; ++i) {
    rte_mbuf* m = pkts[i];
    auto* ip = at<rte_ipv4_hdr>(m);
    PktMeta* md = meta(m);
    uint16_t out;
    uint32_t nh;
    if (md->nexthop != 0) {
      // Forwarded traffic: the policy's route chose port and next hop already.
      out = md->port;
      nh = md->nexthop;
    } else {
      const uint32_t dst = ip_dst(ip);
      uint32_t hop_id = 0;
      if (rt == nullptr || rte_lpm_lookup(rt->lpm, dst, &hop_id) != 0) {
        drop(m, Drop::no_route);
        continue;
      }
      const NextHop& hop = rt->hops[hop_id];
      out = hop.port;
      nh = hop.gateway != 0 ? hop.gateway : dst;
    }
    const Port& port = dp.ports[out];
    if (m->data_len > port.l3_mtu) {
      // Larger than the port's MTU with DF clear (forward answered DF ones with frag-needed;
      // tunnel packets leave without DF, as the kernel sends them): in fragments.
      rte_mbuf* pieces[kMaxBurst];
      const unsigned nf = fragment(m, port.l3_mtu, pieces, kMaxBurst);
      if (nf == 0) {
        drop(m, Drop::wg_too_big);
        continue;
      }
      for (unsigned f = 0; f < nf; ++f) {
        meta(pieces[f])->port = out;
        meta(pieces[f])->nexthop = nh;
        ip_output(&pieces[f], 1);
      }
      continue;
    }
    const NeighEntry* e = dp.neigh.lookup(out, nh);
    const uint64_t mac = e != nullptr ? e->mac.load(std::memory_order_acquire) : 0;
    if (e == nullptr || !e->valid(mac)) {
      md->cp_kind = CpKind::neigh_wait;
      md->port = out;
      md->nexthop = nh;
      to_control(m, Drop::control_queue_full);
      continue;
    }
    dp.neigh.touch(e, now_tsc);
    auto* eth = reinterpret_cast<rte_ether_hdr*>(rte_pktmbuf_prepend(m, kEthLen));
    if (eth == nullptr) {
      drop(m, Drop::wg_too_big);
      continue;
    }
    const MacAddr dmac = unpack_mac(mac);
    memcpy(eth->dst_addr.addr_bytes, dmac.b, 6);
    memcpy(eth->src_addr.addr_bytes, port.mac.b, 6);
    eth->ether_type = RTE_BE16(RTE_ETHER_TYPE_IPV4);
    tx_stage(out, m);
  }
}

}  // namespace sluice::dp
