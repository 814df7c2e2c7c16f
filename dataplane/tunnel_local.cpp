// Inner packets addressed to the gateway's own virtual address: what the gateway itself
// serves inside the tunnel. Today ICMP echo; DNS joins here later.
#include "dataplane/dataplane.h"
#include "dataplane/packet.h"
#include "dataplane/worker.h"

namespace sluice::dp {

void Worker::tunnel_local(uint32_t peer, rte_mbuf* m) {
  auto* ip = at<rte_ipv4_hdr>(m);
  const uint16_t hl = ip_hdr_len(ip);
  const uint16_t tl = uint16_t(m->data_len);
  if (ip_is_fragment(ip)) return drop(m, Drop::ip_fragment);
  if (rte_raw_cksum(ip, hl) != 0xffff) return drop(m, Drop::ip_bad_checksum);
  if (ip->next_proto_id == IPPROTO_ICMP && tl >= hl + sizeof(rte_icmp_hdr)) {
    auto* icmp = reinterpret_cast<rte_icmp_hdr*>(reinterpret_cast<uint8_t*>(ip) + hl);
    if (icmp->icmp_type == RTE_IP_ICMP_ECHO_REQUEST && icmp->icmp_code == 0) {
      icmp_echo_to_reply(ip, icmp);
      wg_output(peer, &m, 1);
      return;
    }
    return drop(m, Drop::icmp_unhandled);
  }
  drop(m, Drop::ip_proto_unhandled);
}

}  // namespace sluice::dp
