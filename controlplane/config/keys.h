// Curve25519 keys as WireGuard tools write them: 32 bytes, standard base64 with padding (44 characters).
// Key material is never put in an error message; buffers that held it are wiped.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace sluice::config {

using Key = std::array<uint8_t, 32>;

inline constexpr size_t kKeyBase64Len = 44;

// Exactly 44 characters of standard base64 (sodium_base64_VARIANT_ORIGINAL) decoding to 32 bytes.
std::optional<Key> parse_key(std::string_view base64);
// The 44-character form `wg genkey` / `wg pubkey` print.
std::string encode_key(const Key& key);
// The Curve25519 public key of a private key (clamped as WireGuard does); nullopt for a degenerate key.
std::optional<Key> public_key_from_private(const Key& private_key);
// Overwrites a key in a way the compiler keeps.
void wipe(Key& key);

struct KeyFileResult {
  std::optional<Key> key;
  std::string error;  // when !key: what is wrong, naming the file but never its contents
};

// A file holding one base64 key; whitespace (a trailing newline) around it is allowed.
KeyFileResult read_key_file(const std::string& path);

}  // namespace sluice::config
