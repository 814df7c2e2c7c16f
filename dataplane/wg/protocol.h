// WireGuard wire formats and protocol constants (WireGuard whitepaper, sections 5.4 and 6).
// Shared by the control plane (handshakes, cookies, timers) and the workers (transport data).
// All multi-byte integer fields on the wire are little-endian.
#pragma once

#include <cstddef>
#include <cstdint>

namespace sluice::wg {

enum class MessageType : uint32_t {
  initiation = 1,
  response = 2,
  cookie_reply = 3,
  transport = 4,
};

inline constexpr size_t kKeyLen = 32;     // Curve25519 keys, symmetric keys, hashes
inline constexpr size_t kTagLen = 16;     // Poly1305 tag
inline constexpr size_t kMacLen = 16;     // mac1, mac2, cookie
inline constexpr size_t kTimestampLen = 12;  // TAI64N
inline constexpr size_t kCookieNonceLen = 24;  // XChaCha20-Poly1305 nonce

#pragma pack(push, 1)
struct MessageInitiation {
  uint32_t type;  // 1, as little-endian u8 + 3 reserved zero bytes
  uint32_t sender_index;
  uint8_t unencrypted_ephemeral[kKeyLen];
  uint8_t encrypted_static[kKeyLen + kTagLen];
  uint8_t encrypted_timestamp[kTimestampLen + kTagLen];
  uint8_t mac1[kMacLen];
  uint8_t mac2[kMacLen];
};

struct MessageResponse {
  uint32_t type;  // 2
  uint32_t sender_index;
  uint32_t receiver_index;
  uint8_t unencrypted_ephemeral[kKeyLen];
  uint8_t encrypted_nothing[kTagLen];
  uint8_t mac1[kMacLen];
  uint8_t mac2[kMacLen];
};

struct MessageCookieReply {
  uint32_t type;  // 3
  uint32_t receiver_index;
  uint8_t nonce[kCookieNonceLen];
  uint8_t encrypted_cookie[kMacLen + kTagLen];
};

// Followed by the encrypted, zero-padded inner packet and its 16-byte tag.
struct MessageTransportHeader {
  uint32_t type;  // 4
  uint32_t receiver_index;
  uint64_t counter;
};
#pragma pack(pop)

inline constexpr size_t kInitiationLen = sizeof(MessageInitiation);    // 148
inline constexpr size_t kResponseLen = sizeof(MessageResponse);        // 92
inline constexpr size_t kCookieReplyLen = sizeof(MessageCookieReply);  // 64
inline constexpr size_t kTransportHeaderLen = sizeof(MessageTransportHeader);  // 16
inline constexpr size_t kTransportMinLen = kTransportHeaderLen + kTagLen;      // 32: a keepalive
static_assert(kInitiationLen == 148 && kResponseLen == 92 && kCookieReplyLen == 64 &&
              kTransportHeaderLen == 16);

// Offset of mac1 within a message: the MACs cover every byte before them.
inline constexpr size_t kInitiationMac1Offset = offsetof(MessageInitiation, mac1);
inline constexpr size_t kResponseMac1Offset = offsetof(MessageResponse, mac1);

// Plaintext is zero-padded to a multiple of 16 before encryption (whitepaper 5.4.6).
inline constexpr size_t kPaddingMultiple = 16;
constexpr size_t padded_len(size_t plain_len, size_t mtu) {
  size_t p = (plain_len + kPaddingMultiple - 1) & ~(kPaddingMultiple - 1);
  return (plain_len <= mtu && p > mtu) ? mtu : p;
}

// Protocol constants (whitepaper 6.1). Times in seconds.
inline constexpr uint64_t kRekeyAfterMessages = 1ull << 60;
inline constexpr uint64_t kRejectAfterMessages = ~0ull - (1ull << 13);  // 2^64 - 2^13 - 1
inline constexpr uint32_t kRekeyAfterTime = 120;
inline constexpr uint32_t kRejectAfterTime = 180;
inline constexpr uint32_t kRekeyAttemptTime = 90;
inline constexpr uint32_t kRekeyTimeout = 5;
inline constexpr uint32_t kKeepaliveTimeout = 10;
inline constexpr uint32_t kCookieRefreshTime = 120;

// Read the message type from the first four bytes (little-endian u8 + three zero bytes).
inline MessageType message_type(const uint8_t* p) {
  return static_cast<MessageType>(uint32_t(p[0]) | uint32_t(p[1]) << 8 | uint32_t(p[2]) << 16 |
                                  uint32_t(p[3]) << 24);
}

}  // namespace sluice::wg
