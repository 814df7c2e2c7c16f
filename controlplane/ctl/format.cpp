#include "controlplane/ctl/format.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdarg>
#include <cstdio>
#include <ctime>
#include <utility>
#include <vector>

namespace sluice::ctl {

namespace {

using nlohmann::json;

std::string strf(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
std::string strf(const char* fmt, ...) {
  char buf[256];
  va_list ap;
  va_start(ap, fmt);
  const int n = std::vsnprintf(buf, sizeof(buf), fmt, ap);
  va_end(ap);
  if (n < 0) return {};
  return std::string(buf, std::min<std::size_t>(static_cast<std::size_t>(n), sizeof(buf) - 1));
}

const json* find(const json& obj, const char* key) {
  if (!obj.is_object()) return nullptr;
  const auto it = obj.find(key);
  return it == obj.end() ? nullptr : &*it;
}

// A present, non-null field as text; nullopt-like empty string when absent.
bool text_field(const json& obj, const char* key, std::string* out) {
  const json* v = find(obj, key);
  if (!v || v->is_null()) return false;
  *out = scalar_text(*v);
  return true;
}

bool number_field(const json& obj, const char* key, double* out) {
  const json* v = find(obj, key);
  if (!v || !v->is_number()) return false;
  *out = v->get<double>();
  return true;
}

std::string capitalize(std::string s) {
  if (!s.empty()) s[0] = static_cast<char>(std::toupper(static_cast<unsigned char>(s[0])));
  return s;
}

std::string join(const std::vector<std::string>& parts, std::string_view sep) {
  std::string out;
  for (std::size_t i = 0; i < parts.size(); ++i) {
    if (i) out += sep;
    out += parts[i];
  }
  return out;
}

std::string plural(long long n, const char* unit) {
  return std::to_string(n) + " " + unit + (n == 1 ? "" : "s");
}

// An ACL entry as the seed writes them: "allow [icmp] from peer -> local".
std::string acl_text(const json& acl) {
  if (!acl.is_object()) return scalar_text(acl);
  std::string action = acl.value("action", std::string("allow"));
  std::string proto = "any";
  if (const json* p = find(acl, "protocol"); p && !p->is_null()) proto = scalar_text(*p);
  else if (const json* q = find(acl, "proto"); q && !q->is_null()) proto = scalar_text(*q);
  if (const json* ports = find(acl, "ports"); ports && ports->is_array() && !ports->empty()) {
    std::vector<std::string> ps;
    for (const auto& p : *ports) ps.push_back(scalar_text(p));
    proto += "/" + join(ps, ",");
  }
  std::string out = action + " [" + proto + "]";
  std::string from, to;
  const bool has_from = text_field(acl, "from", &from);
  const bool has_to = text_field(acl, "to", &to);
  if (has_from || has_to) {
    out += " from " + (has_from ? from : std::string("any")) + " -> " +
           (has_to ? to : std::string("any"));
  }
  return out;
}

// A list field ("tags", "gateway_for", ...) joined with ", ".
bool list_field(const json& obj, const char* key, std::string* out,
                std::string (*item)(const json&) = scalar_text) {
  const json* v = find(obj, key);
  if (!v || !v->is_array()) return false;
  std::vector<std::string> parts;
  for (const auto& e : *v) parts.push_back(item(e));
  *out = parts.empty() ? "none" : join(parts, ", ");
  return true;
}

// Age columns of tables: "3.2s ago", "5m ago".
std::string short_age(const json* v) {
  if (!v) return "-";
  if (v->is_null()) return "never";
  if (!v->is_number()) return scalar_text(*v);
  const double s = std::max(0.0, v->get<double>());
  if (s < 60) return strf("%.1fs ago", s);
  if (s < 3600) return strf("%.0fm ago", std::floor(s / 60));
  if (s < 86400) return strf("%.1fh ago", s / 3600);
  return strf("%.1fd ago", s / 86400);
}

std::string bytes_cell(const json* v) {
  if (!v || !v->is_number()) return "-";
  return format_bytes(v->get<double>());
}

std::string header_text(std::string key) {
  for (auto& ch : key) {
    ch = ch == '_' ? ' ' : static_cast<char>(std::toupper(static_cast<unsigned char>(ch)));
  }
  return key;
}

std::string render_table(const std::vector<std::string>& headers,
                         const std::vector<std::vector<std::string>>& rows, std::size_t indent) {
  std::vector<std::size_t> widths(headers.size());
  for (std::size_t i = 0; i < headers.size(); ++i) widths[i] = headers[i].size();
  for (const auto& r : rows) {
    for (std::size_t i = 0; i < r.size() && i < widths.size(); ++i) {
      widths[i] = std::max(widths[i], r[i].size());
    }
  }
  std::string out;
  const auto emit = [&](const std::vector<std::string>& cells) {
    std::string line(indent, ' ');
    for (std::size_t i = 0; i < widths.size(); ++i) {
      const std::string& cell = i < cells.size() ? cells[i] : std::string();
      line += cell;
      if (i + 1 < widths.size()) line += std::string(widths[i] - cell.size() + 2, ' ');
    }
    while (!line.empty() && line.back() == ' ') line.pop_back();
    out += line + "\n";
  };
  emit(headers);
  for (const auto& r : rows) emit(r);
  return out;
}

bool is_table(const json& v) {
  return v.is_array() && !v.empty() &&
         std::all_of(v.begin(), v.end(), [](const json& e) { return e.is_object(); });
}

bool is_scalar_list(const json& v) {
  return v.is_array() &&
         std::all_of(v.begin(), v.end(), [](const json& e) { return e.is_primitive(); });
}

// Array of objects: columns are the union of keys, "name" first.
std::string generic_table(const json& rows, std::size_t indent) {
  std::vector<std::string> keys;
  for (const auto& r : rows) {
    for (const auto& [k, _] : r.items()) {
      if (std::find(keys.begin(), keys.end(), k) == keys.end()) keys.push_back(k);
    }
  }
  if (const auto it = std::find(keys.begin(), keys.end(), "name"); it != keys.end()) {
    std::rotate(keys.begin(), it, it + 1);
  }
  std::vector<std::string> headers;
  for (const auto& k : keys) headers.push_back(header_text(k));
  std::vector<std::vector<std::string>> cells;
  for (const auto& r : rows) {
    std::vector<std::string> row;
    for (const auto& k : keys) {
      const json* v = find(r, k.c_str());
      if (!v) row.emplace_back("-");
      else if (is_scalar_list(*v)) {
        std::vector<std::string> parts;
        for (const auto& e : *v) parts.push_back(scalar_text(e));
        row.push_back(parts.empty() ? "-" : join(parts, ","));
      } else {
        row.push_back(scalar_text(*v));
      }
    }
    cells.push_back(std::move(row));
  }
  return render_table(headers, cells, indent);
}

void render_generic(const json& v, std::size_t indent, std::string& out) {
  const std::string pad(indent, ' ');
  if (v.is_object()) {
    for (const auto& [k, e] : v.items()) {
      if (is_table(e)) {
        out += pad + k + ":\n" + generic_table(e, indent + 2);
      } else if (e.is_array() && e.empty()) {
        out += pad + k + ": none\n";
      } else if (is_scalar_list(e)) {
        std::vector<std::string> parts;
        for (const auto& x : e) parts.push_back(scalar_text(x));
        out += pad + k + ": " + join(parts, ", ") + "\n";
      } else if (e.is_object() && !e.empty()) {
        out += pad + k + ":\n";
        render_generic(e, indent + 2, out);
      } else if (e.is_array()) {
        out += pad + k + ":\n";
        for (const auto& x : e) out += pad + "  - " + scalar_text(x) + "\n";
      } else {
        out += pad + k + ": " + (e.is_object() ? std::string("none") : scalar_text(e)) + "\n";
      }
    }
  } else if (is_table(v)) {
    out += generic_table(v, indent);
  } else if (v.is_array()) {
    if (v.empty()) out += pad + "none\n";
    for (const auto& x : v) out += pad + scalar_text(x) + "\n";
  } else if (!v.is_null()) {
    out += pad + scalar_text(v) + "\n";
  }
}

void format_gateway(const json& gw, std::string& out) {
  std::string name = "(unnamed)";
  text_field(gw, "name", &name);
  out += "Gateway: " + name + "\n";
  std::string s;
  double d;
  if (text_field(gw, "public_key", &s)) out += field_line("Public key", s);
  if (text_field(gw, "listen_port", &s)) out += field_line("Listening", "udp/" + s);
  if (text_field(gw, "virtual_address", &s)) out += field_line("Virtual address", s);
  if (number_field(gw, "uptime_s", &d)) out += field_line("Uptime", format_duration(d));
  if (text_field(gw, "workers", &s)) out += field_line("Workers", s);
}

void format_port(const json& port, std::string& out) {
  std::string name = "(unnamed)", s;
  text_field(port, "name", &name);
  out += "Port: " + name + "\n";
  if (text_field(port, "role", &s)) out += field_line("Role", s);
  if (text_field(port, "address", &s)) out += field_line("Address", s);
  if (text_field(port, "mac", &s)) out += field_line("MAC address", s);
  const auto direction = [&](const char* label, const char* packets, const char* bytes,
                             const char* errors) {
    double p = 0, b = 0, e = 0;
    const bool hp = number_field(port, packets, &p);
    const bool hb = number_field(port, bytes, &b);
    const bool he = number_field(port, errors, &e);
    if (!hp && !hb && !he) return;
    std::vector<std::string> parts;
    if (hb) parts.push_back(format_bytes(b));
    if (hp) parts.push_back(plural(static_cast<long long>(p), "packet"));
    if (he) parts.push_back(plural(static_cast<long long>(e), "error"));
    out += field_line(label, join(parts, ", "));
  };
  direction("Received", "rx_packets", "rx_bytes", "rx_errors");
  direction("Sent", "tx_packets", "tx_bytes", "tx_errors");
}

void format_peer(const json& peer, std::string& out) {
  std::string name, s;
  if (!text_field(peer, "name", &name) && !text_field(peer, "public_key", &name)) {
    name = "(unnamed)";
  }
  out += "Peer: " + name + "\n";
  if (text_field(peer, "state", &s)) out += field_line("Peer state", capitalize(s));
  if (text_field(peer, "public_key", &s)) out += field_line("Public key", s);
  if (const json* ep = find(peer, "endpoint")) {
    out += field_line("Endpoint", ep->is_null() ? std::string("none") : "Udp/" + scalar_text(*ep));
  }
  const auto age_line = [&](const char* label, const char* key) {
    const json* v = find(peer, key);
    if (!v) return;
    if (v->is_number()) out += field_line(label, format_age(v->get<double>()) + " ago");
    else out += field_line(label, v->is_null() ? std::string("never") : scalar_text(*v));
  };
  age_line("Latest handshake", "latest_handshake_age_s");
  age_line("Last activity", "last_activity_age_s");
  double rx = 0, tx = 0;
  const bool has_rx = number_field(peer, "rx_bytes", &rx);
  const bool has_tx = number_field(peer, "tx_bytes", &tx);
  if (has_rx || has_tx) {
    out += field_line("Transfer",
                      format_bytes(rx) + " received, " + format_bytes(tx) + " sent");
  }
  double rxp = 0, txp = 0;
  const bool has_rxp = number_field(peer, "rx_packets", &rxp);
  const bool has_txp = number_field(peer, "tx_packets", &txp);
  if (has_rxp || has_txp) {
    out += field_line("Packets", strf("%.0f received, %.0f sent", rxp, txp));
  }
  if (text_field(peer, "virtual_address", &s)) out += field_line("Virtual address", s);
  if (list_field(peer, "tags", &s)) out += field_line("Tags", s);
  if (list_field(peer, "gateway_for", &s)) out += field_line("Gateway for", s);
  if (list_field(peer, "dns", &s)) out += field_line("Dns", s);
  if (list_field(peer, "acls", &s, acl_text)) out += field_line("ACLs", s);
}

// --- sluicectl policies ---

// A list of scalars joined with ", ", or `empty` when there is none.
std::string joined(const json* v, const char* empty) {
  if (!v || !v->is_array() || v->empty()) return empty;
  std::vector<std::string> parts;
  for (const auto& e : *v) parts.push_back(scalar_text(e));
  return join(parts, ", ");
}

// A field whose value takes several lines: the first after the label, the rest under it.
std::string multi_line_field(std::string_view label, const std::vector<std::string>& lines) {
  if (lines.empty()) return field_line(label, "none");
  std::string out = field_line(label, lines[0]);
  const std::string pad(field_line("", "").size() - 1, ' ');  // indent + leaders + ": "
  for (std::size_t i = 1; i < lines.size(); ++i) out += pad + lines[i] + "\n";
  return out;
}

void format_policy(const json& pol, std::string& out) {
  std::string name = "(unnamed)";
  text_field(pol, "name", &name);
  out += "Policy: " + name + "\n";
  out += field_line("Senders", joined(find(pol, "senders"), "none"));
  std::vector<std::string> subnets;
  if (const json* v = find(pol, "subnets"); v && v->is_array()) {
    for (const auto& sn : *v) {
      std::string prefix, ref;
      if (!sn.is_object()) {
        subnets.push_back(scalar_text(sn));
      } else if (text_field(sn, "prefix", &prefix) && text_field(sn, "name", &ref) && ref != prefix) {
        subnets.push_back(prefix + " (" + ref + ")");
      } else {
        subnets.push_back(prefix.empty() ? ref : prefix);
      }
    }
  }
  out += field_line("Subnets", subnets.empty() ? std::string("none") : join(subnets, ", "));
  out += field_line("Filter", joined(find(pol, "filter"), "none (the whole subnets)"));
  std::vector<std::string> rules;
  if (const json* acl = find(pol, "acl"); acl && acl->is_array()) {
    for (const auto& r : *acl) {
      std::string index = "?", text;
      text_field(r, "index", &index);
      if (!text_field(r, "text", &text)) text = acl_text(r);
      rules.push_back(index + ": " + text);
    }
    if (rules.empty()) rules.push_back("none (allows nothing)");
  }
  out += multi_line_field("ACL", rules);
  std::vector<std::string> require;
  if (const json* req = find(pol, "require"); req && req->is_object()) {
    if (const json* ips = find(*req, "source_ips"); ips && ips->is_array() && !ips->empty())
      require.push_back("source IPs " + joined(ips, ""));
    if (const json* attrs = find(*req, "attributes"); attrs && attrs->is_array() && !attrs->empty())
      require.push_back("attributes " + joined(attrs, ""));
  }
  out += field_line("Require", require.empty() ? std::string("none") : join(require, "; "));
  std::string priority;
  if (text_field(pol, "gateway_priority", &priority)) out += field_line("Gateway priority", priority);
  out += field_line("Peers", joined(find(pol, "peers"), "none"));
  if (const json* held = find(pol, "peers_failing_require"); held && held->is_array() && !held->empty())
    out += field_line("Not trusted", joined(held, "none"));
}

// Non-zero counters of one group, labelled "<prefix> <name>".
void collect_counters(const json& group, const char* prefix,
                      std::vector<std::pair<std::string, std::string>>& lines) {
  if (!group.is_object()) return;
  for (const auto& [k, v] : group.items()) {
    if (v.is_number() && v.get<double>() != 0) lines.emplace_back(prefix + k, scalar_text(v));
  }
}

}  // namespace

std::string field_line(std::string_view label, std::string_view value, std::size_t indent,
                       std::size_t width) {
  std::string line(indent, ' ');
  line += label;
  // ipconfig-style leaders: dots on even columns, so the dots of all lines align.
  for (std::size_t col = label.size(); col < width; ++col) line += col % 2 == 0 ? '.' : ' ';
  if (label.size() >= width) line += ' ';
  line += ": ";
  line += value;
  line += '\n';
  return line;
}

std::string format_bytes(double bytes) {
  if (!(bytes >= 0)) bytes = 0;
  if (bytes < 1024) return strf("%.0f B", std::floor(bytes));
  static const char* const kUnits[] = {"KB", "MB", "GB", "TB", "PB"};
  double v = bytes / 1024;
  std::size_t unit = 0;
  while (v >= 1024 && unit + 1 < std::size(kUnits)) {
    v /= 1024;
    ++unit;
  }
  return strf("%.3f %s", v, kUnits[unit]);
}

std::string format_age(double seconds) {
  if (!(seconds >= 0)) seconds = 0;
  if (seconds < 1) return strf("%.2f seconds", seconds);
  if (seconds < 60) return strf("%.1f seconds", seconds);
  if (seconds < 3600) return strf("%.1f minutes", seconds / 60);
  if (seconds < 86400) return strf("%.1f hours", seconds / 3600);
  return strf("%.1f days", seconds / 86400);
}

std::string format_duration(double seconds) {
  if (!(seconds >= 0)) seconds = 0;
  const auto total = static_cast<long long>(std::floor(seconds));
  const long long days = total / 86400, hours = total % 86400 / 3600, minutes = total % 3600 / 60,
                  secs = total % 60;
  if (days > 0) return plural(days, "day") + (hours ? " " + plural(hours, "hour") : "");
  if (hours > 0) return plural(hours, "hour") + (minutes ? " " + plural(minutes, "minute") : "");
  if (minutes > 0) return plural(minutes, "minute") + (secs ? " " + plural(secs, "second") : "");
  return plural(secs, "second");
}

std::string scalar_text(const json& value) {
  if (value.is_string()) return value.get<std::string>();
  if (value.is_null()) return "-";
  return value.dump(-1, ' ', false, json::error_handler_t::replace);
}

std::string format_status(const json& status) {
  std::vector<std::string> blocks;
  if (const json* gw = find(status, "gateway"); gw && gw->is_object()) {
    std::string b;
    format_gateway(*gw, b);
    blocks.push_back(std::move(b));
  }
  if (const json* ports = find(status, "ports"); ports && ports->is_array()) {
    for (const auto& p : *ports) {
      if (!p.is_object()) continue;
      std::string b;
      format_port(p, b);
      blocks.push_back(std::move(b));
    }
  }
  if (const json* peers = find(status, "peers"); peers && peers->is_array()) {
    for (const auto& p : *peers) {
      if (!p.is_object()) continue;
      std::string b;
      format_peer(p, b);
      blocks.push_back(std::move(b));
    }
  }
  std::vector<std::pair<std::string, std::string>> counters;
  if (const json* hs = find(status, "handshakes")) collect_counters(*hs, "handshake ", counters);
  if (const json* drops = find(status, "drops")) collect_counters(*drops, "drop ", counters);
  if (!counters.empty()) {
    std::size_t width = 20;
    for (const auto& [label, _] : counters) width = std::max(width, label.size() + 2);
    width += width % 2;
    std::string b = "Counters\n";
    for (const auto& [label, value] : counters) b += field_line(label, value, 3, width);
    blocks.push_back(std::move(b));
  }
  return join(blocks, "\n");
}

std::string format_peers(const json& peers) {
  const json* list = &peers;
  if (peers.is_object()) {
    list = find(peers, "peers");
    if (!list) return format_generic(peers);
  }
  if (!list->is_array()) return format_generic(peers);
  std::vector<std::vector<std::string>> rows;
  for (const auto& p : *list) {
    if (!p.is_object()) continue;
    std::string name, state = "-", endpoint = "-", vaddr = "-";
    if (!text_field(p, "name", &name) && !text_field(p, "public_key", &name)) name = "-";
    text_field(p, "state", &state);
    text_field(p, "endpoint", &endpoint);
    text_field(p, "virtual_address", &vaddr);
    rows.push_back({name, state, endpoint, vaddr, short_age(find(p, "latest_handshake_age_s")),
                    bytes_cell(find(p, "rx_bytes")), bytes_cell(find(p, "tx_bytes"))});
  }
  if (rows.empty()) return "No peers.\n";
  return render_table({"NAME", "STATE", "ENDPOINT", "VIRTUAL ADDRESS", "HANDSHAKE", "RX", "TX"},
                      rows, 0);
}

std::string format_policies(const json& policies) {
  const json* list = &policies;
  if (policies.is_object()) list = find(policies, "policies");
  if (!list || !list->is_array()) return format_generic(policies);
  std::vector<std::string> blocks;
  for (const auto& p : *list) {
    if (!p.is_object()) continue;
    std::string b;
    format_policy(p, b);
    blocks.push_back(std::move(b));
  }
  if (blocks.empty()) return "No policies.\n";
  return join(blocks, "\n");
}

std::string format_attestations(const json& result) {
  const json* list = find(result, "attestations");
  if (!list || !list->is_array()) return format_generic(result);
  std::vector<std::vector<std::string>> rows;
  for (const auto& a : *list) {
    std::string peer = "-", attribute = "-", source = "-", expires;
    text_field(a, "peer", &peer);
    text_field(a, "attribute", &attribute);
    text_field(a, "source", &source);
    double left = 0;
    if (text_field(a, "expires", &expires) && number_field(a, "expires_in_s", &left)) {
      expires += " (in " + format_duration(std::ceil(left)) + ")";
    } else {
      expires = "never";
    }
    rows.push_back({peer, attribute, source, expires});
  }
  if (rows.empty()) return "No attestations.\n";
  return render_table({"PEER", "ATTRIBUTE", "SOURCE", "EXPIRES"}, rows, 0);
}

std::string format_subnets(const json& result) {
  const json* list = &result;
  if (result.is_object()) {
    list = find(result, "subnets");
    if (!list) return format_generic(result);
  }
  if (!list->is_array()) return format_generic(result);
  const auto now = static_cast<double>(std::time(nullptr));
  std::vector<std::vector<std::string>> rows;
  bool kernel_only = false;
  for (const auto& s : *list) {
    if (!s.is_object()) continue;
    std::string name = "-", prefix = "-", origin = "-", iface = "-", port = "-";
    text_field(s, "name", &name);
    text_field(s, "prefix", &prefix);
    text_field(s, "origin", &origin);
    text_field(s, "interface", &iface);
    const json* preferred = find(s, "preferred");
    const json* available = find(s, "available");
    const json* routable = find(s, "routable");
    std::string avail = "-", seen = "-";
    if (available && available->is_boolean()) {
      avail = available->get<bool>() ? "yes" : "no";
      double last = 0;
      if (available->get<bool>()) seen = "now";
      else if (number_field(s, "last_seen", &last)) seen = format_age(now - last) + " ago";
      else seen = "never";
    }
    if (routable && routable->is_boolean() && routable->get<bool>()) text_field(s, "port", &port);
    else kernel_only = kernel_only || origin == "discovered";
    rows.push_back({name, prefix, origin, preferred && preferred->is_boolean() && preferred->get<bool>() ? "yes" : "no",
                    avail, iface, port, seen});
  }
  if (rows.empty()) return "No subnets.\n";
  std::string out =
      render_table({"NAME", "PREFIX", "ORIGIN", "PREFERRED", "AVAILABLE", "INTERFACE", "PORT", "LAST SEEN"}, rows, 0);
  if (kernel_only)
    out += "\nA subnet without a PORT is not routed to peers by the data path: it is on a kernel interface\n"
           "only, it is the underlay's own network, or no DPDK port reaches it. Serve it from a LAN port, or\n"
           "list it under subnets (with a `via` router if it is behind one).\n";
  if (const json* k = find(result, "kernel_discovery"); k && k->is_string() && k->get<std::string>() != "ok")
    out += "\nkernel discovery: " + k->get<std::string>() + "\n";
  return out;
}

std::string format_generic(const json& result) {
  std::string out;
  // {"subnets": [...]}: the list alone says it all.
  if (result.is_object() && result.size() == 1 && result.begin()->is_array()) {
    if (result.begin()->empty()) {
      std::string what = result.begin().key();
      std::replace(what.begin(), what.end(), '_', ' ');
      return "No " + what + ".\n";
    }
    render_generic(*result.begin(), 0, out);
    return out;
  }
  render_generic(result, 0, out);
  return out;
}

std::string format_result(const std::string& command, const json& result) {
  if (command == "status") return format_status(result);
  if (command == "peers") return format_peers(result);
  if (command == "policies") return format_policies(result);
  if (command == "attestations") return format_attestations(result);
  if (command == "subnets" || command == "subnets_rediscover") return format_subnets(result);
  return format_generic(result);
}

}  // namespace sluice::ctl
