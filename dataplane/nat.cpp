#include "dataplane/nat.h"

#include <algorithm>
#include <cstring>

#include "dataplane/packet.h"

namespace sluice::dp {

namespace {

// Raw loads and stores: the buffer may be only 2-byte aligned (IP after Ethernet). Values are
// kept in network order, as the checksum helpers of packet.h want them.
inline uint16_t ld16(const uint8_t* p) { uint16_t v; memcpy(&v, p, 2); return v; }
inline uint32_t ld32(const uint8_t* p) { uint32_t v; memcpy(&v, p, 4); return v; }
inline void st16(uint8_t* p, uint16_t v) { memcpy(p, &v, 2); }
inline void st32(uint8_t* p, uint32_t v) { memcpy(p, &v, 4); }
inline uint16_t be16(const uint8_t* p) { return uint16_t(p[0] << 8 | p[1]); }
inline uint32_t be32(const uint8_t* p) { return uint32_t(p[0]) << 24 | uint32_t(p[1]) << 16 | uint32_t(p[2]) << 8 | p[3]; }

constexpr uint32_t kIpSrc = 12, kIpDst = 16, kIpCsum = 10, kIpTtl = 8;
constexpr uint8_t kIcmpEchoReply = 0, kIcmpUnreach = 3, kIcmpSourceQuench = 4, kIcmpRedirect = 5,
                  kIcmpEcho = 8, kIcmpTimeExceeded = 11, kIcmpParamProblem = 12;

inline uint16_t ip_total(const uint8_t* pkt, uint32_t len) {
  return ip_check(reinterpret_cast<const rte_ipv4_hdr*>(pkt), len);
}
inline uint16_t ihl(const uint8_t* pkt) { return uint16_t((pkt[0] & 0xf) * 4); }
inline uint16_t frag_offset(const uint8_t* pkt) { return be16(pkt + 6) & 0x1fff; }

// Replaces the 32-bit address at pkt+off and updates the IPv4 header checksum.
inline void set_ip_addr(uint8_t* pkt, uint32_t off, uint32_t new_be) {
  const uint32_t old_be = ld32(pkt + off);
  st32(pkt + off, new_be);
  st16(pkt + kIpCsum, csum_update32(ld16(pkt + kIpCsum), old_be, new_be));
}

// The UDP checksum field's 0 means "none": a computed 0 goes out as 0xffff (RFC 768).
inline uint16_t udp_fix(uint16_t c) { return c == 0 ? 0xffff : c; }

// Rewrites the source (src_side) or destination address and port of a packet.
bool rewrite(uint8_t* pkt, uint32_t len, bool src_side, uint32_t addr, uint16_t port) {
  const uint16_t tl = ip_total(pkt, len);
  if (tl == 0) return false;
  const uint16_t hl = ihl(pkt);
  const uint32_t l4len = tl - hl;
  uint8_t* l4 = pkt + hl;
  const uint32_t new_addr = rte_cpu_to_be_32(addr);
  const uint32_t old_addr = ld32(pkt + (src_side ? kIpSrc : kIpDst));
  const uint16_t new_port = rte_cpu_to_be_16(port);
  const uint32_t port_off = src_side ? 0 : 2;

  if (frag_offset(pkt) == 0) {
    switch (pkt[9]) {
      case kProtoTcp: {
        if (l4len < 20) return false;
        const uint16_t old_port = ld16(l4 + port_off);
        uint16_t c = csum_update32(ld16(l4 + 16), old_addr, new_addr);
        st16(l4 + 16, csum_update16(c, old_port, new_port));
        st16(l4 + port_off, new_port);
        break;
      }
      case kProtoUdp: {
        if (l4len < 8) return false;
        const uint16_t old_port = ld16(l4 + port_off);
        const uint16_t old_c = ld16(l4 + 6);
        if (old_c != 0) {
          uint16_t c = csum_update32(old_c, old_addr, new_addr);
          st16(l4 + 6, udp_fix(csum_update16(c, old_port, new_port)));
        }
        st16(l4 + port_off, new_port);
        break;
      }
      case kProtoIcmp: {
        if (l4len < 8) return false;
        // The identifier belongs to the side that sent the request.
        const uint8_t type = l4[0];
        if ((src_side && type == kIcmpEcho) || (!src_side && type == kIcmpEchoReply)) {
          const uint16_t old_id = ld16(l4 + 4);
          st16(l4 + 2, csum_update16(ld16(l4 + 2), old_id, new_port));
          st16(l4 + 4, new_port);
        }
        break;
      }
      default:
        break;  // no ports, no pseudo-header checksum we know of: address only
    }
  }
  // The L4 checksum was updated from the old address above, so the address changes last.
  set_ip_addr(pkt, src_side ? kIpSrc : kIpDst, new_addr);
  return true;
}

}  // namespace

FlowParse parse_flow(const uint8_t* pkt, uint32_t len, FlowKey* key, uint8_t* tcp_flags) {
  const uint16_t tl = ip_total(pkt, len);
  if (tl == 0) return FlowParse::malformed;
  if (frag_offset(pkt) != 0) return FlowParse::fragment;
  const uint16_t hl = ihl(pkt);
  const uint32_t l4len = tl - hl;
  const uint8_t* l4 = pkt + hl;
  const uint8_t proto = pkt[9];
  *key = FlowKey{};
  key->src = be32(pkt + kIpSrc);
  key->dst = be32(pkt + kIpDst);
  key->proto = proto;
  *tcp_flags = 0;
  switch (proto) {
    case kProtoTcp:
      if (l4len < 20) return FlowParse::malformed;
      key->sport = be16(l4);
      key->dport = be16(l4 + 2);
      *tcp_flags = l4[13];
      return FlowParse::ok;
    case kProtoUdp:
      if (l4len < 8) return FlowParse::malformed;
      key->sport = be16(l4);
      key->dport = be16(l4 + 2);
      return FlowParse::ok;
    case kProtoIcmp:
      if (l4len < 8) return FlowParse::malformed;
      switch (l4[0]) {
        case kIcmpEcho:
          key->sport = be16(l4 + 4);
          return l4[1] == 0 ? FlowParse::ok : FlowParse::unsupported;
        case kIcmpEchoReply:
          key->dport = be16(l4 + 4);
          return l4[1] == 0 ? FlowParse::ok : FlowParse::unsupported;
        case kIcmpUnreach:
        case kIcmpTimeExceeded:
        case kIcmpParamProblem:
          return FlowParse::icmp_error;
        default:
          return FlowParse::unsupported;
      }
    default:
      return FlowParse::unsupported;
  }
}

bool is_fragment(const uint8_t* pkt) { return (be16(pkt + 6) & 0x3fff) != 0; }
bool is_first_fragment(const uint8_t* pkt) { return (be16(pkt + 6) & 0x3fff) == 0x2000; }

FragKey frag_key(const uint8_t* pkt) {
  FragKey k;
  k.src = be32(pkt + kIpSrc);
  k.dst = be32(pkt + kIpDst);
  k.id = be16(pkt + 4);
  k.proto = pkt[9];
  return k;
}

bool snat_out(uint8_t* pkt, uint32_t len, uint32_t new_src, uint16_t new_sport) {
  return rewrite(pkt, len, true, new_src, new_sport);
}

bool unsnat_in(uint8_t* pkt, uint32_t len, uint32_t new_dst, uint16_t new_dport) {
  return rewrite(pkt, len, false, new_dst, new_dport);
}

bool ip_ttl_decrement(uint8_t* pkt) {
  if (pkt[kIpTtl] <= 1) return false;
  const uint16_t old_w = ld16(pkt + kIpTtl);  // TTL and protocol
  pkt[kIpTtl]--;
  st16(pkt + kIpCsum, csum_update16(ld16(pkt + kIpCsum), old_w, ld16(pkt + kIpTtl)));
  return true;
}

uint16_t csum_update_bytes(uint16_t csum, const uint8_t* base, uint32_t off,
                           const uint8_t* old_bytes, uint32_t n) {
  const uint32_t start = off & ~1u, end = (off + n + 1) & ~1u;
  for (uint32_t w = start; w < end; w += 2) {
    uint8_t old_w[2], new_w[2];
    for (uint32_t i = 0; i < 2; i++) {
      const uint32_t b = w + i;
      new_w[i] = base[b];
      old_w[i] = (b >= off && b < off + n) ? old_bytes[b - off] : base[b];
    }
    csum = csum_update16(csum, ld16(old_w), ld16(new_w));
  }
  return csum;
}

bool tcp_clamp_mss(uint8_t* pkt, uint32_t len, uint16_t mss) {
  const uint16_t tl = ip_total(pkt, len);
  if (tl == 0 || pkt[9] != kProtoTcp || frag_offset(pkt) != 0) return false;
  const uint16_t hl = ihl(pkt);
  const uint32_t l4len = tl - hl;
  uint8_t* tcp = pkt + hl;
  if (l4len < 20 || !(tcp[13] & kTcpSyn)) return false;
  const uint32_t doff = uint32_t(tcp[12] >> 4) * 4;
  if (doff < 20 || doff > l4len) return false;
  // Walk the whole option list first: any malformation and the packet stays as it is.
  uint32_t mss_at = 0;
  for (uint32_t i = 20; i < doff;) {
    const uint8_t kind = tcp[i];
    if (kind == 0) break;  // end of options
    if (kind == 1) {       // NOP
      i++;
      continue;
    }
    if (i + 1 >= doff) return false;
    const uint8_t olen = tcp[i + 1];
    if (olen < 2 || i + olen > doff) return false;
    if (kind == 2) {
      if (olen != 4 || mss_at != 0) return false;
      mss_at = i + 2;
    }
    i += olen;
  }
  if (mss_at == 0 || be16(tcp + mss_at) <= mss) return false;
  uint8_t old[2] = {tcp[mss_at], tcp[mss_at + 1]};
  tcp[mss_at] = uint8_t(mss >> 8);
  tcp[mss_at + 1] = uint8_t(mss);
  st16(tcp + 16, csum_update_bytes(ld16(tcp + 16), tcp, mss_at, old, 2));
  return true;
}

bool parse_icmp_error(const uint8_t* pkt, uint32_t len, IcmpError* e) {
  const uint16_t tl = ip_total(pkt, len);
  if (tl == 0 || pkt[9] != kProtoIcmp || is_fragment(pkt)) return false;
  const uint32_t hl = ihl(pkt);
  const uint8_t* icmp = pkt + hl;
  if (tl < hl + 8 + 20 + 8) return false;
  const uint8_t type = icmp[0];
  if (type != kIcmpUnreach && type != kIcmpTimeExceeded && type != kIcmpParamProblem) return false;
  const uint32_t in_off = hl + 8;
  const uint8_t* in = pkt + in_off;
  const uint32_t in_hl = ihl(in);
  if ((in[0] >> 4) != 4 || in_hl < 20 || tl < in_off + in_hl + 8) return false;
  if (frag_offset(in) != 0) return false;  // a non-first fragment quotes no ports
  const uint8_t* l4 = in + in_hl;
  IcmpError r;
  r.type = type;
  r.code = icmp[1];
  r.inner_off = uint16_t(in_off);
  r.inner_l4_off = uint16_t(in_off + in_hl);
  r.inner_l4_len = uint16_t(tl - r.inner_l4_off);
  r.inner.src = be32(in + kIpSrc);
  r.inner.dst = be32(in + kIpDst);
  r.inner.proto = in[9];
  switch (in[9]) {
    case kProtoTcp:
    case kProtoUdp:
      r.inner.sport = be16(l4);
      r.inner.dport = be16(l4 + 2);
      break;
    case kProtoIcmp:
      if (l4[1] != 0) return false;
      if (l4[0] == kIcmpEcho)
        r.inner.sport = be16(l4 + 4);
      else if (l4[0] == kIcmpEchoReply)
        r.inner.dport = be16(l4 + 4);
      else
        return false;
      break;
    default:
      return false;
  }
  *e = r;
  return true;
}

bool translate_icmp_error(uint8_t* pkt, uint32_t len, const IcmpError& e, FlowDir dir,
                          uint32_t addr, uint16_t port) {
  const uint16_t tl = ip_total(pkt, len);
  if (tl == 0 || e.inner_off != ihl(pkt) + 8 || uint32_t(e.inner_l4_off) + 8 > tl ||
      e.inner_l4_off < e.inner_off + 20)
    return false;
  // dir == reply: the error goes to the peer; it quotes a packet the peer's connection sent,
  // so the peer's address is the quoted source. dir == orig: the quoted destination.
  const bool reply = dir == FlowDir::reply;
  const uint32_t new_addr = rte_cpu_to_be_32(addr);
  const uint16_t new_port = rte_cpu_to_be_16(port);
  uint8_t* icmp = pkt + ihl(pkt);
  uint8_t* in = pkt + e.inner_off;
  uint8_t* l4 = pkt + e.inner_l4_off;
  uint16_t icmp_c = ld16(icmp + 2);

  // Every word changed inside the ICMP message is folded into the ICMP checksum. All of them
  // sit at even offsets from the ICMP header (IPv4 header lengths are multiples of 4).
  auto put16 = [&icmp_c](uint8_t* p, uint16_t v) {
    icmp_c = csum_update16(icmp_c, ld16(p), v);
    st16(p, v);
  };

  const uint32_t in_addr_off = reply ? kIpSrc : kIpDst;
  const uint32_t old_addr = ld32(in + in_addr_off);
  const uint32_t port_off = reply ? 0 : 2;
  switch (in[9]) {
    case kProtoTcp:
    case kProtoUdp: {
      const uint16_t old_port = ld16(l4 + port_off);
      const bool tcp = in[9] == kProtoTcp;
      const uint32_t csum_off = tcp ? 16 : 6;
      if (e.inner_l4_len >= csum_off + 2) {
        const uint16_t old_c = ld16(l4 + csum_off);
        if (tcp || old_c != 0) {
          uint16_t c = csum_update16(csum_update32(old_c, old_addr, new_addr), old_port, new_port);
          put16(l4 + csum_off, tcp ? c : udp_fix(c));
        }
      }
      put16(l4 + port_off, new_port);
      break;
    }
    case kProtoIcmp: {
      const uint8_t type = l4[0];
      if ((reply && type == kIcmpEcho) || (!reply && type == kIcmpEchoReply)) {
        const uint16_t old_id = ld16(l4 + 4);
        put16(l4 + 2, csum_update16(ld16(l4 + 2), old_id, new_port));
        put16(l4 + 4, new_port);
      }
      break;
    }
    default:
      return false;
  }
  const uint16_t in_c = csum_update32(ld16(in + kIpCsum), old_addr, new_addr);
  put16(in + kIpCsum, in_c);
  icmp_c = csum_update32(icmp_c, old_addr, new_addr);
  st32(in + in_addr_off, new_addr);
  st16(icmp + 2, icmp_c);
  set_ip_addr(pkt, reply ? kIpDst : kIpSrc, new_addr);
  return true;
}

bool icmp_error_allowed(const uint8_t* orig, uint32_t len) {
  const uint16_t tl = ip_total(orig, len);
  if (tl == 0 || frag_offset(orig) != 0) return false;
  const uint32_t src = be32(orig + kIpSrc), dst = be32(orig + kIpDst);
  if (src == 0 || src >> 24 == 127 || src >> 28 >= 0xe) return false;  // multicast, class E, bcast
  if (dst >> 28 == 0xe || dst == 0xffffffff) return false;
  if (orig[9] == kProtoIcmp) {
    const uint16_t hl = ihl(orig);
    if (tl < hl + 1) return false;
    const uint8_t type = orig[hl];
    if (type == kIcmpUnreach || type == kIcmpSourceQuench || type == kIcmpRedirect ||
        type == kIcmpTimeExceeded || type == kIcmpParamProblem)
      return false;
  }
  return true;
}

bool needs_frag(const uint8_t* pkt, uint16_t mtu) {
  return (be16(pkt + 6) & 0x4000) != 0 && be16(pkt + 2) > mtu;
}

uint32_t build_icmp_error(uint8_t* out, uint32_t cap, const uint8_t* orig, uint32_t orig_len,
                          uint8_t type, uint8_t code, uint16_t mtu, uint32_t from) {
  if (!icmp_error_allowed(orig, orig_len)) return 0;
  const uint16_t tl = ip_total(orig, orig_len);
  const uint32_t quote = std::min<uint32_t>(tl, ihl(orig) + 8u);
  const uint32_t n = 20 + 8 + quote;
  if (cap < n) return 0;
  out[0] = 0x45;
  out[1] = 0xc0;  // internetwork control, as Linux sends its errors
  out[2] = uint8_t(n >> 8);
  out[3] = uint8_t(n);
  memset(out + 4, 0, 4);  // id, flags, fragment offset
  out[kIpTtl] = 64;
  out[9] = kProtoIcmp;
  st16(out + kIpCsum, 0);
  st32(out + kIpSrc, rte_cpu_to_be_32(from));
  memcpy(out + kIpDst, orig + kIpSrc, 4);
  uint8_t* icmp = out + 20;
  icmp[0] = type;
  icmp[1] = code;
  st16(icmp + 2, 0);
  st16(icmp + 4, 0);
  st16(icmp + 6, rte_cpu_to_be_16(mtu));  // next-hop MTU (RFC 1191) or unused
  memcpy(icmp + 8, orig, quote);
  st16(icmp + 2, uint16_t(~rte_raw_cksum(icmp, 8 + quote)));
  st16(out + kIpCsum, uint16_t(~rte_raw_cksum(out, 20)));
  return n;
}

namespace {

// The header of a non-first fragment: the fixed part and the options with the copy flag,
// padded with end-of-options to a multiple of 4. Returns its length, 0 for malformed options.
uint32_t later_fragment_header(const uint8_t* pkt, uint8_t* out) {
  const uint32_t hl = ihl(pkt);
  memcpy(out, pkt, 20);
  uint32_t n = 20;
  for (uint32_t i = 20; i < hl;) {
    const uint8_t kind = pkt[i];
    if (kind == 0) break;  // end of options
    if (kind == 1) {       // NOP: not copied
      i++;
      continue;
    }
    if (i + 1 >= hl) return 0;
    const uint8_t olen = pkt[i + 1];
    if (olen < 2 || i + olen > hl) return 0;
    if (kind & 0x80) {
      memcpy(out + n, pkt + i, olen);
      n += olen;
    }
    i += olen;
  }
  while (n % 4 != 0) out[n++] = 0;
  out[0] = uint8_t(0x40 | n / 4);
  return n;
}

struct FragPlan {
  uint32_t hl = 0, hl_later = 0;      // header lengths of the first and the later fragments
  uint32_t first = 0, later = 0;      // payload bytes per fragment
  uint32_t payload = 0;
  unsigned count = 0;
};

bool plan_fragments(const uint8_t* pkt, uint32_t len, uint16_t mtu, FragPlan* p) {
  const uint16_t tl = ip_total(pkt, len);
  if (tl == 0) return false;
  if (tl <= mtu) {
    p->count = 1;
    return true;
  }
  if (be16(pkt + 6) & 0x4000) return false;  // DF
  uint8_t hdr[60];
  p->hl = ihl(pkt);
  p->hl_later = later_fragment_header(pkt, hdr);
  if (p->hl_later == 0 || mtu < p->hl + 8 || mtu < p->hl_later + 8) return false;
  p->first = (mtu - p->hl) & ~7u;
  p->later = (mtu - p->hl_later) & ~7u;
  p->payload = tl - p->hl;
  p->count = 1 + (p->payload - p->first + p->later - 1) / p->later;
  return true;
}

}  // namespace

unsigned ip_fragment_count(const uint8_t* pkt, uint32_t len, uint16_t mtu) {
  FragPlan p;
  return plan_fragments(pkt, len, mtu, &p) ? p.count : 0;
}

uint32_t ip_fragment_build(const uint8_t* pkt, uint32_t len, uint16_t mtu, unsigned i, uint8_t* out,
                           uint32_t cap) {
  FragPlan p;
  if (!plan_fragments(pkt, len, mtu, &p) || i >= p.count) return 0;
  const uint16_t tl = ip_total(pkt, len);
  if (p.count == 1) {
    if (cap < tl) return 0;
    memcpy(out, pkt, tl);
    return tl;
  }
  const uint32_t start = i == 0 ? 0 : p.first + (i - 1) * p.later;
  const uint32_t size = std::min(i == 0 ? p.first : p.later, p.payload - start);
  uint32_t hl;
  if (i == 0) {
    hl = p.hl;
    if (cap < hl + size) return 0;
    memcpy(out, pkt, hl);
  } else {
    uint8_t hdr[60];
    hl = later_fragment_header(pkt, hdr);
    if (cap < hl + size) return 0;
    memcpy(out, hdr, hl);
  }
  memcpy(out + hl, pkt + p.hl + start, size);
  const uint16_t field = be16(pkt + 6);
  const bool more = i + 1 < p.count || (field & 0x2000) != 0;
  const uint32_t offset = uint32_t(field & 0x1fff) + start / 8;
  const uint16_t new_field = uint16_t((more ? 0x2000 : 0) | offset);
  out[6] = uint8_t(new_field >> 8);
  out[7] = uint8_t(new_field);
  const uint32_t n = hl + size;
  out[2] = uint8_t(n >> 8);
  out[3] = uint8_t(n);
  st16(out + kIpCsum, 0);
  st16(out + kIpCsum, uint16_t(~rte_raw_cksum(out, hl)));
  return n;
}

}  // namespace sluice::dp
