// Internal to the config loader: reading YAML nodes into typed values while collecting errors
// that point at the offending node. Nothing here throws; a failed read reports and returns nullopt.
#pragma once

#include <yaml-cpp/yaml.h>

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "controlplane/config/address.h"
#include "controlplane/config/config.h"

namespace sluice::config::detail {

class Diag {
 public:
  explicit Diag(std::string file) : file_(std::move(file)) {}
  // Marks are 0-based (yaml-cpp); errors are 1-based. A null mark becomes 1:1.
  void error(const YAML::Mark& mark, std::string message);
  std::vector<Error> take();
  bool empty() const { return errors_.empty(); }

 private:
  std::string file_;
  std::vector<Error> errors_;
};

// Closest candidate by edit distance, when close enough to be a likely typo.
std::optional<std::string> did_you_mean(std::string_view word, const std::vector<std::string_view>& candidates);

// A YAML mapping whose keys are checked against the ones its section knows.
// A null node reads as an empty mapping; anything else that is not a mapping is reported.
class Section {
 public:
  Section(Diag& diag, const YAML::Node& node, std::string path, std::vector<std::string_view> known);

  bool is_map() const { return is_map_; }
  const std::string& path() const { return path_; }
  std::string path(std::string_view key) const;
  YAML::Mark mark() const { return mark_; }
  Diag& diag() const { return diag_; }

  // The value of `key`, or nullopt when absent or null (an explicit null is the same as leaving the key out).
  std::optional<YAML::Node> get(std::string_view key) const;
  // As get(), but reports "missing required key" at the mapping when there is no value.
  std::optional<YAML::Node> require(std::string_view key) const;
  // Where to point at `key`: its value, or the key itself when the value is null.
  YAML::Mark mark(std::string_view key) const;

 private:
  struct Entry {
    std::string name;
    YAML::Node key;
    YAML::Node value;
  };
  const Entry* find(std::string_view key) const;

  Diag& diag_;
  std::string path_;
  YAML::Mark mark_;
  bool is_map_ = false;
  std::vector<Entry> entries_;
};

// Scalar readers: `path` names the value in messages ("gateway.listen_port").
std::optional<std::string> read_string(Diag& d, const YAML::Node& n, const std::string& path);
std::optional<uint64_t> read_uint(Diag& d, const YAML::Node& n, const std::string& path, uint64_t lo, uint64_t hi);
std::optional<uint16_t> read_port(Diag& d, const YAML::Node& n, const std::string& path);
std::optional<bool> read_bool(Diag& d, const YAML::Node& n, const std::string& path);
std::optional<uint32_t> read_ipv4(Diag& d, const YAML::Node& n, const std::string& path);

enum class PrefixKind {
  interface,  // "a.b.c.d/len", len 1..32, host bits kept
  network,    // "a.b.c.d/len", no host bits
  network_or_host,  // as network, and a bare address means /32
};
std::optional<Prefix> read_prefix(Diag& d, const YAML::Node& n, const std::string& path, PrefixKind kind);
// "a.b.c.d:port"; with default_port set the ":port" part may be left out.
std::optional<SockAddr> read_sockaddr(Diag& d, const YAML::Node& n, const std::string& path,
                                      std::optional<uint16_t> default_port = std::nullopt);
// An address, "a-b" or a CIDR block.
std::optional<AddrRange> read_addr_range(Diag& d, const YAML::Node& n, const std::string& path);
// A port, "lo-hi", or a list of those.
std::optional<std::vector<PortRange>> read_port_ranges(Diag& d, const YAML::Node& n, const std::string& path);

template <typename E>
using EnumNames = std::vector<std::pair<std::string_view, E>>;

std::optional<size_t> read_choice(Diag& d, const YAML::Node& n, const std::string& path,
                                  const std::vector<std::string_view>& names);

template <typename E>
std::optional<E> read_enum(Diag& d, const YAML::Node& n, const std::string& path, const EnumNames<E>& names) {
  std::vector<std::string_view> spellings;
  for (const auto& [name, value] : names) {
    spellings.push_back(name);
  }
  auto i = read_choice(d, n, path, spellings);
  if (!i) {
    return std::nullopt;
  }
  return names[*i].second;
}

// A sequence: calls `each(element, "path[i]")` for every element. False when `n` is not a sequence.
bool read_list(Diag& d, const YAML::Node& n, const std::string& path,
               const std::function<void(const YAML::Node&, const std::string&)>& each);
std::optional<std::vector<std::string>> read_string_list(Diag& d, const YAML::Node& n, const std::string& path);

std::string describe_type(const YAML::Node& n);  // "a sequence", "a mapping", ...

}  // namespace sluice::config::detail
