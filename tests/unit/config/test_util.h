// Temporary directories and key files for the config tests.
#pragma once

#include <sodium.h>
#include <stdlib.h>

#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <string>

#include "controlplane/config/keys.h"

namespace sluice::config::test {

class TempDir {
 public:
  TempDir() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "sluice-config-XXXXXX").string();
    if (mkdtemp(tmpl.data()) == nullptr) {
      throw std::runtime_error("mkdtemp failed");
    }
    path_ = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const std::string& path() const { return path_; }
  std::string file(const std::string& name) const { return path_ + "/" + name; }
  std::string write(const std::string& name, const std::string& content) const {
    std::string p = file(name);
    std::ofstream(p, std::ios::binary) << content;
    return p;
  }

 private:
  std::string path_;
};

inline Key random_key() {
  if (sodium_init() < 0) {
    throw std::runtime_error("sodium_init failed");
  }
  Key k;
  randombytes_buf(k.data(), k.size());
  return k;
}

// A key file as `wg genkey` writes it: the base64 key and a newline.
inline std::string write_key(const TempDir& dir, const std::string& name, const Key& key) {
  return dir.write(name, encode_key(key) + "\n");
}

}  // namespace sluice::config::test
