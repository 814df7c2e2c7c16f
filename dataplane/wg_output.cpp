// Stage: tunnel encrypt. Picks the peer's sending keypair, seals the inner packet in place
// (header in the headroom, padding and tag in the tailroom), and wraps it in UDP/IPv4 to the
// peer's endpoint. Packets with no usable keypair wait on the control thread, which starts
// a handshake, as WireGuard stages them.
#include <algorithm>

#include "dataplane/dataplane.h"
#include "dataplane/mbuf_meta.h"
#include "dataplane/nat.h"
#include "dataplane/packet.h"
#include "dataplane/wg/transport.h"
#include "dataplane/worker.h"

namespace sluice::dp {

namespace {

// The keypair to send with, or nullptr. A responder keypair becomes usable once the
// initiator's first data message arrived on it (whitepaper 5.4.7); the worker may see that
// before the control thread rotated it into `current`.
Keypair* sending_keypair(PeerSlot& slot) {
  Keypair* next = slot.next.load(std::memory_order_acquire);
  if (next != nullptr && next->received_data.load(std::memory_order_acquire)) return next;
  return slot.current.load(std::memory_order_acquire);
}

}  // namespace

unsigned Worker::fragment(rte_mbuf* m, uint16_t mtu, rte_mbuf** out, unsigned max) {
  const uint8_t* pkt = at<uint8_t>(m);
  const unsigned n = ip_fragment_count(pkt, m->data_len, mtu);
  if (n < 2 || n > max) return 0;
  if (rte_pktmbuf_alloc_bulk(dp.pool, out, n) != 0) return 0;
  for (unsigned i = 0; i < n; ++i) {
    const uint16_t room = uint16_t(std::min<uint32_t>(rte_pktmbuf_tailroom(out[i]), mtu));
    auto* buf = reinterpret_cast<uint8_t*>(rte_pktmbuf_append(out[i], room));
    const uint32_t len = buf == nullptr ? 0 : ip_fragment_build(pkt, m->data_len, mtu, i, buf, room);
    if (len == 0) {
      for (unsigned j = 0; j < n; ++j) rte_pktmbuf_free(out[j]);
      return 0;
    }
    rte_pktmbuf_trim(out[i], uint16_t(room - len));
  }
  fragments_out.add(n);
  rte_pktmbuf_free(m);
  return n;
}

void Worker::wg_output(uint32_t peer, rte_mbuf** pkts, uint16_t n) {
  PeerSlot& slot = dp.peers.slot(peer);
  const unsigned owner = slot.owner.load(std::memory_order_relaxed);
  const uint64_t reject_after = uint64_t(wg::kRejectAfterTime) * dp.tsc_hz;
  const uint64_t rekey_after = uint64_t(wg::kRekeyAfterTime) * dp.tsc_hz;
  const uint16_t mtu = dp.settings.mtu;
  const Port& under = dp.ports[dp.underlay];

  // A removed peer (see the control thread's remove_peer): packets still under way for it end here.
  const bool active = slot.active.load(std::memory_order_acquire);
  for (uint16_t i = 0; i < n; ++i) {
    rte_mbuf* m = pkts[i];
    if (!active) {
      drop(m, Drop::peer_removed);
      continue;
    }
    if (owner != index) {
      PktMeta* md = meta(m);
      md->stage = Stage::wg_output;
      md->peer = peer;
      hand_off(owner, m);
      continue;
    }
    const uint16_t len = uint16_t(m->data_len);
    if (len > mtu) {
      // A datagram from the LAN larger than the tunnel (DF clear; nat_input answered DF ones):
      // fragments of it, each sealed on its own, as a router in the path would.
      rte_mbuf* frags[kMaxBurst];
      const unsigned nfrag = fragment(m, mtu, frags, kMaxBurst);
      if (nfrag == 0) {
        drop(m, Drop::wg_too_big);
        continue;
      }
      wg_output(peer, frags, uint16_t(nfrag));
      continue;
    }
    Keypair* kp = sending_keypair(slot);
    if (kp == nullptr || now_tsc - kp->birth_tsc >= reject_after ||
        kp->send_counter >= wg::kRejectAfterMessages) {
      PktMeta* md = meta(m);
      md->cp_kind = CpKind::peer_wait;
      md->peer = peer;
      to_control(m, Drop::wg_no_keypair);
      continue;
    }
    const uint64_t ep = slot.endpoint.load(std::memory_order_relaxed);
    if (ep == 0) {
      drop(m, Drop::wg_no_endpoint);
      continue;
    }
    const size_t padded = wg::padded_len(len, mtu);
    const size_t room_after = padded - len + wg::kTagLen;
    constexpr size_t kRoomBefore = wg::kTransportHeaderLen + kIpLen + kUdpLen + kEthLen;
    if (rte_pktmbuf_tailroom(m) < room_after || rte_pktmbuf_headroom(m) < kRoomBefore) {
      drop(m, Drop::wg_too_big);
      continue;
    }
    uint8_t* plain = at<uint8_t>(m);
    rte_pktmbuf_append(m, uint16_t(room_after));
    uint8_t* out = reinterpret_cast<uint8_t*>(rte_pktmbuf_prepend(m, wg::kTransportHeaderLen));
    const uint64_t counter = kp->send_counter++;
    const size_t wire = wg::transport_seal(aead, kp->send_key, kp->remote_index, counter, plain, len, mtu, out);
    if (wire != m->data_len) {
      drop(m, Drop::wg_too_big);
      continue;
    }
    slot.tx_packets.add();
    slot.tx_bytes.add(wire);
    slot.last_tx_tsc.set(now_tsc);
    if (len > 0) slot.last_tx_data_tsc.set(now_tsc);

    // Keep the session fresh (whitepaper 6.2): the initiator rekeys after REKEY_AFTER_TIME or
    // REKEY_AFTER_MESSAGES, asking the control thread once per keypair.
    if (kp->initiator && !kp->rekey_requested &&
        (counter >= wg::kRekeyAfterMessages || now_tsc - kp->birth_tsc >= rekey_after)) {
      kp->rekey_requested = true;
      CpEvent e{};
      e.type = CpEvent::want_handshake;
      e.peer = peer;
      event(e);
    }

    if (push_udp_ip(m, under.cfg.address, dp.settings.listen_port, endpoint_addr(ep), endpoint_port(ep),
                    uint16_t(wire)) == nullptr) {
      drop(m, Drop::wg_too_big);
      continue;
    }
    meta(m)->nexthop = 0;
    ip_output(&m, 1);
  }
}

}  // namespace sluice::dp
