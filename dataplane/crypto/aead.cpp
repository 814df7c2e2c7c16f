#include "dataplane/crypto/aead.h"

#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/params.h>
#include <sodium.h>

#include <climits>
#include <cstring>
#include <utility>

namespace sluice::crypto {
namespace {

constexpr size_t kNonceLen = 12;

// WireGuard's nonce: 32 zero bits, then the counter little-endian (whitepaper 5.4.6).
inline void make_nonce(uint64_t counter, uint8_t nonce[kNonceLen]) {
  nonce[0] = nonce[1] = nonce[2] = nonce[3] = 0;
  for (size_t i = 0; i < 8; ++i) nonce[4 + i] = uint8_t(counter >> (8 * i));
}

// sodium_init picks the CPU-specific implementations; it must run once before any other call.
// A function-local static makes the first call thread-safe when several workers start together.
bool sodium_ready() {
  static const bool ready = sodium_init() >= 0;
  return ready;
}

}  // namespace

const char* backend_name(AeadBackend backend) {
  switch (backend) {
    case AeadBackend::openssl:
      return "openssl";
    case AeadBackend::sodium:
      return "sodium";
  }
  return "unknown";
}

std::optional<AeadBackend> parse_backend(std::string_view name) {
  if (name == "openssl") return AeadBackend::openssl;
  if (name == "sodium") return AeadBackend::sodium;
  return std::nullopt;
}

AeadBackend default_backend() { return AeadBackend::openssl; }

Aead::Aead(AeadBackend backend) : backend_(backend) {
  switch (backend_) {
    case AeadBackend::openssl:
      evp_ = EVP_CIPHER_CTX_new();
      // Binding the cipher here does the provider fetch once; per-packet inits pass a null
      // cipher and only reset the key and nonce.
      ready_ = evp_ != nullptr &&
               EVP_CipherInit_ex(evp_, EVP_chacha20_poly1305(), nullptr, nullptr, nullptr, 1) == 1;
      break;
    case AeadBackend::sodium:
      ready_ = sodium_ready();
      break;
  }
}

Aead::~Aead() { EVP_CIPHER_CTX_free(evp_); }

Aead::Aead(Aead&& other) noexcept
    : backend_(other.backend_),
      ready_(std::exchange(other.ready_, false)),
      evp_(std::exchange(other.evp_, nullptr)) {}

Aead& Aead::operator=(Aead&& other) noexcept {
  if (this != &other) {
    EVP_CIPHER_CTX_free(evp_);
    backend_ = other.backend_;
    ready_ = std::exchange(other.ready_, false);
    evp_ = std::exchange(other.evp_, nullptr);
  }
  return *this;
}

bool Aead::seal(const uint8_t key[kAeadKeyLen], uint64_t counter, const uint8_t* in, size_t len,
                uint8_t* out) {
  if (!ready_) return false;
  uint8_t nonce[kNonceLen];
  make_nonce(counter, nonce);
  if (backend_ == AeadBackend::openssl) return seal_openssl(key, nonce, in, len, out);
  return crypto_aead_chacha20poly1305_ietf_encrypt_detached(out, out + len, nullptr, in, len,
                                                             nullptr, 0, nullptr, nonce,
                                                             key) == 0;
}

bool Aead::open(const uint8_t key[kAeadKeyLen], uint64_t counter, const uint8_t* in,
                size_t len_with_tag, uint8_t* out) {
  if (!ready_ || len_with_tag < kAeadTagLen) return false;
  const size_t len = len_with_tag - kAeadTagLen;
  uint8_t nonce[kNonceLen];
  make_nonce(counter, nonce);
  if (backend_ == AeadBackend::openssl) return open_openssl(key, nonce, in, len, in + len, out);
  // libsodium verifies the tag before decrypting, so a forgery leaves out untouched.
  return crypto_aead_chacha20poly1305_ietf_decrypt_detached(out, nullptr, in, len, in + len,
                                                             nullptr, 0, nonce, key) == 0;
}

bool Aead::seal_openssl(const uint8_t* key, const uint8_t* nonce, const uint8_t* in, size_t len,
                        uint8_t* out) {
  if (len > size_t(INT_MAX)) return false;  // EVP lengths are int
  int n = 0;
  if (EVP_CipherInit_ex(evp_, nullptr, nullptr, key, nonce, 1) != 1) return false;
  // An empty update is skipped: a keepalive has no payload, and in may then be null.
  if (len > 0 && (EVP_CipherUpdate(evp_, out, &n, in, int(len)) != 1 || size_t(n) != len))
    return false;
  int final_len = 0;
  if (EVP_CipherFinal_ex(evp_, out + len, &final_len) != 1) return false;
  // The tag goes through the params API directly: EVP_CIPHER_CTX_ctrl would only translate the
  // request into this same parameter first.
  OSSL_PARAM tag[] = {
      OSSL_PARAM_construct_octet_string(OSSL_CIPHER_PARAM_AEAD_TAG, out + len, kAeadTagLen),
      OSSL_PARAM_construct_end()};
  return EVP_CIPHER_CTX_get_params(evp_, tag) == 1;
}

bool Aead::open_openssl(const uint8_t* key, const uint8_t* nonce, const uint8_t* in, size_t len,
                        const uint8_t* tag, uint8_t* out) {
  if (len > size_t(INT_MAX)) return false;
  int n = 0;
  if (EVP_CipherInit_ex(evp_, nullptr, nullptr, key, nonce, 0) != 1) return false;
  // The tag is copied into the context, so decrypting in place over the ciphertext is safe.
  // OSSL_PARAM's data pointer is non-const for both directions; setting only reads it.
  OSSL_PARAM expected_tag[] = {
      OSSL_PARAM_construct_octet_string(OSSL_CIPHER_PARAM_AEAD_TAG, const_cast<uint8_t*>(tag),
                                        kAeadTagLen),
      OSSL_PARAM_construct_end()};
  if (EVP_CIPHER_CTX_set_params(evp_, expected_tag) != 1) return false;
  bool ok = len == 0 || (EVP_CipherUpdate(evp_, out, &n, in, int(len)) == 1 && size_t(n) == len);
  int final_len = 0;
  ok = ok && EVP_CipherFinal_ex(evp_, out + len, &final_len) == 1;
  // OpenSSL decrypts before the tag is checked at Final: wipe what a forgery produced so no
  // unauthenticated plaintext outlives the call. Only forged or corrupt packets pay for this.
  if (!ok && len > 0) std::memset(out, 0, len);
  return ok;
}

}  // namespace sluice::crypto
