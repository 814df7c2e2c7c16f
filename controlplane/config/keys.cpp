#include "controlplane/config/keys.h"

#include <fcntl.h>
#include <sodium.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace sluice::config {

namespace {

// Anything longer than a key, its newline and some stray whitespace is not a key file.
constexpr size_t kMaxKeyFile = 256;

bool is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f'; }

int ensure_sodium() {
  static const int rc = sodium_init();
  return rc;
}

}  // namespace

std::optional<Key> parse_key(std::string_view base64) {
  if (base64.size() != kKeyBase64Len) {
    return std::nullopt;
  }
  Key key{};
  size_t len = 0;
  const char* end = nullptr;
  int rc = sodium_base642bin(key.data(), key.size(), base64.data(), base64.size(), nullptr, &len, &end,
                             sodium_base64_VARIANT_ORIGINAL);
  if (rc != 0 || len != key.size() || end != base64.data() + base64.size()) {
    wipe(key);
    return std::nullopt;
  }
  return key;
}

std::string encode_key(const Key& key) {
  char buf[sodium_base64_ENCODED_LEN(32, sodium_base64_VARIANT_ORIGINAL)];
  sodium_bin2base64(buf, sizeof buf, key.data(), key.size(), sodium_base64_VARIANT_ORIGINAL);
  std::string out(buf, kKeyBase64Len);
  sodium_memzero(buf, sizeof buf);
  return out;
}

std::optional<Key> public_key_from_private(const Key& private_key) {
  if (ensure_sodium() < 0) {
    return std::nullopt;
  }
  Key pub{};
  if (crypto_scalarmult_base(pub.data(), private_key.data()) != 0) {
    return std::nullopt;
  }
  return pub;
}

void wipe(Key& key) { sodium_memzero(key.data(), key.size()); }

KeyFileResult read_key_file(const std::string& path) {
  KeyFileResult result;
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    result.error = "cannot read '" + path + "': " + std::strerror(errno);
    return result;
  }
  char buf[kMaxKeyFile + 1];
  size_t used = 0;
  int read_errno = 0;
  while (used < sizeof buf) {
    ssize_t n = read(fd, buf + used, sizeof buf - used);
    if (n < 0) {
      if (errno == EINTR) {
        continue;
      }
      read_errno = errno;
      break;
    }
    if (n == 0) {
      break;
    }
    used += static_cast<size_t>(n);
  }
  close(fd);

  std::string_view text(buf, used);
  if (read_errno != 0) {
    result.error = "cannot read '" + path + "': " + std::strerror(read_errno);
  } else if (used > kMaxKeyFile) {
    result.error = "'" + path + "' is too long to be a key file (expected one base64 key)";
  } else {
    while (!text.empty() && is_space(text.front())) {
      text.remove_prefix(1);
    }
    while (!text.empty() && is_space(text.back())) {
      text.remove_suffix(1);
    }
    if (text.empty()) {
      result.error = "'" + path + "' is empty (expected one base64 key)";
    } else if (text.size() != kKeyBase64Len) {
      result.error = "'" + path + "' does not hold one base64 key (expected " + std::to_string(kKeyBase64Len) +
                     " characters, found " + std::to_string(text.size()) + ")";
    } else if (auto key = parse_key(text)) {
      result.key = *key;
      wipe(*key);
    } else {
      result.error = "'" + path + "' does not hold a valid base64 key";
    }
  }
  sodium_memzero(buf, sizeof buf);
  return result;
}

}  // namespace sluice::config
