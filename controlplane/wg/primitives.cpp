#include "controlplane/wg/primitives.h"

#include <blake2.h>
#include <sodium.h>
#include <time.h>

#include <cstdlib>
#include <cstring>

namespace sluice::wg {
namespace {

constexpr size_t kBlake2sBlockLen = 64;

static_assert(crypto_aead_chacha20poly1305_ietf_ABYTES == kTagLen);
static_assert(crypto_aead_xchacha20poly1305_ietf_ABYTES == kTagLen);
static_assert(crypto_aead_xchacha20poly1305_ietf_NPUBBYTES == kCookieNonceLen);
static_assert(crypto_scalarmult_BYTES == kKeyLen && crypto_scalarmult_SCALARBYTES == kKeyLen);

void counter_nonce(uint8_t (&nonce)[crypto_aead_chacha20poly1305_ietf_NPUBBYTES], uint64_t counter) {
  std::memset(nonce, 0, 4);
  for (int i = 0; i < 8; ++i) nonce[4 + i] = uint8_t(counter >> (8 * i));
}

}  // namespace

void crypto_init() {
  // sodium_init() returns 1 when already initialised and -1 only when the system has no entropy
  // source: no key or index could be generated safely, so stop.
  if (sodium_init() < 0) std::abort();
}

void hash(Key& out, Bytes a, Bytes b) {
  blake2s_state s;
  blake2s_init(&s, kKeyLen);
  blake2s_update(&s, a.data(), a.size());
  blake2s_update(&s, b.data(), b.size());
  blake2s_final(&s, out.data(), out.size());
}

void mac(Mac& out, Bytes key, Bytes in) {
  blake2s(out.data(), in.data(), key.data(), out.size(), in.size(), key.size());
}

void hmac(Key& out, Bytes key, Bytes in) {
  uint8_t k[kBlake2sBlockLen] = {};
  if (key.size() > kBlake2sBlockLen) {
    Key hk;
    hash(hk, key);
    std::memcpy(k, hk.data(), hk.size());
    secure_zero(hk);
  } else if (!key.empty()) {
    std::memcpy(k, key.data(), key.size());
  }
  uint8_t pad[kBlake2sBlockLen];
  Key inner;
  blake2s_state s;

  for (size_t i = 0; i < kBlake2sBlockLen; ++i) pad[i] = k[i] ^ 0x36;
  blake2s_init(&s, kKeyLen);
  blake2s_update(&s, pad, sizeof(pad));
  blake2s_update(&s, in.data(), in.size());
  blake2s_final(&s, inner.data(), inner.size());

  for (size_t i = 0; i < kBlake2sBlockLen; ++i) pad[i] = k[i] ^ 0x5c;
  blake2s_init(&s, kKeyLen);
  blake2s_update(&s, pad, sizeof(pad));
  blake2s_update(&s, inner.data(), inner.size());
  blake2s_final(&s, out.data(), out.size());

  secure_zero(k, sizeof(k));
  secure_zero(pad, sizeof(pad));
  secure_zero(inner);
  secure_zero(&s, sizeof(s));
}

namespace {

// HKDF-expand steps shared by KDF1..3. Any output may alias ck: ck is consumed into tau0 first.
void kdf(Key* t1, Key* t2, Key* t3, const Key& ck, Bytes input) {
  Key tau0;
  hmac(tau0, ck, input);
  uint8_t buf[kKeyLen + 1];
  buf[0] = 0x01;
  hmac(*t1, tau0, {buf, 1});
  if (t2 != nullptr) {
    std::memcpy(buf, t1->data(), kKeyLen);
    buf[kKeyLen] = 0x02;
    hmac(*t2, tau0, buf);
    if (t3 != nullptr) {
      std::memcpy(buf, t2->data(), kKeyLen);
      buf[kKeyLen] = 0x03;
      hmac(*t3, tau0, buf);
    }
  }
  secure_zero(tau0);
  secure_zero(buf, sizeof(buf));
}

}  // namespace

void kdf1(Key& t1, const Key& ck, Bytes input) { kdf(&t1, nullptr, nullptr, ck, input); }
void kdf2(Key& t1, Key& t2, const Key& ck, Bytes input) { kdf(&t1, &t2, nullptr, ck, input); }
void kdf3(Key& t1, Key& t2, Key& t3, const Key& ck, Bytes input) { kdf(&t1, &t2, &t3, ck, input); }

void dh_generate(Key& private_key) {
  randombytes_buf(private_key.data(), private_key.size());
  private_key[0] &= 248;
  private_key[31] &= 127;
  private_key[31] |= 64;
}

bool dh_pubkey(Key& public_key, const Key& private_key) {
  return crypto_scalarmult_base(public_key.data(), private_key.data()) == 0;
}

bool dh(Key& shared, const Key& private_key, const Key& public_key) {
  // libsodium returns -1 when the result is the all-zero point (low-order input).
  if (crypto_scalarmult(shared.data(), private_key.data(), public_key.data()) != 0) {
    secure_zero(shared);
    return false;
  }
  return true;
}

void aead_encrypt(uint8_t* out, const Key& key, uint64_t counter, Bytes plain, Bytes aad) {
  uint8_t nonce[crypto_aead_chacha20poly1305_ietf_NPUBBYTES];
  counter_nonce(nonce, counter);
  crypto_aead_chacha20poly1305_ietf_encrypt(out, nullptr, plain.data(), plain.size(), aad.data(),
                                            aad.size(), nullptr, nonce, key.data());
}

bool aead_decrypt(uint8_t* out, const Key& key, uint64_t counter, Bytes cipher, Bytes aad) {
  if (cipher.size() < kTagLen) return false;
  uint8_t nonce[crypto_aead_chacha20poly1305_ietf_NPUBBYTES];
  counter_nonce(nonce, counter);
  return crypto_aead_chacha20poly1305_ietf_decrypt(out, nullptr, nullptr, cipher.data(), cipher.size(),
                                                   aad.data(), aad.size(), nonce, key.data()) == 0;
}

void xaead_encrypt(uint8_t* out, const Key& key, const uint8_t (&nonce)[kCookieNonceLen], Bytes plain,
                   Bytes aad) {
  crypto_aead_xchacha20poly1305_ietf_encrypt(out, nullptr, plain.data(), plain.size(), aad.data(),
                                             aad.size(), nullptr, nonce, key.data());
}

bool xaead_decrypt(uint8_t* out, const Key& key, const uint8_t (&nonce)[kCookieNonceLen], Bytes cipher,
                   Bytes aad) {
  if (cipher.size() < kTagLen) return false;
  return crypto_aead_xchacha20poly1305_ietf_decrypt(out, nullptr, nullptr, cipher.data(), cipher.size(),
                                                    aad.data(), aad.size(), nonce, key.data()) == 0;
}

Tai64n tai64n(uint64_t unix_seconds, uint32_t nanoseconds) {
  constexpr uint64_t kBase = (1ull << 62) + 10;
  constexpr uint32_t kWhitenerMask = (1u << 24) - 1;
  const uint64_t secs = kBase + unix_seconds;
  const uint32_t nanos = nanoseconds & ~kWhitenerMask;
  Tai64n t;
  for (int i = 0; i < 8; ++i) t[i] = uint8_t(secs >> (56 - 8 * i));
  for (int i = 0; i < 4; ++i) t[8 + i] = uint8_t(nanos >> (24 - 8 * i));
  return t;
}

Tai64n tai64n_now() {
  timespec ts{};
  clock_gettime(CLOCK_REALTIME, &ts);
  return tai64n(uint64_t(ts.tv_sec), uint32_t(ts.tv_nsec));
}

void random_bytes(void* out, size_t len) { randombytes_buf(out, len); }

void secure_zero(void* p, size_t len) { sodium_memzero(p, len); }

bool equal_ct(Bytes a, Bytes b) {
  return a.size() == b.size() && sodium_memcmp(a.data(), b.data(), a.size()) == 0;
}

bool is_zero(Bytes a) { return sodium_is_zero(a.data(), a.size()) == 1; }

}  // namespace sluice::wg
