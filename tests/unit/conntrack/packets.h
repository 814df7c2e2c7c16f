// Building IPv4 test packets with checksums computed from scratch, and verifying them the same
// way: the reference the incremental updates are checked against.
#pragma once

#include <cstdint>
#include <random>
#include <vector>

namespace sluice::test {

using Bytes = std::vector<uint8_t>;

inline uint16_t get16(const Bytes& b, size_t off) { return uint16_t(b[off] << 8 | b[off + 1]); }
inline void put16(Bytes& b, size_t off, uint16_t v) {
  b[off] = uint8_t(v >> 8);
  b[off + 1] = uint8_t(v);
}
inline uint32_t get32(const Bytes& b, size_t off) { return uint32_t(get16(b, off)) << 16 | get16(b, off + 2); }
inline void put32(Bytes& b, size_t off, uint32_t v) {
  put16(b, off, uint16_t(v >> 16));
  put16(b, off + 2, uint16_t(v));
}

// One's complement sum of big-endian 16-bit words, folded.
inline uint32_t sum16(const uint8_t* p, size_t n, uint32_t s = 0) {
  for (size_t i = 0; i + 1 < n; i += 2) s += uint32_t(p[i] << 8 | p[i + 1]);
  if (n & 1) s += uint32_t(p[n - 1] << 8);
  while (s >> 16) s = (s & 0xffff) + (s >> 16);
  return s;
}
inline uint16_t csum(const uint8_t* p, size_t n, uint32_t s = 0) { return uint16_t(~sum16(p, n, s)); }

inline size_t ihl(const Bytes& b) { return size_t(b[0] & 0xf) * 4; }

inline uint32_t pseudo(const Bytes& b, size_t l4len) {
  uint32_t s = sum16(b.data() + 12, 8);
  return sum16(nullptr, 0, s + b[9] + uint32_t(l4len));
}

// Whether each checksum verifies (a stored one sums to 0xffff). l4len: the L4 length the
// checksum covers (the whole datagram for a first fragment); 0 means "up to the end".
inline bool ip_csum_ok(const Bytes& b) { return sum16(b.data(), ihl(b)) == 0xffff; }
inline bool l4_csum_ok(const Bytes& b, size_t l4len = 0) {
  const size_t hl = ihl(b);
  if (l4len == 0) l4len = b.size() - hl;
  const uint8_t* l4 = b.data() + hl;
  switch (b[9]) {
    case 6:
      return sum16(l4, l4len, pseudo(b, l4len)) == 0xffff;
    case 17:
      if (get16(b, hl + 6) == 0) return true;
      return sum16(l4, l4len, pseudo(b, l4len)) == 0xffff;
    case 1:
      return sum16(l4, l4len) == 0xffff;
  }
  return true;
}

// Recomputes every checksum from scratch (UDP with checksum 0 stays 0).
inline void fix_checksums(Bytes& b) {
  const size_t hl = ihl(b);
  put16(b, 10, 0);
  put16(b, 10, csum(b.data(), hl));
  const size_t l4len = b.size() - hl;
  switch (b[9]) {
    case 6:
      put16(b, hl + 16, 0);
      put16(b, hl + 16, csum(b.data() + hl, l4len, pseudo(b, l4len)));
      break;
    case 17:
      if (get16(b, hl + 6) != 0) {
        put16(b, hl + 6, 0);
        uint16_t c = csum(b.data() + hl, l4len, pseudo(b, l4len));
        put16(b, hl + 6, c == 0 ? 0xffff : c);
      }
      break;
    case 1:
      put16(b, hl + 2, 0);
      put16(b, hl + 2, csum(b.data() + hl, l4len));
      break;
  }
}

struct PacketSpec {
  uint8_t proto = 17;
  uint32_t src = 0x64400002, dst = 0xC633640A;  // 100.64.0.2 -> 198.51.100.10
  uint16_t sport = 5555, dport = 80;            // ICMP: id = sport
  uint8_t icmp_type = 8;
  uint8_t tcp_flags = 0x10;
  uint8_t ttl = 64;
  uint16_t ip_id = 0x1234;
  uint16_t frag = 0;       // flags and offset field
  size_t ip_options = 0;   // bytes, multiple of 4
  Bytes tcp_options;       // padded by the caller to a multiple of 4
  Bytes payload;
  bool udp_zero_csum = false;
};

inline Bytes build(const PacketSpec& s) {
  const size_t hl = 20 + s.ip_options;
  size_t l4h = s.proto == 6 ? 20 + s.tcp_options.size() : 8;
  Bytes b(hl + l4h + s.payload.size(), 0);
  b[0] = uint8_t(0x40 | hl / 4);
  put16(b, 2, uint16_t(b.size()));
  put16(b, 4, s.ip_id);
  put16(b, 6, s.frag);
  b[8] = s.ttl;
  b[9] = s.proto;
  put32(b, 12, s.src);
  put32(b, 16, s.dst);
  for (size_t i = 20; i < hl; i++) b[i] = 1;  // NOP options
  if (s.proto == 6) {
    put16(b, hl, s.sport);
    put16(b, hl + 2, s.dport);
    put32(b, hl + 4, 1000);
    put32(b, hl + 8, 2000);
    b[hl + 12] = uint8_t(l4h / 4 << 4);
    b[hl + 13] = s.tcp_flags;
    put16(b, hl + 14, 65535);
    for (size_t i = 0; i < s.tcp_options.size(); i++) b[hl + 20 + i] = s.tcp_options[i];
  } else if (s.proto == 17) {
    put16(b, hl, s.sport);
    put16(b, hl + 2, s.dport);
    put16(b, hl + 4, uint16_t(8 + s.payload.size()));
    put16(b, hl + 6, s.udp_zero_csum ? 0 : 1);  // non-zero: fix_checksums computes it
  } else if (s.proto == 1) {
    b[hl] = s.icmp_type;
    put16(b, hl + 4, s.sport);
    put16(b, hl + 6, 7);  // sequence
  }
  for (size_t i = 0; i < s.payload.size(); i++) b[hl + l4h + i] = s.payload[i];
  fix_checksums(b);
  return b;
}

inline Bytes random_bytes(std::mt19937_64& rng, size_t n) {
  Bytes b(n);
  for (auto& x : b) x = uint8_t(rng());
  return b;
}

}  // namespace sluice::test
