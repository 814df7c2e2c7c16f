// Transport-data messages (type 4, whitepaper 5.4.6) over plain byte buffers. Kept free of DPDK so
// the unit tests and benchmarks run without an EAL; the tunnel stages call these on mbuf data.
#pragma once

#include <sys/types.h>  // ssize_t

#include <cstddef>
#include <cstdint>

#include "dataplane/crypto/aead.h"
#include "dataplane/wg/protocol.h"

namespace sluice::wg {

// Bytes a sealed message of plain_len bytes occupies: header, padded payload, tag.
constexpr size_t transport_sealed_len(size_t plain_len, uint16_t mtu) {
  return kTransportHeaderLen + padded_len(plain_len, mtu) + kTagLen;
}

// Builds a complete type-4 message at out: the header (type 4, receiver_index and counter
// little-endian), then plain zero-padded to padded_len(plain_len, mtu) and encrypted under key with
// counter as nonce, then the tag. out must hold transport_sealed_len(plain_len, mtu) bytes.
// Sealing in place is the fast path: put the inner packet 16 bytes into the buffer
// (plain == out + 16) with tailroom for padding and tag, and nothing is copied. Otherwise plain is
// copied to out + 16 first (overlap allowed). Returns the bytes written, or 0 if counter has
// reached kRejectAfterMessages (the keypair must not be used past it) or the AEAD failed.
size_t transport_seal(crypto::Aead& aead, const uint8_t key[kKeyLen], uint32_t receiver_index,
                      uint64_t counter, const uint8_t* plain, size_t plain_len, uint16_t mtu,
                      uint8_t* out);

// Reads the header without decrypting, for the peer lookup and replay check: false unless the
// message is at least a keepalive long (kTransportMinLen) and of type 4 with zero reserved bytes.
bool transport_parse(const uint8_t* msg, size_t len, uint32_t* receiver_index, uint64_t* counter);

// Authenticates and decrypts the payload of a whole message (header included) to out, which may
// be msg + 16 for in-place decryption. Returns the padded plaintext length (len - 32; 0 for a
// keepalive), or -1 if the message does not parse or fails authentication. The counter is taken
// from the header: check it against the ReplayWindow before, mark it after.
ssize_t transport_open(crypto::Aead& aead, const uint8_t key[kKeyLen], const uint8_t* msg,
                       size_t len, uint8_t* out);

// One message of a burst for transport_open_burst. The counter is read from msg's header, which
// the caller has already parsed for the replay check.
struct OpenOp {
  const uint8_t* key;  // the receiving keypair's key for this message's receiver index
  const uint8_t* msg;  // whole message, header included
  size_t len;
  uint8_t* out;       // plaintext destination; may be msg + 16
  ssize_t plain_len;  // set: as transport_open returns
};

// The AEAD pass of the worker's two-pass decrypt: opens every op. Marking counters afterwards,
// for the ops with plain_len >= 0, is the caller's.
void transport_open_burst(crypto::Aead& aead, OpenOp* ops, size_t n);

}  // namespace sluice::wg
