// Subnet discovery on the control thread: the kernel's interfaces (rtnetlink events, then a
// dump) and the DPDK ports' links feed the known-subnets registry, which is saved in
// gateway.state_dir whenever a subnet appears, goes away or comes back.
#include <rte_ethdev.h>

#include <ctime>
#include <map>

#include "controlplane/gateway.h"
#include "controlplane/log.h"

namespace sluice::cp {

using nlohmann::json;
using config::to_string;

namespace {

constexpr uint64_t kDiscoveryPollNs = 100'000'000;  // netlink events: a change shows within 0.1 s
constexpr uint64_t kPortPollNs = 500'000'000;        // DPDK link state (and the dump fallback)

// The kernel interface behind a net_af_packet port ("net_af_packet0,iface=eth1"): its link
// state decides the port's as well. Empty for other devices.
std::string af_packet_iface(const std::string& device) {
  if (device.rfind("net_af_packet", 0) != 0) return "";
  const auto at = device.find(",iface=");
  if (at == std::string::npos) return "";
  const auto start = at + 7;
  return device.substr(start, device.find(',', start) - start);
}

std::vector<discovery::CustomSubnet> custom_subnets(const config::Config& c) {
  std::vector<discovery::CustomSubnet> out;
  for (const auto& s : c.subnets) out.push_back({s.prefix, s.name, s.preferred});
  return out;
}

void save(const discovery::SubnetRegistry& reg, const std::string& file) {
  if (file.empty()) return;
  std::string err;
  if (!reg.save(file, &err)) log::warn("known_subnets_not_saved", {{"error", err}});
}

json unix_time_or_null(int64_t t) { return t > 0 ? json(t) : json(nullptr); }

// A reload may have changed config.subnets: take them when the reload count moved.
void sync_custom(discovery::SubnetRegistry& reg, const config::Config& cfg, uint64_t reloads, uint64_t* seen) {
  if (reloads == *seen) return;
  reg.set_custom(custom_subnets(cfg));
  *seen = reloads;
}

}  // namespace

void Gateway::start_discovery() {
  subnets_.set_custom(custom_subnets(cfg_));
  discovery_reloads_seen_ = reloads_;
  std::string err;
  if (discovery::ensure_directory(cfg_.gateway.state_dir, &err)) {
    subnets_file_ = discovery::state_file(cfg_.gateway.state_dir);
    size_t skipped = 0;
    if (!subnets_.load(subnets_file_, &err, &skipped)) {
      // Keep the unreadable file for a person to look at; start with nothing known.
      const std::string aside = subnets_file_ + ".unreadable";
      ::rename(subnets_file_.c_str(), aside.c_str());
      log::warn("known_subnets_unreadable", {{"error", err}, {"moved_to", aside}});
    } else {
      log::info("known_subnets_loaded", {{"file", subnets_file_},
                                         {"subnets", std::to_string(subnets_.discovered_count())},
                                         {"hidden", std::to_string(subnets_.hidden_count())},
                                         {"skipped", std::to_string(skipped)}});
    }
  } else {
    log::warn("state_dir_unusable", {{"error", err}, {"effect", "known subnets are not remembered"}});
  }
  if (!kernel_watch_.open(&err)) {
    kernel_error_ = err;
    log::warn("kernel_discovery_degraded", {{"error", err}, {"effect", "interfaces are polled every 0.5 s"}});
  }
  port_link_up_.assign(dp_.ports.size(), false);
  poll_discovery(now_ns(), true);
}

void Gateway::poll_discovery(uint64_t now, bool force) {
  if (!force && now < next_discovery_ns_) return;
  next_discovery_ns_ = now + kDiscoveryPollNs;
  sync_custom(subnets_, cfg_, reloads_, &discovery_reloads_seen_);
  bool refresh = force;
  if (kernel_watch_.drain()) kernel_dirty_ = true;
  const bool port_poll = force || now >= next_port_poll_ns_;
  if (port_poll) {
    next_port_poll_ns_ = now + kPortPollNs;
    if (!kernel_watch_.is_open()) kernel_dirty_ = true;
  }
  if (kernel_dirty_) {
    discovery::KernelSnapshot snap;
    std::string err;
    if (discovery::KernelWatcher::dump(&snap, &err)) {
      kernel_ = std::move(snap);
      kernel_dirty_ = false;
      if (kernel_watch_.is_open()) kernel_error_.clear();
      refresh = true;
    } else if (err != kernel_error_) {
      kernel_error_ = err;
      log::warn("kernel_discovery_failed", {{"error", err}});
    }
  }
  // A port's network is there while its link is up (and, for net_af_packet, the kernel
  // interface behind it: the PMD does not notice that one going down).
  if (port_poll || refresh) {
    for (size_t i = 0; i < dp_.ports.size(); ++i) {
      const auto& p = dp_.ports[i];
      rte_eth_link link{};
      bool up = rte_eth_link_get_nowait(p.port_id, &link) == 0 && link.link_status == RTE_ETH_LINK_UP;
      if (const std::string iface = af_packet_iface(p.cfg.device); up && !iface.empty()) {
        const discovery::KernelLink* kl = kernel_.link(iface);
        up = kl != nullptr && discovery::link_running(*kl);
      }
      if (i < port_link_up_.size() && port_link_up_[i] != up) {
        port_link_up_[i] = up;
        refresh = true;
        log::info(up ? "port_link_up" : "port_link_down", {{"port", p.cfg.name}});
      }
    }
  }
  if (!refresh) return;

  std::vector<discovery::Observation> seen = discovery::kernel_observations(kernel_);
  for (size_t i = 0; i < dp_.ports.size() && i < port_link_up_.size(); ++i) {
    if (!port_link_up_[i]) continue;
    const config::Prefix net{dp_.ports[i].cfg.address, dp_.ports[i].cfg.prefix_len};
    seen.push_back({config::Prefix{net.network(), net.len}, dp_.ports[i].cfg.name, discovery::Source::port});
  }
  std::map<std::string, std::optional<bool>> before;
  for (const auto& k : subnets_.list()) before[to_string(k.prefix)] = k.available;
  if (!subnets_.update(seen, int64_t(::time(nullptr)))) return;
  for (const auto& k : subnets_.list()) {
    const std::string prefix = to_string(k.prefix);
    const auto it = before.find(prefix);
    const std::optional<bool> was = it == before.end() ? std::nullopt : it->second;
    if (k.available == was) continue;
    std::string ifs;
    for (const auto& i : k.interfaces) ifs += (ifs.empty() ? "" : ",") + i;
    log::info(k.available.value_or(false) ? "subnet_available" : "subnet_unavailable",
              {{"subnet", prefix}, {"name", k.name}, {"interface", ifs}});
  }
  save(subnets_, subnets_file_);
}

json Gateway::subnets_json() const {
  const policy::CompiledPolicy* pol = dp_.policy.load();
  json list = json::array();
  for (const auto& k : subnets_.list()) {
    std::string ifs;
    json sources = json::array();
    for (size_t i = 0; i < k.interfaces.size(); ++i) {
      ifs += (ifs.empty() ? "" : ",") + k.interfaces[i];
      sources.push_back(discovery::to_string(k.sources[i]));
    }
    json j = {{"name", k.name},
              {"prefix", to_string(k.prefix)},
              {"origin", discovery::to_string(k.origin)},
              {"preferred", k.preferred},
              {"available", k.available ? json(*k.available) : json(nullptr)},
              {"status", !k.available ? "unknown" : *k.available ? "available" : "unavailable"},
              {"interface", ifs.empty() ? json(nullptr) : json(ifs)},
              {"interfaces", k.interfaces},
              {"sources", sources},
              {"first_seen", unix_time_or_null(k.first_seen)},
              {"last_seen", unix_time_or_null(k.last_seen)}};
    // Where the data path sends traffic for this subnet. A subnet only the kernel carries is not
    // reachable through the DPDK ports unless one of the routed subnets covers it.
    const policy::Route* r = pol ? pol->route(k.prefix.network()) : nullptr;
    if (r != nullptr && r->subnet_index < pol->subnets().size() && r->port < dp_.ports.size()) {
      const auto& rs = pol->subnets()[r->subnet_index];
      j["routable"] = rs.prefix.contains(k.prefix);
      j["port"] = dp_.ports[r->port].cfg.name;
      j["via"] = r->via ? json(to_string(r->via)) : json(nullptr);
      j["routed_as"] = rs.name;
    } else {
      j["routable"] = false;
      j["port"] = nullptr;
      j["via"] = nullptr;
      j["routed_as"] = nullptr;
    }
    list.push_back(std::move(j));
  }
  return {{"subnets", list},
          {"kernel_discovery", kernel_error_.empty() ? json("ok") : json(kernel_error_)},
          {"state_file", subnets_file_.empty() ? json(nullptr) : json(subnets_file_)}};
}

void Gateway::register_discovery_handlers() {
  ctl_.add_handler("subnets", [this](const json&) {
    sync_custom(subnets_, cfg_, reloads_, &discovery_reloads_seen_);
    return ctl::Reply::success(subnets_json());
  });
  ctl_.add_handler("subnets_rediscover", [this](const json&) {
    const size_t unhidden = subnets_.unhide_all();
    kernel_dirty_ = true;
    poll_discovery(now_ns(), true);
    save(subnets_, subnets_file_);
    log::info("subnets_rediscovered", {{"unhidden", std::to_string(unhidden)}});
    json r = subnets_json();
    r["unhidden"] = unhidden;
    return ctl::Reply::success(r);
  });
  ctl_.add_handler("subnets_forget", [this](const json& args) {
    sync_custom(subnets_, cfg_, reloads_, &discovery_reloads_seen_);
    const std::string text = args.value("prefix", "");
    auto p = config::parse_prefix(text);
    if (!p) return ctl::Reply::failure("--prefix '" + text + "': expected ADDRESS/LENGTH");
    const config::Prefix net{p->network(), p->len};
    using R = discovery::SubnetRegistry::ForgetResult;
    switch (subnets_.forget(net)) {
      case R::custom:
        return ctl::Reply::failure(to_string(net) + " is a configured subnet: remove it from the configuration");
      case R::unknown: return ctl::Reply::failure(to_string(net) + " is not a known subnet");
      case R::forgotten:
        save(subnets_, subnets_file_);
        return ctl::Reply::success({{"prefix", to_string(net)}, {"forgotten", true}, {"hidden", false}});
      case R::hidden:
        save(subnets_, subnets_file_);
        return ctl::Reply::success({{"prefix", to_string(net)}, {"forgotten", true}, {"hidden", true}});
    }
    return ctl::Reply::failure("unreachable");
  });
}

}  // namespace sluice::cp
