#include "controlplane/discovery/registry.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

namespace sluice::discovery {

using nlohmann::json;

const char* to_string(Source s) { return s == Source::kernel ? "kernel" : "port"; }
const char* to_string(Origin o) { return o == Origin::discovered ? "discovered" : "custom"; }

namespace {

config::Prefix from_key(uint64_t k) { return config::Prefix{uint32_t(k >> 8), uint8_t(k & 0xff)}; }

bool seen_less(const auto& a, const auto& b) {
  return a.interface != b.interface ? a.interface < b.interface : a.source < b.source;
}

}  // namespace

void SubnetRegistry::set_custom(std::vector<CustomSubnet> custom) {
  for (auto& c : custom) c.prefix = config::Prefix{c.prefix.network(), c.prefix.len};
  custom_ = std::move(custom);
}

bool SubnetRegistry::update(const std::vector<Observation>& seen, int64_t now_s) {
  std::map<uint64_t, std::vector<Seen>> now;
  for (const auto& o : seen) {
    const uint64_t k = key(o.prefix);
    if (hidden_.count(k)) continue;
    now[k].push_back({o.interface, o.source});
  }
  bool changed = false;
  for (auto& [k, list] : now) {
    std::sort(list.begin(), list.end(), [](const Seen& a, const Seen& b) { return seen_less(a, b); });
    list.erase(std::unique(list.begin(), list.end()), list.end());
    auto [it, inserted] = discovered_.try_emplace(k);
    Entry& e = it->second;
    if (inserted) e.first_seen = now_s;
    if (!e.available || e.seen != list) changed = true;
    e.available = true;
    e.seen = std::move(list);
    e.last_seen = now_s;
  }
  for (auto& [k, e] : discovered_) {
    if (e.available && !now.count(k)) {
      e.available = false;  // keeps where it was last seen, and when
      changed = true;
    }
  }
  return changed;
}

SubnetRegistry::ForgetResult SubnetRegistry::forget(const config::Prefix& prefix) {
  const config::Prefix net{prefix.network(), prefix.len};
  for (const auto& c : custom_)
    if (c.prefix == net) return ForgetResult::custom;
  const uint64_t k = key(net);
  auto it = discovered_.find(k);
  if (it == discovered_.end()) return ForgetResult::unknown;
  const bool available = it->second.available;
  discovered_.erase(it);
  if (!available) return ForgetResult::forgotten;
  hidden_.insert(k);
  return ForgetResult::hidden;
}

size_t SubnetRegistry::unhide_all() {
  const size_t n = hidden_.size();
  hidden_.clear();
  return n;
}

std::vector<KnownSubnet> SubnetRegistry::list() const {
  std::vector<KnownSubnet> out;
  auto fill_seen = [](KnownSubnet& k, const Entry& e) {
    k.available = e.available;
    for (const auto& s : e.seen) {
      k.interfaces.push_back(s.interface);
      k.sources.push_back(s.source);
    }
    k.first_seen = e.first_seen;
    k.last_seen = e.last_seen;
  };
  std::set<uint64_t> shown;
  for (const auto& c : custom_) {
    const uint64_t k = key(c.prefix);
    if (!shown.insert(k).second) continue;
    KnownSubnet s;
    s.prefix = c.prefix;
    s.name = c.name.empty() ? config::to_string(c.prefix) : c.name;
    s.origin = Origin::custom;
    s.preferred = c.preferred;
    // A custom subnet that an interface carries (or carried) has a status; others do not.
    if (auto it = discovered_.find(k); it != discovered_.end()) fill_seen(s, it->second);
    out.push_back(std::move(s));
  }
  for (const auto& [k, e] : discovered_) {
    if (shown.count(k)) continue;
    KnownSubnet s;
    s.prefix = from_key(k);
    s.name = config::to_string(s.prefix);
    s.origin = Origin::discovered;
    fill_seen(s, e);
    out.push_back(std::move(s));
  }
  return out;
}

json SubnetRegistry::to_json() const {
  json subnets = json::array();
  for (const auto& [k, e] : discovered_) {
    json seen = json::array();
    for (const auto& s : e.seen) seen.push_back({{"interface", s.interface}, {"source", to_string(s.source)}});
    subnets.push_back({{"prefix", config::to_string(from_key(k))},
                       {"seen_on", seen},
                       {"first_seen", e.first_seen},
                       {"last_seen", e.last_seen}});
  }
  json hidden = json::array();
  for (uint64_t k : hidden_) hidden.push_back(config::to_string(from_key(k)));
  return {{"version", 1}, {"subnets", subnets}, {"hidden", hidden}};
}

bool SubnetRegistry::from_json(const json& j, std::string* err, size_t* skipped) {
  size_t bad = 0;
  if (!j.is_object() || !j.contains("subnets") || !j["subnets"].is_array()) {
    *err = "not a known-subnets document (no \"subnets\" list)";
    return false;
  }
  const json version = j.value("version", json(nullptr));
  if (!version.is_number_integer() || version.get<int64_t>() != 1) {
    *err = "unsupported version " + version.dump();
    return false;
  }
  std::map<uint64_t, Entry> discovered;
  std::set<uint64_t> hidden;
  auto read_prefix = [](const json& v) -> std::optional<config::Prefix> {
    if (!v.is_string()) return std::nullopt;
    auto p = config::parse_prefix(v.get<std::string>());
    if (!p || p->has_host_bits()) return std::nullopt;
    return p;
  };
  for (const auto& s : j["subnets"]) {
    if (!s.is_object()) {
      ++bad;
      continue;
    }
    auto p = read_prefix(s.value("prefix", json(nullptr)));
    if (!p) {
      ++bad;
      continue;
    }
    Entry e;
    const json fs = s.value("first_seen", json(0)), ls = s.value("last_seen", json(0));
    e.first_seen = fs.is_number_integer() ? fs.get<int64_t>() : 0;
    e.last_seen = ls.is_number_integer() ? ls.get<int64_t>() : 0;
    if (const auto it = s.find("seen_on"); it != s.end() && it->is_array()) {
      for (const auto& o : *it) {
        if (!o.is_object() || !o.value("interface", json(nullptr)).is_string()) continue;
        const json src = o.value("source", json(nullptr));
        const bool port = src.is_string() && src.get<std::string>() == "port";
        e.seen.push_back({o["interface"].get<std::string>(), port ? Source::port : Source::kernel});
      }
      std::sort(e.seen.begin(), e.seen.end(), [](const Seen& a, const Seen& b) { return seen_less(a, b); });
      e.seen.erase(std::unique(e.seen.begin(), e.seen.end()), e.seen.end());
    }
    discovered[key(*p)] = std::move(e);
  }
  if (const auto it = j.find("hidden"); it != j.end() && it->is_array()) {
    for (const auto& h : *it) {
      if (auto p = read_prefix(h)) hidden.insert(key(*p));
      else ++bad;
    }
  }
  discovered_ = std::move(discovered);
  hidden_ = std::move(hidden);
  if (skipped) *skipped = bad;
  return true;
}

bool SubnetRegistry::save(const std::string& path, std::string* err) const {
  const std::string text = to_json().dump(2) + "\n";
  const std::string tmp = path + ".tmp";
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
  if (fd < 0) {
    *err = tmp + ": " + std::strerror(errno);
    return false;
  }
  size_t off = 0;
  while (off < text.size()) {
    const ssize_t n = ::write(fd, text.data() + off, text.size() - off);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      *err = tmp + ": " + std::strerror(errno);
      ::close(fd);
      ::unlink(tmp.c_str());
      return false;
    }
    off += size_t(n);
  }
  // The rename must not expose a file whose data is not on disk yet.
  if (::fsync(fd) != 0 || ::close(fd) != 0) {
    *err = tmp + ": " + std::strerror(errno);
    ::unlink(tmp.c_str());
    return false;
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    *err = path + ": " + std::strerror(errno);
    ::unlink(tmp.c_str());
    return false;
  }
  return true;
}

bool SubnetRegistry::load(const std::string& path, std::string* err, size_t* skipped) {
  std::ifstream in(path);
  if (!in) {
    if (errno == ENOENT) {
      discovered_.clear();
      hidden_.clear();
      if (skipped) *skipped = 0;
      return true;
    }
    *err = path + ": " + std::strerror(errno);
    return false;
  }
  std::stringstream ss;
  ss << in.rdbuf();
  const json j = json::parse(ss.str(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) {
    *err = path + ": not valid JSON";
    return false;
  }
  if (!from_json(j, err, skipped)) {
    *err = path + ": " + *err;
    return false;
  }
  return true;
}

bool ensure_directory(const std::string& path, std::string* err) {
  if (path.empty()) {
    *err = "empty directory name";
    return false;
  }
  std::string cur;
  size_t pos = 0;
  while (pos != std::string::npos) {
    pos = path.find('/', pos + 1);
    cur = path.substr(0, pos);
    if (cur.empty() || cur == "/") continue;
    if (::mkdir(cur.c_str(), 0750) != 0 && errno != EEXIST) {
      *err = cur + ": " + std::strerror(errno);
      return false;
    }
  }
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
    *err = path + ": not a directory";
    return false;
  }
  return true;
}

std::string state_file(const std::string& state_dir) {
  std::string d = state_dir;
  while (d.size() > 1 && d.back() == '/') d.pop_back();
  return d + "/known_subnets.json";
}

}  // namespace sluice::discovery
