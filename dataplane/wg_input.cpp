// Stage 2: tunnel decrypt. Handshake messages go to the control thread; transport messages
// are decrypted in two passes over the burst, as VPP and boringtun do: first the keypair
// lookup (bulk) and the cheap replay pre-check, then the AEAD work, then marking the replay
// window, roaming and statistics for the packets that authenticated.
#include <rte_cycles.h>

#include "dataplane/dataplane.h"
#include "dataplane/mbuf_meta.h"
#include "dataplane/packet.h"
#include "dataplane/wg/transport.h"
#include "dataplane/worker.h"

namespace sluice::dp {

void Worker::wg_input(rte_mbuf** pkts, uint16_t n) {
  rte_mbuf* tp[kMaxBurst];
  uint32_t idx[kMaxBurst];
  uint64_t ctr[kMaxBurst];
  uint16_t n_tp = 0;

  for (uint16_t i = 0; i < n; ++i) {
    rte_mbuf* m = pkts[i];
    const uint8_t* msg = at<uint8_t>(m);
    const uint32_t len = m->data_len;
    if (len < 4) {
      drop(m, Drop::wg_malformed);
      continue;
    }
    switch (wg::message_type(msg)) {
      case wg::MessageType::initiation:
      case wg::MessageType::response:
      case wg::MessageType::cookie_reply: {
        const auto t = wg::message_type(msg);
        const size_t want = t == wg::MessageType::initiation ? wg::kInitiationLen
                            : t == wg::MessageType::response ? wg::kResponseLen
                                                             : wg::kCookieReplyLen;
        if (len != want) {
          drop(m, Drop::wg_malformed);
          continue;
        }
        meta(m)->cp_kind = CpKind::handshake;
        handshakes_to_cp.add();
        to_control(m, Drop::handshake_queue_full);
        continue;
      }
      case wg::MessageType::transport:
        if (wg::transport_parse(msg, len, &idx[n_tp], &ctr[n_tp])) {
          tp[n_tp++] = m;
          continue;
        }
        break;
    }
    drop(m, Drop::wg_malformed);
  }
  if (n_tp == 0) return;

  // Pass 1: keypairs, ownership, expiry, replay pre-check.
  Keypair* kps[kMaxBurst];
  dp.peers.keypairs_by_index(idx, n_tp, kps);
  const uint64_t reject_after = uint64_t(wg::kRejectAfterTime) * dp.tsc_hz;
  wg::OpenOp ops[kMaxBurst];
  rte_mbuf* op_pkt[kMaxBurst];
  Keypair* op_kp[kMaxBurst];
  uint64_t op_ctr[kMaxBurst];
  unsigned n_ops = 0;
  for (uint16_t i = 0; i < n_tp; ++i) {
    rte_mbuf* m = tp[i];
    Keypair* kp = kps[i];
    if (kp == nullptr) {
      drop(m, Drop::wg_unknown_index);
      continue;
    }
    const PeerSlot& ps = dp.peers.slot(kp->peer);
    if (!ps.active.load(std::memory_order_acquire)) {  // removed; its keypair awaits its grace period
      drop(m, Drop::peer_removed);
      continue;
    }
    const unsigned owner = ps.owner.load(std::memory_order_relaxed);
    if (owner != index) {
      meta(m)->stage = Stage::wg_input;
      hand_off(owner, m);
      continue;
    }
    if (now_tsc - kp->birth_tsc >= reject_after) {
      drop(m, Drop::wg_keypair_expired);
      continue;
    }
    if (!kp->replay.check(ctr[i])) {
      drop(m, Drop::wg_replay);
      continue;
    }
    uint8_t* msg = at<uint8_t>(m);
    ops[n_ops] = wg::OpenOp{kp->recv_key, msg, m->data_len, msg + wg::kTransportHeaderLen, -1};
    op_pkt[n_ops] = m;
    op_kp[n_ops] = kp;
    op_ctr[n_ops] = ctr[i];
    ++n_ops;
  }
  if (n_ops == 0) return;

  // Pass 2: the AEAD work, in place.
  wg::transport_open_burst(aead, ops, n_ops);

  // Pass 3: commit what authenticated.
  rte_mbuf* fwd[kMaxBurst];
  uint16_t n_fwd = 0;
  const uint64_t rekey_on_receive =
      uint64_t(wg::kRejectAfterTime - wg::kKeepaliveTimeout - wg::kRekeyTimeout) * dp.tsc_hz;
  for (unsigned i = 0; i < n_ops; ++i) {
    rte_mbuf* m = op_pkt[i];
    Keypair* kp = op_kp[i];
    if (ops[i].plain_len < 0) {
      drop(m, Drop::wg_decrypt_failed);
      continue;
    }
    if (!kp->replay.mark(op_ctr[i])) {
      drop(m, Drop::wg_replay);
      continue;
    }
    PeerSlot& slot = dp.peers.slot(kp->peer);
    const PktMeta* md = meta(m);
    const uint64_t ep = pack_endpoint(md->src_addr, md->src_port);
    if (slot.endpoint.load(std::memory_order_relaxed) != ep) slot.endpoint.store(ep, std::memory_order_relaxed);
    slot.rx_packets.add();
    slot.rx_bytes.add(m->data_len);
    slot.last_rx_tsc.set(now_tsc);

    if (!kp->received_data.load(std::memory_order_relaxed)) {
      // First packet on this keypair: for a responder this confirms the handshake.
      kp->received_data.store(true, std::memory_order_release);
      if (!kp->initiator) {
        CpEvent e{};
        e.type = CpEvent::keypair_confirmed;
        e.ip = kp->local_index;
        e.peer = kp->peer;
        event(e);
      }
    }
    if (kp->initiator && !kp->rekey_requested && now_tsc - kp->birth_tsc >= rekey_on_receive) {
      kp->rekey_requested = true;
      CpEvent e{};
      e.type = CpEvent::want_handshake;
      e.peer = kp->peer;
      event(e);
    }

    const auto plain_len = uint32_t(ops[i].plain_len);
    if (plain_len == 0) {
      keepalives_rx.add();
      rte_pktmbuf_free(m);
      continue;
    }
    slot.last_rx_data_tsc.set(now_tsc);
    rte_pktmbuf_adj(m, wg::kTransportHeaderLen);
    rte_pktmbuf_trim(m, uint16_t(m->data_len - plain_len));
    auto* ip = at<rte_ipv4_hdr>(m);
    uint16_t tl = ip_check(ip, plain_len);
    if (tl == 0) {
      drop(m, Drop::wg_inner_malformed);
      continue;
    }
    rte_pktmbuf_trim(m, uint16_t(plain_len - tl));  // the zero padding
    // Cryptokey routing: a peer may only send from its own virtual address.
    if (ip_src(ip) != slot.virtual_address.load(std::memory_order_relaxed)) {
      slot.inner_source_drops.add();
      drop(m, Drop::wg_inner_source);
      continue;
    }
    if (ip_dst(ip) == dp.settings.virtual_address) {
      tunnel_local(kp->peer, m);
      continue;
    }
    meta(m)->peer = kp->peer;
    fwd[n_fwd++] = m;
  }
  if (n_fwd > 0) forward(fwd, n_fwd);
}

}  // namespace sluice::dp
