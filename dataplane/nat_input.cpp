// Stage (LAN/Internet -> peer): the return path. Packets to a SNAT address belong to the worker
// whose slice holds the destination port (it created the connection, and owns the peer); they are
// handed over when they landed elsewhere. Only packets of a known connection pass: LAN devices
// never open connections to peers. The translated packet goes to wg_output for the peer.
#include "controlplane/policy/compiled.h"
#include "dataplane/dataplane.h"
#include "dataplane/mbuf_meta.h"
#include "dataplane/nat.h"
#include "dataplane/packet.h"
#include "dataplane/worker.h"

namespace sluice::dp {

namespace {

// Whether the connection's verdict still holds under the current policy; re-classifies a
// verdict from an older generation (one packet at a time: rare, right after a change).
bool still_allowed(const policy::CompiledPolicy* pol, Conn& c, const RuleHits& hits, unsigned worker) {
  if (pol == nullptr) return false;
  const auto gen = uint32_t(pol->generation());
  if (c.policy_gen == gen) return c.verdict == Verdict::allow;
  const policy::FlowKey k = pol->flow_key(c.peer, c.dst, c.proto, c.dport);
  policy::Verdict v;
  pol->classify(&k, 1, &v);
  hits.row(worker, pol->generation()).hit(v.policy, v.rule);
  c.verdict = v.allow ? Verdict::allow : Verdict::deny;
  c.policy_gen = gen;
  c.policy_id = v.policy;
  c.rule_id = v.rule;
  return v.allow;
}

// Whether the connection's peer is still the one that opened it: a removed peer's slot is
// inactive, and a slot taken by a peer with another address no longer matches the
// connection's source. Such a connection ends on its next packet.
bool peer_gone(const PeerTable& peers, const Conn& c) {
  const PeerSlot& s = peers.slot(c.peer);
  return !s.active.load(std::memory_order_acquire) || s.virtual_address.load(std::memory_order_relaxed) != c.src;
}

}  // namespace

void Worker::nat_input(rte_mbuf** pkts, uint16_t n, bool handed) {
  const policy::CompiledPolicy* pol = dp.policy.load(std::memory_order_acquire);
  const unsigned n_workers = dp.settings.workers;
  for (uint16_t i = 0; i < n; ++i) {
    rte_mbuf* m = pkts[i];
    uint8_t* p = at<uint8_t>(m);
    FlowKey key;
    uint8_t flags = 0;
    IcmpError err;
    bool is_error = false;
    switch (parse_flow(p, m->data_len, &key, &flags)) {
      case FlowParse::ok:
        break;
      case FlowParse::icmp_error:
        if (!parse_icmp_error(p, m->data_len, &err)) {
          drop(m, Drop::nat_malformed);
          continue;
        }
        key = err.lookup_key();
        is_error = true;
        break;
      case FlowParse::fragment: {
        // A fragment after the first: its first fragment made the decision, on this worker
        // (frags_in) or on the owner this worker handed it to (frags_steer). There is no
        // reassembly: a fragment that overtook its first one is dropped.
        const FragKey fk = frag_key(p);
        uint32_t idx;
        if (frags_in.find(fk, now_tsc, &idx)) {
          Conn& c = ct.at(idx);
          if (c.state == ConnState::none || c.dst != fk.src || c.snat_addr != fk.dst || c.proto != fk.proto) {
            drop(m, Drop::frag_no_first);
            continue;
          }
          if (peer_gone(dp.peers, c)) {
            drop(m, Drop::peer_removed);
            continue;
          }
          if (!still_allowed(pol, c, dp.rule_hits, index) || !ip_ttl_decrement(p)) {
            drop(m, Drop::frag_no_first);
            continue;
          }
          unsnat_in(p, m->data_len, c.src, c.sport);
          wg_output(c.peer, &m, 1);
          continue;
        }
        uint32_t owner;
        if (!handed && frags_steer.find(fk, now_tsc, &owner) && owner != index && owner < n_workers) {
          meta(m)->stage = Stage::nat_input;
          hand_off(owner, m);
          continue;
        }
        drop(m, Drop::frag_no_first);
        continue;
      }
      case FlowParse::unsupported:
        drop(m, Drop::ip_proto_unhandled);
        continue;
      case FlowParse::malformed:
        drop(m, Drop::nat_malformed);
        continue;
    }

    const unsigned owner = ConnTable::owner_worker(key.dport, n_workers);
    if (owner >= n_workers) {  // below the NAT port range: no service of ours there
      drop(m, is_error ? Drop::icmp_error_no_conn : Drop::no_listener);
      continue;
    }
    if (owner != index) {
      // Later fragments carry no port: remember where their first one went.
      if (!is_error && is_first_fragment(p)) frags_steer.remember(frag_key(p), owner, now_tsc);
      meta(m)->stage = Stage::nat_input;
      hand_off(owner, m);
      continue;
    }
    Conn* c = ct.lookup(key, FlowDir::reply);
    if (c == nullptr) {
      drop(m, is_error ? Drop::icmp_error_no_conn : Drop::ct_no_conn);
      continue;
    }
    if (peer_gone(dp.peers, *c)) {
      ct.erase(*c);
      drop(m, Drop::peer_removed);
      continue;
    }
    if (!still_allowed(pol, *c, dp.rule_hits, index)) {
      ct.erase(*c);
      drop(m, Drop::policy_deny);
      continue;
    }
    if (is_error) {
      if (!ip_ttl_decrement(p) || !translate_icmp_error(p, m->data_len, err, FlowDir::reply, c->src, c->sport)) {
        drop(m, Drop::nat_malformed);
        continue;
      }
      wg_output(c->peer, &m, 1);
      continue;
    }
    // Larger than the tunnel with DF set: the sender learns the path MTU (RFC 1191). Without
    // DF, wg_output fragments it.
    if (needs_frag(p, dp.settings.mtu)) {
      icmp_error_to_sender(m, 3, 4, dp.settings.mtu);
      drop(m, Drop::frag_needed);
      continue;
    }
    if (!ct.track(*c, FlowDir::reply, flags, now_tsc)) {
      drop(m, Drop::ct_invalid);
      continue;
    }
    if (!ip_ttl_decrement(p)) {
      drop(m, Drop::ip_ttl_exceeded);
      continue;
    }
    if (key.proto == IPPROTO_TCP) tcp_clamp_mss(p, m->data_len, uint16_t(dp.settings.mtu - 40));
    if (is_first_fragment(p)) frags_in.remember(frag_key(p), ct.index_of(*c), now_tsc);
    unsnat_in(p, m->data_len, c->src, c->sport);
    wg_output(c->peer, &m, 1);
  }
}

}  // namespace sluice::dp
