// Cookie mechanism of WireGuard (whitepaper 5.4.4 and 5.4.7): mac1 and mac2 on handshake messages,
// cookie replies under load. Control thread only; `now` is monotonic nanoseconds.
#pragma once

#include <cstdint>
#include <span>

#include "controlplane/wg/primitives.h"
#include "dataplane/wg/protocol.h"

namespace sluice::wg {

inline constexpr uint64_t kNsPerSecond = 1'000'000'000ull;
inline constexpr uint64_t kCookieRefreshNs = uint64_t(kCookieRefreshTime) * kNsPerSecond;

// The source of a handshake message: IPv4 address and UDP port, both in host byte order.
struct Endpoint {
  uint32_t ip = 0;
  uint16_t port = 0;
};

// Only our own CookieChecker verifies the cookies it hands out, so the MAC input layout is ours to
// choose. We use wireguard-go's (netip.AddrPort.MarshalBinary): the 4 address bytes in network
// order followed by the port in little-endian. The kernel uses a big-endian port; either works.
inline constexpr size_t kCookieSourceLen = 6;
void cookie_source_bytes(uint8_t (&out)[kCookieSourceLen], Endpoint src);

// Offsets of mac1 and mac2 in a handshake message: they are its last 32 bytes.
constexpr size_t mac1_offset(size_t msg_len) { return msg_len - 2 * kMacLen; }
constexpr size_t mac2_offset(size_t msg_len) { return msg_len - kMacLen; }

// Our side as the receiver of handshake messages: checks mac1/mac2 and makes cookie replies.
class CookieChecker {
 public:
  explicit CookieChecker(const Key& local_public);
  ~CookieChecker();
  CookieChecker(const CookieChecker&) = delete;
  CookieChecker& operator=(const CookieChecker&) = delete;

  // mac1 = MAC(HASH("mac1----" || our public key), msg[0:mac1]). msg is a whole initiation or
  // response (at least 2 * kMacLen bytes).
  [[nodiscard]] bool check_mac1(Bytes msg) const;
  // mac2 = MAC(cookie(src), msg[0:mac2]) under the current secret. Always false once the secret is
  // older than COOKIE_REFRESH (it is replaced by the next create_reply).
  [[nodiscard]] bool check_mac2(Bytes msg, Endpoint src, uint64_t now) const;
  // The cookie reply answering msg (sent by src): receiver = msg's sender index, cookie encrypted
  // with XChaCha20-Poly1305 under HASH("cookie--" || our public key), a random nonce and msg's mac1
  // as associated data. Rotates the secret first if it is older than COOKIE_REFRESH.
  void create_reply(MessageCookieReply& out, Bytes msg, Endpoint src, uint64_t now);

 private:
  void make_cookie(Mac& cookie, Endpoint src) const;

  Key mac1_key_;
  Key cookie_key_;
  Key secret_{};
  uint64_t secret_set_ = 0;
  bool has_secret_ = false;
};

// Our side as the sender of handshake messages to one peer: stamps mac1/mac2 and takes cookies.
class CookieGenerator {
 public:
  CookieGenerator() = default;
  explicit CookieGenerator(const Key& remote_public);
  ~CookieGenerator();
  CookieGenerator(const CookieGenerator&) = default;
  CookieGenerator& operator=(const CookieGenerator&) = default;

  // Writes mac1 and, with a cookie received less than COOKIE_REFRESH ago, mac2 (else zeros).
  void add_macs(std::span<uint8_t> msg, uint64_t now);
  // Decrypts a cookie reply with HASH("cookie--" || peer public key) against the mac1 we last
  // sent. False if we sent nothing yet or it does not authenticate.
  [[nodiscard]] bool consume_reply(const MessageCookieReply& reply, uint64_t now);
  [[nodiscard]] bool has_fresh_cookie(uint64_t now) const;

 private:
  Key mac1_key_{};
  Key cookie_key_{};
  Mac last_mac1_{};
  Mac cookie_{};
  uint64_t cookie_set_ = 0;
  bool has_last_mac1_ = false;
  bool has_cookie_ = false;
};

}  // namespace sluice::wg
