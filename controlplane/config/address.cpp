#include "controlplane/config/address.h"

#include <charconv>

namespace sluice::config {

namespace {

// Decimal number without sign, leading zeros or trailing characters.
std::optional<uint32_t> parse_decimal(std::string_view s, uint32_t max) {
  if (s.empty() || s.size() > 10 || (s.size() > 1 && s[0] == '0')) {
    return std::nullopt;
  }
  uint64_t v = 0;
  for (char c : s) {
    if (c < '0' || c > '9') {
      return std::nullopt;
    }
    v = v * 10 + static_cast<uint64_t>(c - '0');
  }
  if (v > max) {
    return std::nullopt;
  }
  return static_cast<uint32_t>(v);
}

}  // namespace

std::string to_string(uint32_t addr) {
  char buf[16];
  char* p = buf;
  for (int shift = 24; shift >= 0; shift -= 8) {
    p = std::to_chars(p, buf + sizeof buf, (addr >> shift) & 0xff).ptr;
    if (shift != 0) {
      *p++ = '.';
    }
  }
  return std::string(buf, p);
}

std::string to_string(const Prefix& p) { return to_string(p.addr) + "/" + std::to_string(p.len); }

std::string to_string(const SockAddr& s) { return to_string(s.addr) + ":" + std::to_string(s.port); }

std::string to_string(const AddrRange& r) {
  if (r.first == r.last) {
    return to_string(r.first);
  }
  return to_string(r.first) + "-" + to_string(r.last);
}

std::string to_string(const PortRange& r) {
  if (r.first == r.last) {
    return std::to_string(r.first);
  }
  return std::to_string(r.first) + "-" + std::to_string(r.last);
}

std::optional<uint32_t> parse_ipv4(std::string_view s) {
  uint32_t addr = 0;
  for (int i = 0; i < 4; i++) {
    size_t dot = s.find('.');
    if ((i < 3) != (dot != std::string_view::npos)) {
      return std::nullopt;
    }
    auto octet = parse_decimal(s.substr(0, dot), 255);
    if (!octet) {
      return std::nullopt;
    }
    addr = addr << 8 | *octet;
    s = i < 3 ? s.substr(dot + 1) : std::string_view{};
  }
  return addr;
}

std::optional<Prefix> parse_prefix(std::string_view s) {
  size_t slash = s.find('/');
  if (slash == std::string_view::npos) {
    return std::nullopt;
  }
  auto addr = parse_ipv4(s.substr(0, slash));
  auto len = parse_decimal(s.substr(slash + 1), 32);
  if (!addr || !len) {
    return std::nullopt;
  }
  return Prefix{*addr, static_cast<uint8_t>(*len)};
}

std::optional<uint16_t> parse_port(std::string_view s) {
  auto v = parse_decimal(s, 65535);
  if (!v) {
    return std::nullopt;
  }
  return static_cast<uint16_t>(*v);
}

}  // namespace sluice::config
