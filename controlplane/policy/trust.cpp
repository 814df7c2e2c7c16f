#include "controlplane/policy/trust.h"

#include <algorithm>
#include <cctype>
#include <climits>
#include <ctime>

namespace sluice::policy {

// --- Attestations ----------------------------------------------------------------------------

void Attestations::set(const std::string& peer, const std::string& name, int64_t now_ns, int64_t expires_ns) {
  entries_[{peer, name}] = Entry{now_ns, expires_ns};
  recompute_next();
}

bool Attestations::revoke(const std::string& peer, const std::string& name) {
  const bool erased = entries_.erase({peer, name}) > 0;
  if (erased) recompute_next();
  return erased;
}

std::vector<Attestations::Key> Attestations::expire(int64_t now_ns) {
  std::vector<Key> gone;
  if (now_ns < next_expiry_) return gone;
  for (auto it = entries_.begin(); it != entries_.end();) {
    if (it->second.expires_ns != 0 && it->second.expires_ns <= now_ns) {
      gone.push_back(it->first);
      it = entries_.erase(it);
    } else {
      ++it;
    }
  }
  recompute_next();
  return gone;
}

bool Attestations::holds(const std::string& peer, const std::string& name, int64_t now_ns) const {
  const Entry* e = find(peer, name);
  return e != nullptr && (e->expires_ns == 0 || now_ns < e->expires_ns);
}

const Attestations::Entry* Attestations::find(const std::string& peer, const std::string& name) const {
  auto it = entries_.find({peer, name});
  return it == entries_.end() ? nullptr : &it->second;
}

void Attestations::recompute_next() {
  next_expiry_ = INT64_MAX;
  for (const auto& [key, e] : entries_)
    if (e.expires_ns != 0) next_expiry_ = std::min(next_expiry_, e.expires_ns);
}

// --- Requirements ----------------------------------------------------------------------------

bool configured_attribute(const config::Peer& peer, const std::string& name) {
  auto it = peer.attributes.find(name);
  return it != peer.attributes.end() && it->second == config::AttributeValue(true);
}

bool attribute_holds(const PeerFacts& f, const std::string& name) {
  if (f.peer != nullptr && configured_attribute(*f.peer, name)) return true;
  return f.peer != nullptr && f.attestations != nullptr && f.attestations->holds(f.peer->name, name, f.now_ns);
}

namespace {

bool source_holds(const config::TrustRequirements& r, const PeerFacts& f) {
  if (r.source_ips.empty()) return true;
  if (!f.endpoint_addr) return false;
  return std::any_of(r.source_ips.begin(), r.source_ips.end(),
                     [&](const config::Prefix& p) { return p.contains(*f.endpoint_addr); });
}

std::string list_text(const std::vector<std::string>& v) {
  std::string s = "[";
  for (size_t i = 0; i < v.size(); ++i) s += (i ? ", " : "") + v[i];
  return s + "]";
}

std::string prefixes_text(const std::vector<config::Prefix>& v) {
  std::vector<std::string> parts;
  for (const auto& p : v) parts.push_back(config::to_string(p));
  return list_text(parts);
}

}  // namespace

bool requirement_holds(const config::TrustRequirements& r, const PeerFacts& f) {
  if (!source_holds(r, f)) return false;
  return std::all_of(r.attributes.begin(), r.attributes.end(),
                     [&](const std::string& a) { return attribute_holds(f, a); });
}

std::string requirement_unmet(const config::TrustRequirements& r, const PeerFacts& f) {
  std::vector<std::string> why;
  if (!source_holds(r, f)) {
    why.push_back("requires source_ips " + prefixes_text(r.source_ips) + "; peer endpoint " +
                  (f.endpoint_addr ? config::to_string(*f.endpoint_addr) + " is outside" : std::string("is unknown")));
  }
  std::vector<std::string> missing;
  for (const auto& a : r.attributes)
    if (!attribute_holds(f, a)) missing.push_back(a);
  if (!missing.empty()) {
    why.push_back("requires attributes " + list_text(r.attributes) + "; " + list_text(missing) +
                  (missing.size() == 1 ? " is" : " are") + " not attested for peer '" +
                  (f.peer ? f.peer->name : std::string("?")) + "'");
  }
  std::string out;
  for (size_t i = 0; i < why.size(); ++i) out += (i ? "; and " : "") + why[i];
  return out;
}

std::string requirement_text(const config::TrustRequirements& r) {
  std::string s;
  if (!r.source_ips.empty()) s = "source_ips " + prefixes_text(r.source_ips);
  if (!r.attributes.empty()) s += (s.empty() ? "" : ", ") + std::string("attributes ") + list_text(r.attributes);
  return s;
}

bool requirement_empty(const config::TrustRequirements& r) { return r.source_ips.empty() && r.attributes.empty(); }

// --- Times -----------------------------------------------------------------------------------

std::optional<int64_t> parse_duration(std::string_view s) {
  if (s.empty()) return std::nullopt;
  int64_t total = 0;
  size_t i = 0;
  while (i < s.size()) {
    if (!std::isdigit(static_cast<unsigned char>(s[i]))) return std::nullopt;
    int64_t n = 0;
    while (i < s.size() && std::isdigit(static_cast<unsigned char>(s[i]))) {
      n = n * 10 + (s[i] - '0');
      if (n > 1'000'000'000) return std::nullopt;
      ++i;
    }
    std::string_view unit;
    const size_t u = i;
    while (i < s.size() && std::isalpha(static_cast<unsigned char>(s[i]))) ++i;
    unit = s.substr(u, i - u);
    int64_t scale = 0;
    if (unit == "ms") scale = 1'000'000;
    else if (unit == "s") scale = 1'000'000'000;
    else if (unit == "m") scale = 60'000'000'000;
    else if (unit == "h") scale = 3'600'000'000'000;
    else if (unit == "d") scale = 86'400'000'000'000;
    else return std::nullopt;
    if (n > (INT64_MAX - total) / scale) return std::nullopt;
    total += n * scale;
  }
  if (total <= 0) return std::nullopt;
  return total;
}

std::optional<int64_t> parse_rfc3339(std::string_view s) {
  auto num = [&](size_t pos, size_t len, int* out) {
    if (pos + len > s.size()) return false;
    int v = 0;
    for (size_t i = pos; i < pos + len; ++i) {
      if (!std::isdigit(static_cast<unsigned char>(s[i]))) return false;
      v = v * 10 + (s[i] - '0');
    }
    *out = v;
    return true;
  };
  int Y, M, D, h, m, sec;
  if (!num(0, 4, &Y) || s.size() < 19 || s[4] != '-' || !num(5, 2, &M) || s[7] != '-' || !num(8, 2, &D) ||
      (s[10] != 'T' && s[10] != 't' && s[10] != ' ') || !num(11, 2, &h) || s[13] != ':' || !num(14, 2, &m) ||
      s[16] != ':' || !num(17, 2, &sec))
    return std::nullopt;
  if (M < 1 || M > 12 || D < 1 || D > 31 || h > 23 || m > 59 || sec > 60) return std::nullopt;
  size_t i = 19;
  int64_t frac_ns = 0;
  if (i < s.size() && s[i] == '.') {
    ++i;
    int64_t scale = 100'000'000;
    const size_t start = i;
    while (i < s.size() && std::isdigit(static_cast<unsigned char>(s[i]))) {
      frac_ns += (s[i] - '0') * scale;
      scale /= 10;
      ++i;
    }
    if (i == start) return std::nullopt;
  }
  int64_t offset_s = 0;
  if (i < s.size() && (s[i] == 'Z' || s[i] == 'z')) {
    ++i;
  } else if (i < s.size() && (s[i] == '+' || s[i] == '-')) {
    int oh, om;
    if (!num(i + 1, 2, &oh) || i + 3 >= s.size() || s[i + 3] != ':' || !num(i + 4, 2, &om) || oh > 23 || om > 59)
      return std::nullopt;
    offset_s = (oh * 3600 + om * 60) * (s[i] == '+' ? 1 : -1);
    i += 6;
  } else {
    return std::nullopt;
  }
  if (i != s.size()) return std::nullopt;
  std::tm tm{};
  tm.tm_year = Y - 1900;
  tm.tm_mon = M - 1;
  tm.tm_mday = D;
  tm.tm_hour = h;
  tm.tm_min = m;
  tm.tm_sec = sec;
  const time_t t = timegm(&tm);
  if (tm.tm_mday != D) return std::nullopt;  // 2026-02-31 normalised into March
  return (int64_t(t) - offset_s) * 1'000'000'000 + frac_ns;
}

std::string format_rfc3339(int64_t unix_ns) {
  const time_t t = time_t(unix_ns / 1'000'000'000);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

}  // namespace sluice::policy
