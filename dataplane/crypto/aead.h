// The transport-data AEAD (WireGuard whitepaper 5.4.6): ChaCha20-Poly1305 as in RFC 8439, with the
// 96-bit nonce made of four zero bytes and the 64-bit little-endian message counter, and no
// associated data. Two implementations sit behind one seam so each appliance can run the one
// measured fastest on its CPU (bench/crypto) and the other stays available as a cross-check.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string_view>

// OpenSSL's EVP_CIPHER_CTX; declared here so users of this header do not pull in OpenSSL.
struct evp_cipher_ctx_st;

namespace sluice::crypto {

inline constexpr size_t kAeadKeyLen = 32;
inline constexpr size_t kAeadTagLen = 16;

enum class AeadBackend : uint8_t { openssl, sodium };

// "openssl" or "sodium": the spelling parse_backend accepts and the config file uses.
const char* backend_name(AeadBackend backend);
std::optional<AeadBackend> parse_backend(std::string_view name);

// OpenSSL 3 EVP. Its assembly ChaCha20 and Poly1305 make it the faster one on full-MTU packets,
// which carry most of the bytes. Below about 1 KB its fixed
// per-call EVP cost (provider parameter look-ups in init, final and the tag) outweighs that, and
// libsodium is faster on small packets: bench/crypto measures both on the target CPU.
AeadBackend default_backend();

// One per worker lcore: not thread-safe. For the OpenSSL backend it owns a cipher context that
// is created once and only re-keyed per packet, so the per-packet path neither allocates nor
// looks up the algorithm; ChaCha20 key setup is a copy, so re-keying per call costs nothing
// against the cipher work, and one context serves every peer's keys.
class Aead {
 public:
  explicit Aead(AeadBackend backend = default_backend());
  ~Aead();
  Aead(const Aead&) = delete;
  Aead& operator=(const Aead&) = delete;
  Aead(Aead&& other) noexcept;
  Aead& operator=(Aead&& other) noexcept;

  AeadBackend backend() const { return backend_; }

  // False if the backend could not be set up (out of memory, libsodium refused to start);
  // seal and open then fail every call rather than touching a missing context.
  bool ready() const { return ready_; }

  // Encrypts len bytes from in and writes the ciphertext followed by the 16-byte tag at out
  // (len + 16 bytes). out may equal in; any other overlap is not allowed. False on internal error.
  bool seal(const uint8_t key[kAeadKeyLen], uint64_t counter, const uint8_t* in, size_t len,
            uint8_t* out);

  // in holds ciphertext followed by its tag (len_with_tag >= 16); writes len_with_tag - 16 bytes
  // of plaintext at out, which may equal in. False on authentication failure (or a too short
  // input): out then holds no plaintext and the packet must be dropped.
  bool open(const uint8_t key[kAeadKeyLen], uint64_t counter, const uint8_t* in,
            size_t len_with_tag, uint8_t* out);

 private:
  bool seal_openssl(const uint8_t* key, const uint8_t* nonce, const uint8_t* in, size_t len,
                    uint8_t* out);
  bool open_openssl(const uint8_t* key, const uint8_t* nonce, const uint8_t* in, size_t len,
                    const uint8_t* tag, uint8_t* out);

  AeadBackend backend_;
  bool ready_ = false;
  evp_cipher_ctx_st* evp_ = nullptr;  // OpenSSL backend only
};

}  // namespace sluice::crypto
