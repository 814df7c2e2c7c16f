// Packet rewriting: incremental checksums against full recomputes on random packets, TTL,
// MSS clamping, fragments, ICMP errors (translating a LAN router's, building our own).
#include <gtest/gtest.h>

#include <algorithm>
#include <random>

#include "dataplane/nat.h"
#include "tests/unit/conntrack/packets.h"

namespace sluice::dp {
namespace {

using test::Bytes;
using test::build;
using test::get16;
using test::get32;
using test::PacketSpec;

constexpr uint32_t kPeer = 0x64400002;    // 100.64.0.2
constexpr uint32_t kRemote = 0xC633640A;  // 198.51.100.10
constexpr uint32_t kSnat = 0xC6336401;    // 198.51.100.1
constexpr uint32_t kRouter = 0xC63364FE;  // 198.51.100.254
constexpr uint32_t kGw = 0x64400001;      // 100.64.0.1

// A random TCP, UDP (checksum or none) or ICMP echo packet, with random IP options.
PacketSpec random_spec(std::mt19937_64& rng) {
  PacketSpec s;
  switch (rng() % 5) {
    case 0: s.proto = 6; break;
    case 1: s.proto = 17; break;
    case 2: s.proto = 17, s.udp_zero_csum = true; break;
    case 3: s.proto = 1, s.icmp_type = 8; break;
    default: s.proto = 1, s.icmp_type = 0; break;
  }
  s.src = uint32_t(rng());
  s.dst = uint32_t(rng());
  s.sport = uint16_t(rng());
  s.dport = s.proto == 1 ? 0 : uint16_t(rng());
  s.tcp_flags = uint8_t(rng());
  s.ttl = uint8_t(2 + rng() % 250);
  s.ip_id = uint16_t(rng());
  s.ip_options = (rng() % 4 == 0) ? 4 * (rng() % 11) : 0;
  s.payload = test::random_bytes(rng, rng() % 300);
  return s;
}

// Checksums equal to a recompute from scratch. TCP/ICMP/IP accept either zero (0x0000 or
// 0xffff both verify); UDP must match exactly (0 means "no checksum").
void expect_checksums_as_recomputed(const Bytes& got) {
  Bytes ref = got;
  test::fix_checksums(ref);
  const size_t hl = test::ihl(got);
  EXPECT_TRUE(test::ip_csum_ok(got));
  EXPECT_TRUE(test::l4_csum_ok(got));
  if (got[9] == 17) {
    EXPECT_EQ(get16(got, hl + 6), get16(ref, hl + 6));
  }
}

TEST(Nat, SnatAndUnsnatMatchFullRecomputeOnRandomPackets) {
  std::mt19937_64 rng(1);
  for (int i = 0; i < 20000; i++) {
    PacketSpec s = random_spec(rng);
    const Bytes orig = build(s);
    Bytes p = orig;
    const uint32_t na = uint32_t(rng());
    const uint16_t np = uint16_t(rng());
    ASSERT_TRUE(snat_out(p.data(), uint32_t(p.size()), na, np));
    const size_t hl = test::ihl(p);
    EXPECT_EQ(get32(p, 12), na);
    EXPECT_EQ(get32(p, 16), s.dst);
    if (s.proto == 1) {
      EXPECT_EQ(get16(p, hl + 4), s.icmp_type == 8 ? np : s.sport);  // only a request's id
    } else {
      EXPECT_EQ(get16(p, hl), np);
      EXPECT_EQ(get16(p, hl + 2), s.dport);
    }
    if (s.udp_zero_csum) {
      EXPECT_EQ(get16(p, hl + 6), 0);
    }
    expect_checksums_as_recomputed(p);

    // The reply comes back to (na, np) and is translated back to the original source.
    Bytes r = p;
    test::put32(r, 12, s.dst);
    test::put32(r, 16, na);
    if (s.proto != 1) {
      test::put16(r, hl, s.dport);
      test::put16(r, hl + 2, np);
    } else {
      r[hl] = s.icmp_type == 8 ? 0 : 8;
    }
    test::fix_checksums(r);
    ASSERT_TRUE(unsnat_in(r.data(), uint32_t(r.size()), s.src, s.sport));
    EXPECT_EQ(get32(r, 16), s.src);
    if (s.proto != 1) {
      EXPECT_EQ(get16(r, hl + 2), s.sport);
    }
    if (s.proto == 1 && s.icmp_type == 8) {
      EXPECT_EQ(get16(r, hl + 4), s.sport);
    }
    expect_checksums_as_recomputed(r);

    // And translating p back with unsnat-like src rewrite gives the original bytes.
    Bytes back = p;
    ASSERT_TRUE(snat_out(back.data(), uint32_t(back.size()), s.src, s.sport));
    if (s.proto != 1 || s.icmp_type == 8) {
      for (size_t j = 0; j < back.size(); j++) {
        if (j == 10 || (s.proto == 6 && j == hl + 16) || (s.proto == 1 && j == hl + 2)) continue;
        ASSERT_EQ(back[j], orig[j]) << "byte " << j;
      }
      expect_checksums_as_recomputed(back);
    }
  }
}

TEST(Nat, UdpZeroChecksumStaysZero) {
  PacketSpec s;
  s.udp_zero_csum = true;
  Bytes p = build(s);
  ASSERT_TRUE(snat_out(p.data(), uint32_t(p.size()), kSnat, 40000));
  EXPECT_EQ(get16(p, 26), 0);
  EXPECT_TRUE(test::ip_csum_ok(p));
}

TEST(Nat, UdpChecksumThatBecomesZeroIsSentAsFfff) {
  // Search for a translation whose checksum comes out as zero; it must read 0xffff.
  std::mt19937_64 rng(7);
  int found = 0;
  for (int i = 0; i < 400000 && found < 3; i++) {
    PacketSpec s;
    s.payload = test::random_bytes(rng, 4);
    Bytes p = build(s);
    const uint32_t na = uint32_t(rng());
    const uint16_t np = uint16_t(rng());
    Bytes ref = p;
    test::put32(ref, 12, na);
    test::put16(ref, 20, np);
    test::fix_checksums(ref);
    if (get16(ref, 26) != 0xffff) continue;
    found++;
    ASSERT_TRUE(snat_out(p.data(), uint32_t(p.size()), na, np));
    EXPECT_EQ(get16(p, 26), 0xffff);
  }
  EXPECT_GT(found, 0);
}

TEST(Nat, RejectsMalformedAndLeavesThemAlone) {
  PacketSpec s;
  s.proto = 6;
  Bytes p = build(s);
  Bytes cut(p.begin(), p.begin() + 30);  // TCP header truncated
  test::put16(cut, 2, 30);
  const Bytes before = cut;
  EXPECT_FALSE(snat_out(cut.data(), uint32_t(cut.size()), kSnat, 1));
  EXPECT_EQ(cut, before);
  Bytes bad = build(s);
  bad[0] = 0x65;  // version 6
  EXPECT_FALSE(unsnat_in(bad.data(), uint32_t(bad.size()), kPeer, 1));
  Bytes shortlen = build(s);
  EXPECT_FALSE(snat_out(shortlen.data(), uint32_t(shortlen.size() - 1), kSnat, 1));  // tl > len
}

TEST(Nat, EthernetPaddingAfterTheDatagramIsIgnored) {
  PacketSpec s;
  s.payload = {1, 2};
  Bytes p = build(s);
  p.resize(46, 0xaa);
  ASSERT_TRUE(snat_out(p.data(), uint32_t(p.size()), kSnat, 40000));
  Bytes dgram(p.begin(), p.begin() + get16(p, 2));
  expect_checksums_as_recomputed(dgram);
  EXPECT_EQ(p[45], 0xaa);
}

TEST(Nat, FirstFragmentTranslatesPortsOthersAddressOnly) {
  std::mt19937_64 rng(3);
  for (uint8_t proto : {uint8_t(6), uint8_t(17)}) {
    PacketSpec s;
    s.proto = proto;
    s.payload = test::random_bytes(rng, 1000);
    const Bytes whole = build(s);
    const size_t l4len = whole.size() - 20;
    // First fragment: header + 200 bytes of L4, MF set; its checksum covers the whole datagram.
    Bytes first(whole.begin(), whole.begin() + 20 + 200);
    test::put16(first, 2, uint16_t(first.size()));
    test::put16(first, 6, 0x2000);
    test::put16(first, 10, 0);
    test::put16(first, 10, test::csum(first.data(), 20));
    ASSERT_TRUE(is_fragment(first.data()));
    ASSERT_TRUE(is_first_fragment(first.data()));
    FlowKey k;
    uint8_t fl;
    EXPECT_EQ(parse_flow(first.data(), uint32_t(first.size()), &k, &fl), FlowParse::ok);
    ASSERT_TRUE(snat_out(first.data(), uint32_t(first.size()), kSnat, 40000));
    EXPECT_TRUE(test::ip_csum_ok(first));
    // Reassemble: the translated first fragment's L4 bytes + the rest of the original.
    Bytes re = whole;
    test::put32(re, 12, kSnat);
    for (size_t j = 20; j < first.size(); j++) re[j] = first[j];
    EXPECT_TRUE(test::l4_csum_ok(re, l4len));
    EXPECT_EQ(get16(re, 20), 40000);

    // A later fragment: address rewrite only, its bytes (all payload) untouched.
    Bytes later(whole.begin(), whole.begin() + 20);
    later.insert(later.end(), whole.begin() + 220, whole.begin() + 420);
    test::put16(later, 2, uint16_t(later.size()));
    test::put16(later, 6, 200 / 8);
    test::put16(later, 10, 0);
    test::put16(later, 10, test::csum(later.data(), 20));
    EXPECT_TRUE(is_fragment(later.data()));
    EXPECT_FALSE(is_first_fragment(later.data()));
    EXPECT_EQ(parse_flow(later.data(), uint32_t(later.size()), &k, &fl), FlowParse::fragment);
    const Bytes before = later;
    ASSERT_TRUE(snat_out(later.data(), uint32_t(later.size()), kSnat, 40000));
    EXPECT_EQ(get32(later, 12), kSnat);
    EXPECT_TRUE(test::ip_csum_ok(later));
    EXPECT_TRUE(std::equal(later.begin() + 20, later.end(), before.begin() + 20));
    FragKey fk = frag_key(later.data());
    EXPECT_EQ(fk.src, kSnat);
    EXPECT_EQ(fk.id, s.ip_id);
    EXPECT_EQ(fk.proto, proto);
  }
}

TEST(Nat, TtlDecrement) {
  std::mt19937_64 rng(5);
  for (int i = 0; i < 2000; i++) {
    PacketSpec s = random_spec(rng);
    Bytes p = build(s);
    ASSERT_TRUE(ip_ttl_decrement(p.data()));
    EXPECT_EQ(p[8], s.ttl - 1);
    Bytes ref = p;
    test::fix_checksums(ref);
    EXPECT_TRUE(test::ip_csum_ok(p));
  }
  for (uint8_t ttl : {uint8_t(0), uint8_t(1)}) {
    PacketSpec s;
    s.ttl = ttl;
    Bytes p = build(s);
    const Bytes before = p;
    EXPECT_FALSE(ip_ttl_decrement(p.data()));
    EXPECT_EQ(p, before);
  }
}

Bytes syn_with_options(Bytes opts, uint8_t flags = kTcpSyn) {
  while (opts.size() % 4) opts.push_back(0);
  PacketSpec s;
  s.proto = 6;
  s.tcp_flags = flags;
  s.tcp_options = opts;
  return build(s);
}

uint16_t mss_at(const Bytes& p, size_t opt_off) { return get16(p, 40 + opt_off + 2); }

TEST(Nat, MssClampLowersAndKeepsChecksumValid) {
  Bytes p = syn_with_options({2, 4, 0x05, 0xb4, 4, 2, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2, 1, 3, 3, 7});
  ASSERT_TRUE(tcp_clamp_mss(p.data(), uint32_t(p.size()), 1380));
  EXPECT_EQ(mss_at(p, 0), 1380);
  EXPECT_TRUE(test::l4_csum_ok(p));

  Bytes sa = syn_with_options({2, 4, 0x05, 0xb4}, kTcpSyn | kTcpAck);  // SYN-ACK too
  ASSERT_TRUE(tcp_clamp_mss(sa.data(), uint32_t(sa.size()), 1380));
  EXPECT_EQ(mss_at(sa, 0), 1380);
  EXPECT_TRUE(test::l4_csum_ok(sa));

  // At an odd offset (after one NOP): the value straddles two checksum words.
  Bytes odd = syn_with_options({1, 2, 4, 0x23, 0x45, 1, 1, 1});
  ASSERT_TRUE(tcp_clamp_mss(odd.data(), uint32_t(odd.size()), 1380));
  EXPECT_EQ(get16(odd, 40 + 3), 1380);
  EXPECT_TRUE(test::l4_csum_ok(odd));
}

TEST(Nat, MssClampLeavesAlone) {
  const std::vector<Bytes> cases = {
      {2, 4, 0x04, 0xb0},        // already below (1200)
      {2, 4, 0x05, 0x64},        // exactly 1380
      {4, 2, 1, 1},              // no MSS
      {},                        // no options at all
      {2, 0, 0x05, 0xb4},        // length 0
      {2, 3, 0x05, 0xb4},        // MSS of length 3
      {2, 4, 0x05, 0xb4, 8, 40}, // later option running past the header
      {1, 1, 1, 8},              // truncated option at the end
      {2, 4, 0x05, 0xb4, 2, 4, 0x05, 0xb4},  // two MSS options
  };
  for (const Bytes& opts : cases) {
    Bytes p = syn_with_options(opts);
    const Bytes before = p;
    EXPECT_FALSE(tcp_clamp_mss(p.data(), uint32_t(p.size()), 1380));
    EXPECT_EQ(p, before);
  }
  Bytes ack = syn_with_options({2, 4, 0x05, 0xb4}, kTcpAck);  // not a SYN
  const Bytes before = ack;
  EXPECT_FALSE(tcp_clamp_mss(ack.data(), uint32_t(ack.size()), 1380));
  EXPECT_EQ(ack, before);
  // Data offset beyond the packet.
  Bytes bad = syn_with_options({2, 4, 0x05, 0xb4});
  bad[32] = 0xf0;
  test::fix_checksums(bad);
  const Bytes bad_before = bad;
  EXPECT_FALSE(tcp_clamp_mss(bad.data(), uint32_t(bad.size()), 1380));
  EXPECT_EQ(bad, bad_before);
}

TEST(Nat, MssClampOnRandomOptionsNeverBreaksTheChecksum) {
  std::mt19937_64 rng(11);
  int clamped = 0;
  for (int i = 0; i < 20000; i++) {
    Bytes opts = test::random_bytes(rng, 4 * (rng() % 11));
    // Plant a well-formed MSS often, sometimes after a NOP.
    if (rng() % 2 && opts.size() >= 8) {
      size_t at = rng() % 2;
      if (at) opts[0] = 1;
      opts[at] = 2, opts[at + 1] = 4, opts[at + 2] = uint8_t(rng()), opts[at + 3] = uint8_t(rng());
      for (size_t j = at + 4; j < opts.size(); j++) opts[j] = (rng() % 3) ? 1 : opts[j];
    }
    Bytes p = syn_with_options(opts);
    const Bytes before = p;
    const bool changed = tcp_clamp_mss(p.data(), uint32_t(p.size()), 1380);
    EXPECT_TRUE(test::l4_csum_ok(p));
    size_t diff = 0;
    for (size_t j = 0; j < p.size(); j++) diff += p[j] != before[j];
    if (!changed) {
      EXPECT_EQ(diff, 0u);
    } else {
      clamped++;
      EXPECT_LE(diff, 4u);  // two MSS bytes and at most the two checksum bytes
    }
  }
  EXPECT_GT(clamped, 200);
}

TEST(Nat, ParseFlowKeys) {
  FlowKey k;
  uint8_t f;
  PacketSpec s;
  s.proto = 6;
  s.tcp_flags = kTcpSyn;
  Bytes p = build(s);
  ASSERT_EQ(parse_flow(p.data(), uint32_t(p.size()), &k, &f), FlowParse::ok);
  EXPECT_EQ(k.src, s.src);
  EXPECT_EQ(k.dst, s.dst);
  EXPECT_EQ(k.sport, 5555);
  EXPECT_EQ(k.dport, 80);
  EXPECT_EQ(k.proto, 6);
  EXPECT_EQ(f, kTcpSyn);

  s = PacketSpec{};
  s.proto = 1;
  s.icmp_type = 8;
  s.sport = 777;
  p = build(s);
  ASSERT_EQ(parse_flow(p.data(), uint32_t(p.size()), &k, &f), FlowParse::ok);
  EXPECT_EQ(k.sport, 777);
  EXPECT_EQ(k.dport, 0);
  s.icmp_type = 0;
  p = build(s);
  ASSERT_EQ(parse_flow(p.data(), uint32_t(p.size()), &k, &f), FlowParse::ok);
  EXPECT_EQ(k.sport, 0);
  EXPECT_EQ(k.dport, 777);
  s.icmp_type = 13;  // timestamp
  p = build(s);
  EXPECT_EQ(parse_flow(p.data(), uint32_t(p.size()), &k, &f), FlowParse::unsupported);
  s.icmp_type = 3;
  p = build(s);
  EXPECT_EQ(parse_flow(p.data(), uint32_t(p.size()), &k, &f), FlowParse::icmp_error);
  s.proto = 47;  // GRE
  p = build(s);
  EXPECT_EQ(parse_flow(p.data(), uint32_t(p.size()), &k, &f), FlowParse::unsupported);
  p[0] = 0x44;
  EXPECT_EQ(parse_flow(p.data(), uint32_t(p.size()), &k, &f), FlowParse::malformed);
}

// What a LAN router sends back about a packet it received: `quote` bytes of it.
Bytes router_error(const Bytes& translated, uint8_t type, uint8_t code, size_t quote) {
  quote = std::min(quote, translated.size());
  Bytes e(20 + 8 + quote, 0);
  e[0] = 0x45;
  test::put16(e, 2, uint16_t(e.size()));
  e[8] = 250;
  e[9] = 1;
  test::put32(e, 12, kRouter);
  test::put32(e, 16, get32(translated, 12));
  e[20] = type;
  e[21] = code;
  if (type == 3 && code == 4) test::put16(e, 26, 1280);
  std::copy(translated.begin(), translated.begin() + long(quote), e.begin() + 28);
  test::fix_checksums(e);
  return e;
}

TEST(Nat, IcmpErrorFromLanTranslatesBackToThePeer) {
  std::mt19937_64 rng(13);
  int n = 0;
  for (int i = 0; i < 3000; i++) {
    PacketSpec s = random_spec(rng);
    if (s.proto == 1 && s.icmp_type != 8) continue;  // peers send echo requests
    s.src = kPeer;
    s.ip_options = 0;
    const Bytes from_peer = build(s);
    Bytes out = from_peer;
    const uint16_t snat_port = uint16_t(1024 + rng() % 64000);
    ASSERT_TRUE(snat_out(out.data(), uint32_t(out.size()), kSnat, snat_port));
    // Routers quote 8 bytes (RFC 792) or much more (RFC 1812); cover both.
    const size_t quote = (rng() % 2) ? 28 : 20 + 8 + rng() % 200;
    const uint8_t type = (rng() % 2) ? 3 : 11;
    const uint8_t code = type == 3 ? uint8_t(rng() % 16) : 0;
    Bytes err = router_error(out, type, code, quote);

    IcmpError e;
    ASSERT_TRUE(parse_icmp_error(err.data(), uint32_t(err.size()), &e));
    EXPECT_EQ(e.type, type);
    EXPECT_EQ(e.code, code);
    // The reversed embedded tuple is the connection's reply key.
    FlowKey want;
    want.src = s.dst;
    want.dst = kSnat;
    want.sport = s.proto == 1 ? 0 : s.dport;
    want.dport = snat_port;
    want.proto = s.proto;
    EXPECT_EQ(e.lookup_key(), want);

    ASSERT_TRUE(translate_icmp_error(err.data(), uint32_t(err.size()), e, FlowDir::reply, kPeer, s.sport));
    EXPECT_EQ(get32(err, 12), kRouter);
    EXPECT_EQ(get32(err, 16), kPeer);
    EXPECT_TRUE(test::ip_csum_ok(err));
    EXPECT_EQ(test::sum16(err.data() + 20, err.size() - 20), 0xffffu) << "ICMP checksum";
    // The embedded packet is again exactly what the peer sent, up to what was quoted, except
    // an L4 checksum that was not quoted whole (TCP with fewer than 18 bytes).
    const size_t q = err.size() - 28;
    for (size_t j = 0; j < q; j++) {
      if (s.proto == 6 && q < 20 + 18 && (j == 36 || j == 37)) continue;
      ASSERT_EQ(err[28 + j], from_peer[j]) << "quoted byte " << j << " quote " << q;
    }
    n++;
  }
  EXPECT_GT(n, 2000);
}

TEST(Nat, IcmpErrorFromPeerTranslatesToTheLan) {
  // The LAN's UDP reply remote:53 -> snat:40000 was delivered to the peer as
  // remote:53 -> peer:5555; the peer answers with port unreachable quoting it.
  PacketSpec s;
  s.proto = 17;
  s.src = kRemote;
  s.dst = kSnat;
  s.sport = 53;
  s.dport = 40000;
  s.payload = {1, 2, 3, 4, 5};
  const Bytes from_lan = build(s);
  Bytes delivered = from_lan;
  ASSERT_TRUE(unsnat_in(delivered.data(), uint32_t(delivered.size()), kPeer, 5555));
  Bytes err(20 + 8 + delivered.size(), 0);
  err[0] = 0x45;
  test::put16(err, 2, uint16_t(err.size()));
  err[8] = 64;
  err[9] = 1;
  test::put32(err, 12, kPeer);
  test::put32(err, 16, kRemote);
  err[20] = 3;
  err[21] = 3;
  std::copy(delivered.begin(), delivered.end(), err.begin() + 28);
  test::fix_checksums(err);

  IcmpError e;
  ASSERT_TRUE(parse_icmp_error(err.data(), uint32_t(err.size()), &e));
  FlowKey orig;
  orig.src = kPeer, orig.dst = kRemote, orig.sport = 5555, orig.dport = 53, orig.proto = 17;
  EXPECT_EQ(e.lookup_key(), orig);
  ASSERT_TRUE(translate_icmp_error(err.data(), uint32_t(err.size()), e, FlowDir::orig, kSnat, 40000));
  EXPECT_EQ(get32(err, 12), kSnat);
  EXPECT_EQ(get32(err, 16), kRemote);
  EXPECT_TRUE(test::ip_csum_ok(err));
  EXPECT_EQ(test::sum16(err.data() + 20, err.size() - 20), 0xffffu);
  EXPECT_TRUE(std::equal(from_lan.begin(), from_lan.end(), err.begin() + 28));
}

TEST(Nat, IcmpErrorParseRejects) {
  PacketSpec s;
  s.src = kSnat;
  Bytes pkt = build(s);
  IcmpError e;
  Bytes ok = router_error(pkt, 11, 0, 28);
  EXPECT_TRUE(parse_icmp_error(ok.data(), uint32_t(ok.size()), &e));
  Bytes short_quote = router_error(pkt, 11, 0, 27);  // fewer than 8 L4 bytes
  EXPECT_FALSE(parse_icmp_error(short_quote.data(), uint32_t(short_quote.size()), &e));
  Bytes echo = router_error(pkt, 8, 0, 28);  // not an error type
  EXPECT_FALSE(parse_icmp_error(echo.data(), uint32_t(echo.size()), &e));
  Bytes v6 = ok;
  v6[28] = 0x65;
  EXPECT_FALSE(parse_icmp_error(v6.data(), uint32_t(v6.size()), &e));
  Bytes frag = ok;
  test::put16(frag, 28 + 6, 100);  // quotes a non-first fragment
  EXPECT_FALSE(parse_icmp_error(frag.data(), uint32_t(frag.size()), &e));
  s.proto = 47;
  Bytes gre = build(s);
  Bytes gre_err = router_error(gre, 3, 1, 28);
  EXPECT_FALSE(parse_icmp_error(gre_err.data(), uint32_t(gre_err.size()), &e));
}

TEST(Nat, BuildsFragNeededAndTimeExceeded) {
  std::mt19937_64 rng(17);
  PacketSpec s;
  s.proto = 6;
  s.frag = 0x4000;  // DF
  s.payload = test::random_bytes(rng, 1500 - 48);
  s.ip_options = 8;
  const Bytes big = build(s);
  EXPECT_TRUE(needs_frag(big.data(), 1420));
  EXPECT_FALSE(needs_frag(big.data(), 1500));
  uint8_t out[kIcmpErrorMaxLen];
  const uint32_t n = build_frag_needed(out, sizeof out, big.data(), uint32_t(big.size()), kGw, 1420);
  ASSERT_EQ(n, 20u + 8 + 28 + 8);
  Bytes e(out, out + n);
  EXPECT_EQ(e[0], 0x45);
  EXPECT_EQ(get16(e, 2), n);
  EXPECT_EQ(e[9], 1);
  EXPECT_EQ(get32(e, 12), kGw);
  EXPECT_EQ(get32(e, 16), kPeer);
  EXPECT_TRUE(test::ip_csum_ok(e));
  EXPECT_EQ(e[20], 3);
  EXPECT_EQ(e[21], 4);
  EXPECT_EQ(get16(e, 26), 1420);
  EXPECT_EQ(test::sum16(e.data() + 20, n - 20), 0xffffu);
  EXPECT_TRUE(std::equal(e.begin() + 28, e.end(), big.begin()));
  // Our own error parses as one and finds the flow it is about.
  IcmpError pe;
  ASSERT_TRUE(parse_icmp_error(e.data(), n, &pe));
  EXPECT_EQ(pe.inner.src, kPeer);
  EXPECT_EQ(pe.inner.sport, 5555);

  const uint32_t m = build_time_exceeded(out, sizeof out, big.data(), uint32_t(big.size()), kGw);
  ASSERT_EQ(m, n);
  EXPECT_EQ(out[20], 11);
  EXPECT_EQ(out[21], 0);
  EXPECT_EQ(test::sum16(out + 20, m - 20), 0xffffu);
  EXPECT_EQ(build_time_exceeded(out, 40, big.data(), uint32_t(big.size()), kGw), 0u);  // no room

  // A datagram shorter than header + 8 is quoted whole.
  PacketSpec t;
  t.proto = 1;
  Bytes tiny = build(t);
  EXPECT_EQ(build_time_exceeded(out, sizeof out, tiny.data(), uint32_t(tiny.size()), kGw), 20u + 8 + 28);
}

TEST(Nat, NoIcmpErrorsAboutErrorsFragmentsOrBroadcast) {
  uint8_t out[kIcmpErrorMaxLen];
  PacketSpec s;
  s.proto = 1;
  s.icmp_type = 3;
  Bytes err = build(s);
  EXPECT_FALSE(icmp_error_allowed(err.data(), uint32_t(err.size())));
  EXPECT_EQ(build_time_exceeded(out, sizeof out, err.data(), uint32_t(err.size()), kGw), 0u);
  s.icmp_type = 8;
  Bytes echo = build(s);
  EXPECT_TRUE(icmp_error_allowed(echo.data(), uint32_t(echo.size())));
  PacketSpec f;
  f.frag = 10;
  Bytes frag = build(f);
  EXPECT_FALSE(icmp_error_allowed(frag.data(), uint32_t(frag.size())));
  f.frag = 0x2000;  // first fragment: allowed
  frag = build(f);
  EXPECT_TRUE(icmp_error_allowed(frag.data(), uint32_t(frag.size())));
  PacketSpec m;
  m.dst = 0xE0000001;
  Bytes mc = build(m);
  EXPECT_FALSE(icmp_error_allowed(mc.data(), uint32_t(mc.size())));
  m.dst = kRemote;
  m.src = 0;
  Bytes zero = build(m);
  EXPECT_FALSE(icmp_error_allowed(zero.data(), uint32_t(zero.size())));
}

// Splits with ip_fragment_build; every fragment is checked (size, header checksum, id, flags)
// and its payload placed at its offset, so the caller can compare with the original.
struct Pieces {
  std::vector<Bytes> frags;
  Bytes payload;  // reassembled, from offset `base`
  bool last_mf = false;
};
Pieces split(const Bytes& pkt, uint16_t mtu, uint32_t base = 0) {
  Pieces r;
  const unsigned n = ip_fragment_count(pkt.data(), uint32_t(pkt.size()), mtu);
  for (unsigned i = 0; i < n; i++) {
    Bytes out(2048);
    const uint32_t len = ip_fragment_build(pkt.data(), uint32_t(pkt.size()), mtu, i, out.data(), uint32_t(out.size()));
    EXPECT_GT(len, 0u);
    out.resize(len);
    EXPECT_LE(out.size(), mtu);
    EXPECT_TRUE(test::ip_csum_ok(out));
    EXPECT_EQ(get16(out, 2), out.size());
    EXPECT_EQ(get16(out, 4), get16(pkt, 4));  // same id
    EXPECT_EQ(get32(out, 12), get32(pkt, 12));
    EXPECT_EQ(get32(out, 16), get32(pkt, 16));
    const uint16_t field = get16(out, 6);
    EXPECT_EQ(field & 0x4000, 0);
    const bool mf = (field & 0x2000) != 0;
    if (i + 1 < n) {
      EXPECT_TRUE(mf);
      EXPECT_EQ((out.size() - test::ihl(out)) % 8, 0u);
    }
    const size_t off = size_t(field & 0x1fff) * 8 - base;
    const size_t hl = test::ihl(out);
    if (r.payload.size() < off + out.size() - hl) r.payload.resize(off + out.size() - hl);
    std::copy(out.begin() + long(hl), out.end(), r.payload.begin() + long(off));
    r.last_mf = mf;
    r.frags.push_back(out);
  }
  return r;
}

TEST(Nat, FragmentsABigEchoReplyForTheTunnel) {
  PacketSpec s;
  s.proto = 1;
  s.icmp_type = 0;
  std::mt19937_64 rng(7);
  s.payload = test::random_bytes(rng, 3000);
  const Bytes whole = build(s);  // 3028 bytes, as a LAN host answers `ping -s 3000`
  ASSERT_EQ(whole.size(), 3028u);
  EXPECT_EQ(ip_fragment_count(whole.data(), uint32_t(whole.size()), 1420), 3u);
  const Pieces p = split(whole, 1420);
  ASSERT_EQ(p.frags.size(), 3u);
  EXPECT_EQ(p.frags[0].size(), 1420u);
  EXPECT_EQ(p.frags[1].size(), 1420u);
  EXPECT_EQ(p.frags[2].size(), 20u + 3008 - 2 * 1400);
  EXPECT_FALSE(p.last_mf);
  EXPECT_TRUE(std::equal(p.payload.begin(), p.payload.end(), whole.begin() + 20, whole.end()));
  EXPECT_EQ(p.payload.size(), whole.size() - 20);
  // The first fragment is a first fragment of the same flow; the others are fragments.
  FlowKey k;
  uint8_t fl;
  EXPECT_EQ(parse_flow(p.frags[0].data(), uint32_t(p.frags[0].size()), &k, &fl), FlowParse::ok);
  EXPECT_TRUE(is_first_fragment(p.frags[0].data()));
  EXPECT_EQ(parse_flow(p.frags[1].data(), uint32_t(p.frags[1].size()), &k, &fl), FlowParse::fragment);
}

TEST(Nat, FragmentingRefusesDfAndKeepsWhatFits) {
  PacketSpec s;
  s.payload = Bytes(2000, 0xab);
  Bytes df = build(s);
  test::put16(df, 6, 0x4000);
  test::fix_checksums(df);
  EXPECT_EQ(ip_fragment_count(df.data(), uint32_t(df.size()), 1420), 0u);
  Bytes out(2048);
  EXPECT_EQ(ip_fragment_build(df.data(), uint32_t(df.size()), 1420, 0, out.data(), 2048), 0u);
  // It fits: one piece, the packet as it is (DF or not).
  EXPECT_EQ(ip_fragment_count(df.data(), uint32_t(df.size()), 2100), 1u);
  EXPECT_EQ(ip_fragment_build(df.data(), uint32_t(df.size()), 2100, 0, out.data(), 2048), df.size());
  EXPECT_TRUE(std::equal(df.begin(), df.end(), out.begin()));
  // Too small an MTU, a truncated buffer, a bad header, no room.
  Bytes ok = build(s);
  EXPECT_EQ(ip_fragment_count(ok.data(), uint32_t(ok.size()), 24), 0u);
  EXPECT_EQ(ip_fragment_count(ok.data(), 100, 1420), 0u);
  EXPECT_EQ(ip_fragment_build(ok.data(), uint32_t(ok.size()), 1420, 0, out.data(), 100), 0u);
  EXPECT_EQ(ip_fragment_build(ok.data(), uint32_t(ok.size()), 1420, 2, out.data(), 2048), 0u);
}

TEST(Nat, LaterFragmentsKeepOnlyCopiedOptions) {
  PacketSpec s;
  s.ip_options = 12;
  s.payload = Bytes(1500, 0x5a);
  Bytes b = build(s);
  // Router alert (copied, 4 bytes), then a 7-byte option without the copy flag, then EOL.
  const uint8_t opts[12] = {0x94, 4, 0, 0, 0x07, 7, 4, 0, 0, 0, 0, 0};
  std::copy(opts, opts + 12, b.begin() + 20);
  test::fix_checksums(b);
  const Pieces p = split(b, 1000);
  ASSERT_EQ(p.frags.size(), 2u);
  EXPECT_EQ(test::ihl(p.frags[0]), 32u);
  EXPECT_TRUE(std::equal(opts, opts + 12, p.frags[0].begin() + 20));
  ASSERT_EQ(test::ihl(p.frags[1]), 24u);
  EXPECT_EQ(p.frags[1][20], 0x94);
  EXPECT_EQ(p.frags[1][21], 4);
  EXPECT_TRUE(std::equal(p.payload.begin(), p.payload.end(), b.begin() + 32, b.end()));
  // Malformed options: not split.
  b[25] = 40;
  test::fix_checksums(b);
  EXPECT_EQ(ip_fragment_count(b.data(), uint32_t(b.size()), 1000), 0u);
}

TEST(Nat, RefragmentingAFragmentAddsOffsetsAndKeepsMf) {
  // A 1500-byte middle fragment (offset 1480, MF) of a bigger datagram, split for the tunnel.
  PacketSpec s;
  s.proto = 17;
  s.payload = Bytes(1472, 0);
  Bytes frag = build(s);
  for (size_t i = 20; i < frag.size(); i++) frag[i] = uint8_t(i * 7);
  test::put16(frag, 6, 0x2000 | 1480 / 8);
  test::put16(frag, 10, 0);
  test::put16(frag, 10, test::csum(frag.data(), 20));
  const Pieces p = split(frag, 1420, 1480);
  ASSERT_EQ(p.frags.size(), 2u);
  EXPECT_EQ(get16(p.frags[0], 6), 0x2000 | 1480 / 8);
  EXPECT_EQ(get16(p.frags[1], 6), 0x2000 | (1480 + 1400) / 8);
  EXPECT_TRUE(p.last_mf);
  EXPECT_TRUE(std::equal(p.payload.begin(), p.payload.end(), frag.begin() + 20, frag.end()));
}

TEST(Nat, FragmentingRandomPacketsReassemblesToTheOriginal) {
  std::mt19937_64 rng(11);
  for (int i = 0; i < 500; i++) {
    PacketSpec s = random_spec(rng);
    s.payload = test::random_bytes(rng, rng() % 1900);
    const Bytes b = build(s);
    const uint16_t mtu = uint16_t(68 + rng() % 1500);
    const unsigned n = ip_fragment_count(b.data(), uint32_t(b.size()), mtu);
    if (b.size() <= mtu) {
      EXPECT_EQ(n, 1u);
      continue;
    }
    ASSERT_GE(n, 2u) << "size " << b.size() << " mtu " << mtu;
    const Pieces p = split(b, mtu);
    ASSERT_EQ(p.frags.size(), n);
    const size_t hl = test::ihl(b);
    ASSERT_EQ(p.payload.size(), b.size() - hl);
    EXPECT_TRUE(std::equal(p.payload.begin(), p.payload.end(), b.begin() + long(hl), b.end()));
    EXPECT_FALSE(p.last_mf);
  }
}

}  // namespace
}  // namespace sluice::dp
