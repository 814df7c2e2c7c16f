#include "controlplane/config/reader.h"

#include <algorithm>
#include <charconv>

namespace sluice::config::detail {

void Diag::error(const YAML::Mark& mark, std::string message) {
  bool null = mark.is_null() || mark.line < 0 || mark.column < 0;
  errors_.push_back(Error{file_, null ? 1 : mark.line + 1, null ? 1 : mark.column + 1, std::move(message)});
}

std::vector<Error> Diag::take() {
  std::stable_sort(errors_.begin(), errors_.end(), [](const Error& a, const Error& b) {
    return a.line != b.line ? a.line < b.line : a.column < b.column;
  });
  return std::move(errors_);
}

namespace {

// Optimal string alignment distance: Levenshtein plus adjacent transpositions ("prot" vs "port" is one edit).
size_t edit_distance(std::string_view a, std::string_view b) {
  std::vector<std::vector<size_t>> d(a.size() + 1, std::vector<size_t>(b.size() + 1));
  for (size_t i = 0; i <= a.size(); i++) {
    d[i][0] = i;
  }
  for (size_t j = 0; j <= b.size(); j++) {
    d[0][j] = j;
  }
  for (size_t i = 1; i <= a.size(); i++) {
    for (size_t j = 1; j <= b.size(); j++) {
      size_t cost = a[i - 1] == b[j - 1] ? 0 : 1;
      d[i][j] = std::min({d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost});
      if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1]) {
        d[i][j] = std::min(d[i][j], d[i - 2][j - 2] + 1);
      }
    }
  }
  return d[a.size()][b.size()];
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) {
    s.remove_prefix(1);
  }
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) {
    s.remove_suffix(1);
  }
  return s;
}

bool is_scalar(Diag& d, const YAML::Node& n, const std::string& path, const char* expected) {
  if (n.IsScalar()) {
    return true;
  }
  d.error(n.Mark(), path + ": expected " + expected + ", got " + describe_type(n));
  return false;
}

std::string quoted(std::string_view s) { return "'" + std::string(s) + "'"; }

}  // namespace

std::optional<std::string> did_you_mean(std::string_view word, const std::vector<std::string_view>& candidates) {
  std::optional<std::string> best;
  size_t best_distance = 0;
  for (auto c : candidates) {
    size_t dist = edit_distance(word, c);
    if (!best || dist < best_distance) {
      best = std::string(c);
      best_distance = dist;
    }
  }
  // Close enough: up to a third of the word, at least one edit, at most three.
  size_t limit = std::clamp<size_t>(word.size() / 3, 1, 3);
  if (!best || best_distance == 0 || best_distance > limit) {
    return std::nullopt;
  }
  return best;
}

std::string describe_type(const YAML::Node& n) {
  switch (n.Type()) {
    case YAML::NodeType::Null:
    case YAML::NodeType::Undefined:
      return "nothing";
    case YAML::NodeType::Scalar:
      return quoted(n.Scalar());
    case YAML::NodeType::Sequence:
      return "a sequence";
    case YAML::NodeType::Map:
      return "a mapping";
  }
  return "something else";
}

Section::Section(Diag& diag, const YAML::Node& node, std::string path, std::vector<std::string_view> known)
    : diag_(diag), path_(std::move(path)), mark_(node.Mark()) {
  if (node.IsNull() || !node.IsDefined()) {
    is_map_ = true;
    return;
  }
  if (!node.IsMap()) {
    diag_.error(node.Mark(), (path_.empty() ? std::string("the configuration") : path_) +
                                 ": expected a mapping, got " + describe_type(node));
    return;
  }
  is_map_ = true;
  for (auto it = node.begin(); it != node.end(); ++it) {
    const YAML::Node key = it->first;
    if (!key.IsScalar()) {
      diag_.error(key.Mark(), "a key in " + path_ + " is " + describe_type(key) + " (expected a name)");
      continue;
    }
    const std::string& name = key.Scalar();
    if (std::find(known.begin(), known.end(), name) == known.end()) {
      std::string where = path_.empty() ? "unknown top-level key " + quoted(name)
                                        : "unknown key " + quoted(name) + " in " + path_;
      if (auto hint = did_you_mean(name, known)) {
        where += " (did you mean " + quoted(*hint) + "?)";
      }
      diag_.error(key.Mark(), where);
      continue;
    }
    if (const Entry* first = find(name)) {
      diag_.error(key.Mark(), "duplicate key " + quoted(name) + (path_.empty() ? "" : " in " + path_) +
                                  " (first at line " + std::to_string(first->key.Mark().line + 1) + ")");
      continue;
    }
    entries_.push_back(Entry{name, key, it->second});
  }
}

std::string Section::path(std::string_view key) const {
  return path_.empty() ? std::string(key) : path_ + "." + std::string(key);
}

const Section::Entry* Section::find(std::string_view key) const {
  for (const Entry& e : entries_) {
    if (e.name == key) {
      return &e;
    }
  }
  return nullptr;
}

std::optional<YAML::Node> Section::get(std::string_view key) const {
  const Entry* e = find(key);
  if (e == nullptr || e->value.IsNull()) {
    return std::nullopt;
  }
  return e->value;
}

std::optional<YAML::Node> Section::require(std::string_view key) const {
  auto v = get(key);
  if (!v && is_map_) {
    const Entry* e = find(key);
    if (e != nullptr) {
      diag_.error(e->key.Mark(), path(key) + ": required, but has no value");
    } else if (path_.empty()) {
      diag_.error(mark_, "missing required section " + quoted(key));
    } else {
      diag_.error(mark_, path_ + ": missing required key " + quoted(key));
    }
  }
  return v;
}

YAML::Mark Section::mark(std::string_view key) const {
  const Entry* e = find(key);
  if (e == nullptr) {
    return mark_;
  }
  return e->value.IsNull() ? e->key.Mark() : e->value.Mark();
}

std::optional<std::string> read_string(Diag& d, const YAML::Node& n, const std::string& path) {
  if (!is_scalar(d, n, path, "a string")) {
    return std::nullopt;
  }
  return n.Scalar();
}

std::optional<uint64_t> read_uint(Diag& d, const YAML::Node& n, const std::string& path, uint64_t lo, uint64_t hi) {
  if (!is_scalar(d, n, path, "an integer")) {
    return std::nullopt;
  }
  std::string_view s = n.Scalar();
  bool negative = !s.empty() && s[0] == '-';
  std::string_view digits = negative ? s.substr(1) : s;
  uint64_t v = 0;
  auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), v);
  bool all = !digits.empty() && end == digits.data() + digits.size();
  if (!all || (ec != std::errc() && ec != std::errc::result_out_of_range)) {
    d.error(n.Mark(), path + ": expected an integer, got " + quoted(s));
    return std::nullopt;
  }
  if (negative || ec == std::errc::result_out_of_range || v < lo || v > hi) {
    d.error(n.Mark(), path + ": " + std::string(s) + " is out of range (" + std::to_string(lo) + ".." +
                          std::to_string(hi) + ")");
    return std::nullopt;
  }
  return v;
}

std::optional<uint16_t> read_port(Diag& d, const YAML::Node& n, const std::string& path) {
  if (!is_scalar(d, n, path, "a port number")) {
    return std::nullopt;
  }
  std::string_view s = n.Scalar();
  if (s.empty() || s.find_first_not_of("0123456789") != std::string_view::npos) {
    d.error(n.Mark(), path + ": expected a port number, got " + quoted(s));
    return std::nullopt;
  }
  auto p = parse_port(s);
  if (!p || *p == 0) {
    d.error(n.Mark(), path + ": port " + std::string(s) + " out of range (1..65535)");
    return std::nullopt;
  }
  return p;
}

std::optional<bool> read_bool(Diag& d, const YAML::Node& n, const std::string& path) {
  if (!is_scalar(d, n, path, "true or false")) {
    return std::nullopt;
  }
  static const std::vector<std::string_view> yes = {"true", "True", "TRUE", "yes", "Yes", "YES", "on", "On", "ON"};
  static const std::vector<std::string_view> no = {"false", "False", "FALSE", "no", "No", "NO", "off", "Off", "OFF"};
  const std::string& s = n.Scalar();
  if (std::find(yes.begin(), yes.end(), s) != yes.end()) {
    return true;
  }
  if (std::find(no.begin(), no.end(), s) != no.end()) {
    return false;
  }
  d.error(n.Mark(), path + ": expected true or false, got " + quoted(s));
  return std::nullopt;
}

std::optional<uint32_t> read_ipv4(Diag& d, const YAML::Node& n, const std::string& path) {
  if (!is_scalar(d, n, path, "an IPv4 address")) {
    return std::nullopt;
  }
  const std::string& s = n.Scalar();
  auto a = parse_ipv4(s);
  if (!a) {
    std::string hint = s.find('/') != std::string::npos ? " (a single address, without /len)" : "";
    d.error(n.Mark(), path + ": bad IPv4 address " + quoted(s) + hint);
  }
  return a;
}

std::optional<Prefix> read_prefix(Diag& d, const YAML::Node& n, const std::string& path, PrefixKind kind) {
  if (!is_scalar(d, n, path, "a CIDR prefix")) {
    return std::nullopt;
  }
  const std::string& s = n.Scalar();
  std::optional<Prefix> p;
  if (kind == PrefixKind::network_or_host && s.find('/') == std::string::npos) {
    if (auto a = parse_ipv4(s)) {
      p = Prefix{*a, 32};
    }
  } else {
    p = parse_prefix(s);
  }
  if (!p) {
    std::string expect = kind == PrefixKind::network_or_host ? "an address or a CIDR prefix like 192.0.2.0/24"
                         : kind == PrefixKind::interface     ? "an address with its length, like 192.0.2.1/24"
                                                             : "a CIDR prefix like 192.0.2.0/24";
    d.error(n.Mark(), path + ": bad IPv4 address or CIDR prefix " + quoted(s) + " (expected " + expect + ")");
    return std::nullopt;
  }
  if (kind == PrefixKind::interface && p->len == 0) {
    d.error(n.Mark(), path + ": interface address " + quoted(s) + " needs a prefix length of 1..32");
    return std::nullopt;
  }
  if (kind != PrefixKind::interface && p->has_host_bits()) {
    d.error(n.Mark(), path + ": prefix " + s + " has host bits set (did you mean " +
                          to_string(Prefix{p->network(), p->len}) + "?)");
    return std::nullopt;
  }
  return p;
}

std::optional<SockAddr> read_sockaddr(Diag& d, const YAML::Node& n, const std::string& path,
                                      std::optional<uint16_t> default_port) {
  if (!is_scalar(d, n, path, "an address:port")) {
    return std::nullopt;
  }
  std::string_view s = n.Scalar();
  size_t colon = s.rfind(':');
  if (colon == std::string_view::npos && !default_port) {
    d.error(n.Mark(), path + ": expected address:port, got " + quoted(s));
    return std::nullopt;
  }
  std::string_view host = s.substr(0, colon);
  auto a = parse_ipv4(host);
  if (!a) {
    d.error(n.Mark(), path + ": bad IPv4 address " + quoted(host));
    return std::nullopt;
  }
  if (colon == std::string_view::npos) {
    return SockAddr{*a, *default_port};
  }
  std::string_view port = s.substr(colon + 1);
  if (port.empty() || port.find_first_not_of("0123456789") != std::string_view::npos) {
    d.error(n.Mark(), path + ": bad port " + quoted(port));
    return std::nullopt;
  }
  auto p = parse_port(port);
  if (!p || *p == 0) {
    d.error(n.Mark(), path + ": port " + std::string(port) + " out of range (1..65535)");
    return std::nullopt;
  }
  return SockAddr{*a, *p};
}

std::optional<AddrRange> read_addr_range(Diag& d, const YAML::Node& n, const std::string& path) {
  if (!is_scalar(d, n, path, "an address, a range or a CIDR prefix")) {
    return std::nullopt;
  }
  const std::string& s = n.Scalar();
  if (s.find('/') != std::string::npos) {
    auto p = read_prefix(d, n, path, PrefixKind::network);
    if (!p) {
      return std::nullopt;
    }
    return AddrRange{p->network(), p->broadcast()};
  }
  size_t dash = s.find('-');
  std::string_view sv = s;
  auto first = parse_ipv4(trim(sv.substr(0, dash)));
  auto last = dash == std::string::npos ? first : parse_ipv4(trim(sv.substr(dash + 1)));
  if (!first || !last) {
    d.error(n.Mark(), path + ": bad IPv4 address, range or CIDR prefix " + quoted(s));
    return std::nullopt;
  }
  if (*first > *last) {
    d.error(n.Mark(), path + ": range " + s + " ends before it starts");
    return std::nullopt;
  }
  return AddrRange{*first, *last};
}

std::optional<std::vector<PortRange>> read_port_ranges(Diag& d, const YAML::Node& n, const std::string& path) {
  std::vector<PortRange> out;
  bool ok = true;
  auto one = [&](const YAML::Node& e, const std::string& p) {
    if (!is_scalar(d, e, p, "a port or a range lo-hi")) {
      ok = false;
      return;
    }
    std::string_view s = e.Scalar();
    size_t dash = s.find('-');
    std::string_view lo_s = trim(s.substr(0, dash));
    std::string_view hi_s = dash == std::string_view::npos ? lo_s : trim(s.substr(dash + 1));
    for (auto part : {lo_s, hi_s}) {
      if (part.empty() || part.find_first_not_of("0123456789") != std::string_view::npos) {
        d.error(e.Mark(), p + ": expected a port or a range lo-hi, got " + quoted(s));
        ok = false;
        return;
      }
    }
    auto lo = parse_port(lo_s);
    auto hi = parse_port(hi_s);
    for (auto [v, text] : {std::pair{lo, lo_s}, std::pair{hi, hi_s}}) {
      if (!v || *v == 0) {
        d.error(e.Mark(), p + ": port " + std::string(text) + " out of range (1..65535)");
        ok = false;
        return;
      }
    }
    if (*lo > *hi) {
      d.error(e.Mark(), p + ": port range " + std::string(s) + " ends before it starts");
      ok = false;
      return;
    }
    out.push_back(PortRange{*lo, *hi});
  };
  if (n.IsSequence()) {
    read_list(d, n, path, one);
  } else {
    one(n, path);
  }
  if (!ok) {
    return std::nullopt;
  }
  return out;
}

std::optional<size_t> read_choice(Diag& d, const YAML::Node& n, const std::string& path,
                                  const std::vector<std::string_view>& names) {
  std::string expected;
  for (auto name : names) {
    expected += (expected.empty() ? "" : " | ") + std::string(name);
  }
  if (!is_scalar(d, n, path, ("one of " + expected).c_str())) {
    return std::nullopt;
  }
  const std::string& s = n.Scalar();
  for (size_t i = 0; i < names.size(); i++) {
    if (names[i] == s) {
      return i;
    }
  }
  d.error(n.Mark(), path + ": bad value " + quoted(s) + " (expected " + expected + ")");
  return std::nullopt;
}

bool read_list(Diag& d, const YAML::Node& n, const std::string& path,
               const std::function<void(const YAML::Node&, const std::string&)>& each) {
  if (!n.IsSequence()) {
    d.error(n.Mark(), path + ": expected a sequence, got " + describe_type(n));
    return false;
  }
  size_t i = 0;
  for (auto it = n.begin(); it != n.end(); ++it, ++i) {
    each(*it, path + "[" + std::to_string(i) + "]");
  }
  return true;
}

std::optional<std::vector<std::string>> read_string_list(Diag& d, const YAML::Node& n, const std::string& path) {
  std::vector<std::string> out;
  bool elements_ok = true;
  bool is_list = read_list(d, n, path, [&](const YAML::Node& e, const std::string& p) {
    if (auto s = read_string(d, e, p)) {
      out.push_back(std::move(*s));
    } else {
      elements_ok = false;
    }
  });
  if (!is_list || !elements_ok) {
    return std::nullopt;
  }
  return out;
}

}  // namespace sluice::config::detail
