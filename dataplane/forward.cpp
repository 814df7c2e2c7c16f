// Stage 3 (peer -> LAN/Internet): classify and SNAT. Decrypted inner packets of this worker's
// peers are matched against its connection table in bulk; a flow's first packet, and every
// packet of a flow whose cached verdict is from an older policy generation, are classified
// with one rte_acl_classify for the whole burst. Allowed packets get TTL, MSS and SNAT and go
// to ip_output with the next hop chosen by the policy's routes.
#include "controlplane/policy/compiled.h"
#include "dataplane/dataplane.h"
#include "dataplane/mbuf_meta.h"
#include "dataplane/nat.h"
#include "dataplane/packet.h"
#include "dataplane/worker.h"

namespace sluice::dp {

namespace {

// An ICMP error about `orig` from `from`, in a new mbuf (nullptr when none may or can be sent).
rte_mbuf* make_icmp_error(rte_mempool* pool, rte_mbuf* orig, uint8_t type, uint8_t code, uint16_t mtu,
                          uint32_t from) {
  const uint8_t* pkt = at<uint8_t>(orig);
  if (!icmp_error_allowed(pkt, orig->data_len)) return nullptr;
  rte_mbuf* m = rte_pktmbuf_alloc(pool);
  if (m == nullptr) return nullptr;
  auto* out = reinterpret_cast<uint8_t*>(rte_pktmbuf_append(m, uint16_t(kIcmpErrorMaxLen)));
  const uint32_t n = out == nullptr ? 0 : build_icmp_error(out, kIcmpErrorMaxLen, pkt, orig->data_len, type, code, mtu, from);
  if (n == 0) {
    rte_pktmbuf_free(m);
    return nullptr;
  }
  rte_pktmbuf_trim(m, uint16_t(kIcmpErrorMaxLen - n));
  return m;
}

}  // namespace

// An ICMP error from the gateway's virtual address to the peer that sent `orig`, through the
// tunnel. The original packet is left to the caller.
void Worker::icmp_error_to_peer(uint32_t peer, rte_mbuf* orig, uint8_t type, uint8_t code, uint16_t mtu) {
  rte_mbuf* m = make_icmp_error(dp.pool, orig, type, code, mtu, dp.settings.virtual_address);
  if (m == nullptr) return;
  icmp_errors_sent.add();
  wg_output(peer, &m, 1);
}

// An ICMP error to the host that sent `orig` (as received: not translated yet), from the address
// it was sent to, routed by the gateway's own routes.
void Worker::icmp_error_to_sender(rte_mbuf* orig, uint8_t type, uint8_t code, uint16_t mtu) {
  rte_mbuf* m = make_icmp_error(dp.pool, orig, type, code, mtu, ip_dst(at<rte_ipv4_hdr>(orig)));
  if (m == nullptr) return;
  icmp_errors_sent.add();
  meta(m)->nexthop = 0;
  ip_output(&m, 1);
}

void Worker::forward(rte_mbuf** pkts, uint16_t n) {
  const policy::CompiledPolicy* pol = dp.policy.load(std::memory_order_acquire);
  if (pol == nullptr) {
    for (uint16_t i = 0; i < n; ++i) drop(pkts[i], Drop::no_route);
    return;
  }

  // Parse: the flow key of every packet; fragments after the first follow their first one.
  rte_mbuf* flow_pkt[kMaxBurst];
  FlowKey keys[kMaxBurst];
  uint8_t tcp_flags[kMaxBurst];
  uint16_t nf = 0;
  rte_mbuf* later[kMaxBurst];
  uint16_t n_later = 0;
  for (uint16_t i = 0; i < n; ++i) {
    rte_mbuf* m = pkts[i];
    uint8_t* p = at<uint8_t>(m);
    switch (parse_flow(p, m->data_len, &keys[nf], &tcp_flags[nf])) {
      case FlowParse::ok:
        flow_pkt[nf++] = m;
        break;
      case FlowParse::fragment:
        later[n_later++] = m;  // after the burst's first fragments made their connections
        break;
      case FlowParse::icmp_error:
      case FlowParse::unsupported:
        drop(m, Drop::ip_proto_unhandled);
        break;
      case FlowParse::malformed:
        drop(m, Drop::nat_malformed);
        break;
    }
  }
  if (nf > 0) forward_flows(pol, flow_pkt, keys, tcp_flags, nf);
  for (uint16_t i = 0; i < n_later; ++i) forward_fragment(pol, later[i]);
}

// A fragment after the first: it follows what its first fragment's connection decided.
void Worker::forward_fragment(const policy::CompiledPolicy* pol, rte_mbuf* m) {
  const auto gen = uint32_t(pol->generation());
  uint8_t* p = at<uint8_t>(m);
  uint32_t idx;
  const FragKey fk = frag_key(p);
  if (!frags_out.find(fk, now_tsc, &idx)) return drop(m, Drop::frag_no_first);
  Conn& c = ct.at(idx);
  // The entry may have been reused since the first fragment: it must still be that flow's.
  if (c.state == ConnState::none || c.src != fk.src || c.dst != fk.dst || c.proto != fk.proto ||
      c.verdict != Verdict::allow || c.policy_gen != gen || !ip_ttl_decrement(p))
    return drop(m, Drop::frag_no_first);
  snat_out(p, m->data_len, c.snat_addr, c.snat_port);
  PktMeta* md = meta(m);
  md->port = c.out_port;
  md->nexthop = c.next_hop;
  ip_output(&m, 1);
}

void Worker::forward_flows(const policy::CompiledPolicy* pol, rte_mbuf** flow_pkt, const FlowKey* keys,
                           const uint8_t* tcp_flags, uint16_t nf) {
  const auto gen = uint32_t(pol->generation());
  Conn* conns[kMaxBurst];
  ct.lookup_bulk(keys, nf, FlowDir::orig, conns);

  // Classify what needs a verdict: new flows and flows decided under an older generation.
  policy::FlowKey acl_keys[kMaxBurst];
  uint16_t acl_of[kMaxBurst];
  uint16_t n_acl = 0;
  for (uint16_t i = 0; i < nf; ++i) {
    if (conns[i] != nullptr && conns[i]->policy_gen == gen) continue;
    const uint32_t peer = meta(flow_pkt[i])->peer;
    acl_keys[n_acl] = pol->flow_key(peer, keys[i].dst, keys[i].proto, keys[i].dport);
    acl_of[i] = n_acl++;
  }
  policy::Verdict verdicts[kMaxBurst];
  RuleHits::Row hits;
  if (n_acl > 0) {
    hits = dp.rule_hits.row(index, pol->generation());
    pol->classify(acl_keys, n_acl, verdicts);
    policy_lookups.add(n_acl);
  }

  const uint16_t mss = uint16_t(dp.settings.mtu - 40);
  for (uint16_t i = 0; i < nf; ++i) {
    rte_mbuf* m = flow_pkt[i];
    uint8_t* p = at<uint8_t>(m);
    const uint32_t peer = meta(m)->peer;
    Conn* c = conns[i];
    if (c == nullptr || c->policy_gen != gen) {
      const policy::Verdict& v = verdicts[acl_of[i]];
      if (!v.allow) {
        // A policy change that revokes access also ends the open connections it covered.
        if (c != nullptr) ct.erase(*c);
        hits.hit(v.policy, v.rule);
        drop(m, Drop::policy_deny);
        continue;
      }
      if (c == nullptr) {
        if (!ConnTable::can_open(keys[i].proto, tcp_flags[i])) {
          drop(m, Drop::ct_invalid);
          continue;
        }
        const policy::Route* r = pol->route(keys[i].dst);
        if (r == nullptr) {
          drop(m, Drop::no_route);
          continue;
        }
        ConnTable::InsertResult res;
        c = ct.insert(keys[i], peer, r->snat_addr, now_tsc, &res);
        if (c == nullptr) {
          drop(m, res == ConnTable::InsertResult::no_port ? Drop::ct_no_port : Drop::ct_table_full);
          continue;
        }
        c->out_port = r->port;
        c->next_hop = r->via != 0 ? r->via : keys[i].dst;
        conns[i] = c;  // a later packet of the same new flow in this burst finds it
        for (uint16_t j = i + 1; j < nf; ++j)
          if (conns[j] == nullptr && keys[j] == keys[i]) conns[j] = c;
      }
      hits.hit(v.policy, v.rule);  // a flow opened, or an open one allowed again by a new generation
      c->verdict = Verdict::allow;
      c->policy_gen = gen;
      c->policy_id = v.policy;
      c->rule_id = v.rule;
    }
    if (!ct.track(*c, FlowDir::orig, tcp_flags[i], now_tsc)) {
      drop(m, Drop::ct_invalid);
      continue;
    }
    if (!ip_ttl_decrement(p)) {
      icmp_error_to_peer(peer, m, 11, 0, 0);
      drop(m, Drop::ip_ttl_exceeded);
      continue;
    }
    const uint16_t egress_mtu = dp.ports[c->out_port].l3_mtu;
    if (needs_frag(p, egress_mtu)) {
      icmp_error_to_peer(peer, m, 3, 4, egress_mtu);
      drop(m, Drop::frag_needed);
      continue;
    }
    if (keys[i].proto == IPPROTO_TCP) tcp_clamp_mss(p, m->data_len, mss);
    if (is_first_fragment(p)) frags_out.remember(frag_key(p), ct.index_of(*c), now_tsc);
    snat_out(p, m->data_len, c->snat_addr, c->snat_port);
    PktMeta* md = meta(m);
    md->port = c->out_port;
    md->nexthop = c->next_hop;
    ip_output(&m, 1);
  }
}

}  // namespace sluice::dp
