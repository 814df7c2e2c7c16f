#include "dataplane/wg/transport.h"

#include <cstring>

namespace sluice::wg {
namespace {

// Byte-wise so it is correct on any host and alignment; compilers fold each into one store/load.
inline void store_le32(uint8_t* p, uint32_t v) {
  for (size_t i = 0; i < 4; ++i) p[i] = uint8_t(v >> (8 * i));
}
inline void store_le64(uint8_t* p, uint64_t v) {
  for (size_t i = 0; i < 8; ++i) p[i] = uint8_t(v >> (8 * i));
}
inline uint32_t load_le32(const uint8_t* p) {
  uint32_t v = 0;
  for (size_t i = 0; i < 4; ++i) v |= uint32_t(p[i]) << (8 * i);
  return v;
}
inline uint64_t load_le64(const uint8_t* p) {
  uint64_t v = 0;
  for (size_t i = 0; i < 8; ++i) v |= uint64_t(p[i]) << (8 * i);
  return v;
}

constexpr size_t kReceiverOffset = offsetof(MessageTransportHeader, receiver_index);
constexpr size_t kCounterOffset = offsetof(MessageTransportHeader, counter);

}  // namespace

size_t transport_seal(crypto::Aead& aead, const uint8_t key[kKeyLen], uint32_t receiver_index,
                      uint64_t counter, const uint8_t* plain, size_t plain_len, uint16_t mtu,
                      uint8_t* out) {
  if (counter >= kRejectAfterMessages) return 0;
  uint8_t* payload = out + kTransportHeaderLen;
  const size_t padded = padded_len(plain_len, mtu);
  // The AEAD runs in place over the padded payload, so the payload must sit at out + 16 first.
  if (plain_len > 0 && payload != plain) std::memmove(payload, plain, plain_len);
  // Padding hides the inner packet's exact length; it must be zeros (whitepaper 5.4.6).
  std::memset(payload + plain_len, 0, padded - plain_len);
  // The header goes in after the move: with the inner packet at out + 16 it does not overlap it,
  // and with any other layout the move has already taken the bytes it would overwrite.
  store_le32(out, uint32_t(MessageType::transport));
  store_le32(out + kReceiverOffset, receiver_index);
  store_le64(out + kCounterOffset, counter);
  if (!aead.seal(key, counter, payload, padded, payload)) return 0;
  return kTransportHeaderLen + padded + kTagLen;
}

bool transport_parse(const uint8_t* msg, size_t len, uint32_t* receiver_index, uint64_t* counter) {
  if (len < kTransportMinLen || message_type(msg) != MessageType::transport) return false;
  *receiver_index = load_le32(msg + kReceiverOffset);
  *counter = load_le64(msg + kCounterOffset);
  return true;
}

ssize_t transport_open(crypto::Aead& aead, const uint8_t key[kKeyLen], const uint8_t* msg,
                       size_t len, uint8_t* out) {
  uint32_t receiver_index;
  uint64_t counter;
  if (!transport_parse(msg, len, &receiver_index, &counter)) return -1;
  const size_t sealed = len - kTransportHeaderLen;
  if (!aead.open(key, counter, msg + kTransportHeaderLen, sealed, out)) return -1;
  return ssize_t(sealed - kTagLen);
}

void transport_open_burst(crypto::Aead& aead, OpenOp* ops, size_t n) {
  for (size_t i = 0; i < n; ++i)
    ops[i].plain_len = transport_open(aead, ops[i].key, ops[i].msg, ops[i].len, ops[i].out);
}

}  // namespace sluice::wg
