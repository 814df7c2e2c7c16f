// IPv4 addresses, prefixes and socket addresses as the configuration spells them.
// Every address is a uint32_t in host byte order.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace sluice::config {

struct Prefix {
  uint32_t addr = 0;  // interface addresses keep their host bits; subnet prefixes have none
  uint8_t len = 0;    // 0..32

  constexpr uint32_t mask() const { return len == 0 ? 0 : ~uint32_t{0} << (32 - len); }
  constexpr uint32_t network() const { return addr & mask(); }
  constexpr uint32_t broadcast() const { return network() | ~mask(); }
  constexpr bool has_host_bits() const { return (addr & ~mask()) != 0; }
  constexpr bool contains(uint32_t a) const { return (a & mask()) == network(); }
  constexpr bool contains(const Prefix& p) const { return p.len >= len && contains(p.addr); }
  friend constexpr bool operator==(const Prefix&, const Prefix&) = default;
};

struct SockAddr {
  uint32_t addr = 0;
  uint16_t port = 0;
  friend constexpr bool operator==(const SockAddr&, const SockAddr&) = default;
};

// Inclusive range of addresses: a single address, "a-b", or a CIDR block.
struct AddrRange {
  uint32_t first = 0;
  uint32_t last = 0;
  constexpr bool contains(uint32_t a) const { return first <= a && a <= last; }
  friend constexpr bool operator==(const AddrRange&, const AddrRange&) = default;
};

// Inclusive range of TCP/UDP ports.
struct PortRange {
  uint16_t first = 0;
  uint16_t last = 0;
  constexpr bool contains(uint16_t p) const { return first <= p && p <= last; }
  friend constexpr bool operator==(const PortRange&, const PortRange&) = default;
};

std::string to_string(uint32_t addr);          // "198.51.100.1"
std::string to_string(const Prefix& p);        // "198.51.100.1/24"
std::string to_string(const SockAddr& s);      // "203.0.113.7:51820"
std::string to_string(const AddrRange& r);     // "198.51.100.20-198.51.100.29" or one address
std::string to_string(const PortRange& r);     // "1000-2000" or "22"

// Strict dotted quad: four decimal octets 0..255, no leading zeros (they read as octal elsewhere).
std::optional<uint32_t> parse_ipv4(std::string_view s);
// "a.b.c.d/len"; the length is required. Host bits are kept.
std::optional<Prefix> parse_prefix(std::string_view s);
// Decimal 0..65535.
std::optional<uint16_t> parse_port(std::string_view s);

}  // namespace sluice::config
