// Cryptographic primitives of the WireGuard handshake (whitepaper section 5.4):
// Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s plus the BLAKE2s MACs and XChaCha20-Poly1305 cookies.
// Control thread only. Functions never throw; failures are reported by return value.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>

#include "dataplane/wg/protocol.h"

namespace sluice::wg {

using Key = std::array<uint8_t, kKeyLen>;  // Curve25519 keys, symmetric keys, hashes
using Mac = std::array<uint8_t, kMacLen>;
using Tai64n = std::array<uint8_t, kTimestampLen>;
using Bytes = std::span<const uint8_t>;

inline constexpr char kConstruction[] = "Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s";
inline constexpr char kIdentifier[] = "WireGuard v1 zx2c4 Jason@zx2c4.com";
inline constexpr char kLabelMac1[] = "mac1----";
inline constexpr char kLabelCookie[] = "cookie--";

// A string constant as bytes, without its terminating NUL.
template <size_t N>
constexpr Bytes label(const char (&s)[N]) {
  return {reinterpret_cast<const uint8_t*>(s), N - 1};
}

// HASH(a || b): BLAKE2s-256.
void hash(Key& out, Bytes a, Bytes b = {});
// MAC(key, in): keyed BLAKE2s with 16-byte output (mac1, mac2, cookie).
void mac(Mac& out, Bytes key, Bytes in);
// HMAC-BLAKE2s with the 64-byte BLAKE2s block (RFC 2104 over BLAKE2s-256).
void hmac(Key& out, Bytes key, Bytes in);
// KDF_n(ck, input) of the whitepaper: HKDF with HMAC-BLAKE2s, 1 to 3 outputs.
void kdf1(Key& t1, const Key& ck, Bytes input);
void kdf2(Key& t1, Key& t2, const Key& ck, Bytes input);
void kdf3(Key& t1, Key& t2, Key& t3, const Key& ck, Bytes input);

// DH_GENERATE: a fresh random, clamped Curve25519 private key.
void dh_generate(Key& private_key);
// DH_PUBKEY. False only if libsodium refuses the scalar.
[[nodiscard]] bool dh_pubkey(Key& public_key, const Key& private_key);
// DH(private, public). False when the shared secret is all zero (a low-order public key):
// such a handshake must be rejected.
[[nodiscard]] bool dh(Key& shared, const Key& private_key, const Key& public_key);

// AEAD(key, counter, plain, aad): ChaCha20-Poly1305 IETF, nonce = 32 zero bits || counter (LE64).
// out holds plain.size() + kTagLen bytes; in-place (out == plain.data()) is allowed.
void aead_encrypt(uint8_t* out, const Key& key, uint64_t counter, Bytes plain, Bytes aad);
// out holds cipher.size() - kTagLen bytes. False on a short input or an authentication failure.
[[nodiscard]] bool aead_decrypt(uint8_t* out, const Key& key, uint64_t counter, Bytes cipher, Bytes aad);
// XAEAD(key, nonce, plain, aad): XChaCha20-Poly1305 IETF with a 24-byte nonce (cookie replies).
void xaead_encrypt(uint8_t* out, const Key& key, const uint8_t (&nonce)[kCookieNonceLen], Bytes plain,
                   Bytes aad);
[[nodiscard]] bool xaead_decrypt(uint8_t* out, const Key& key, const uint8_t (&nonce)[kCookieNonceLen],
                                 Bytes cipher, Bytes aad);

// TAI64N label for a UNIX time: big-endian (2^62 + 10 + seconds) then big-endian nanoseconds.
// The +10 is the TAI-UTC offset the kernel and wireguard-go both use. Nanoseconds are rounded down
// to a multiple of 2^24 (~16.8 ms), as both do, so the timestamp does not leak a precise clock.
Tai64n tai64n(uint64_t unix_seconds, uint32_t nanoseconds);
// The system wall clock (CLOCK_REALTIME) as TAI64N.
Tai64n tai64n_now();

// Random bytes from libsodium's CSPRNG.
void random_bytes(void* out, size_t len);

// Zeroing the compiler cannot elide (sodium_memzero).
void secure_zero(void* p, size_t len);
template <typename T, size_t N>
void secure_zero(std::array<T, N>& a) {
  secure_zero(a.data(), sizeof(T) * N);
}

// Constant-time equality of two equally sized buffers.
[[nodiscard]] bool equal_ct(Bytes a, Bytes b);
[[nodiscard]] bool is_zero(Bytes a);

// libsodium must be initialised once before use; safe to call repeatedly and from any thread.
void crypto_init();

}  // namespace sluice::wg
