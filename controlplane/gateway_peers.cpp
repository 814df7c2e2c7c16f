// Peers that come and go while the gateway runs: the diff of two peer lists, slot assignment,
// and the commit (tear down, update in place, add) shared by reloads and the control socket.
//
// A peer's slot id is its Noise peer id, its index in the dataplane's PeerTable and its index
// in the compiled policy's sender classes, so the policy is always built from a list ordered by
// slot (policy_view). Removing a peer makes its slot inactive first (workers drop its packets,
// counted as peer_removed; its connections end on their next reply packet), retires its
// keypairs and address entry through RCU, and frees the slot only after a grace period and a
// quarantine, so no worker can mistake the next owner of the slot for the old one.
#include <rte_cycles.h>

#include <algorithm>
#include <chrono>
#include <unordered_map>

#include "controlplane/config/keys.h"
#include "controlplane/gateway.h"
#include "controlplane/gateway_util.h"
#include "controlplane/log.h"

namespace sluice::cp {

using config::to_string;
using nlohmann::json;

namespace {

struct KeyHash {
  size_t operator()(const config::Key& k) const {
    size_t h;
    memcpy(&h, k.data(), sizeof h);
    return h;
  }
};

bool same_endpoint(const std::optional<config::SockAddr>& a, const std::optional<config::SockAddr>& b) {
  if (a.has_value() != b.has_value()) return false;
  return !a || (a->addr == b->addr && a->port == b->port);
}

}  // namespace

uint32_t peer_changes(const config::Peer& a, const config::Peer& b) {
  uint32_t c = 0;
  if (a.name != b.name) c |= kPeerName;
  if (a.virtual_address != b.virtual_address) c |= kPeerVirtualAddress;
  if (a.preshared_key.value_or(config::Key{}) != b.preshared_key.value_or(config::Key{})) c |= kPeerPresharedKey;
  if (!same_endpoint(a.endpoint, b.endpoint)) c |= kPeerEndpoint;
  if (a.persistent_keepalive != b.persistent_keepalive) c |= kPeerKeepalive;
  if (a.tags != b.tags) c |= kPeerTags;
  if (a.attributes != b.attributes) c |= kPeerAttributes;
  return c;
}

PeerDiff diff_peers(const std::vector<config::Peer>& from, const std::vector<config::Peer>& to) {
  PeerDiff d;
  std::unordered_map<config::Key, size_t, KeyHash> by_key;
  for (size_t i = 0; i < from.size(); ++i) by_key.emplace(from[i].public_key, i);
  std::vector<bool> matched(from.size(), false);
  for (size_t j = 0; j < to.size(); ++j) {
    auto it = by_key.find(to[j].public_key);
    if (it == by_key.end() || matched[it->second]) {
      d.add.push_back(j);
      continue;
    }
    matched[it->second] = true;
    d.keep.push_back({it->second, j, peer_changes(from[it->second], to[j])});
  }
  for (size_t i = 0; i < from.size(); ++i)
    if (!matched[i]) d.remove.push_back(i);
  return d;
}

std::string check_peers(const std::vector<config::Peer>& peers, const config::Gateway& gw) {
  std::unordered_map<std::string, size_t> names;
  std::unordered_map<config::Key, size_t, KeyHash> keys;
  std::unordered_map<uint32_t, size_t> addresses;
  for (size_t i = 0; i < peers.size(); ++i) {
    const config::Peer& p = peers[i];
    if (p.name.empty()) return "a peer needs a name";
    if (p.virtual_address == 0) return "peer '" + p.name + "': missing virtual address";
    if (p.virtual_address == gw.virtual_address)
      return "peer '" + p.name + "': " + to_string(p.virtual_address) + " is the gateway's own virtual address";
    if (p.public_key == gw.public_key) return "peer '" + p.name + "': this is the gateway's own public key";
    for (const auto& t : p.tags)
      if (t.empty()) return "peer '" + p.name + "': tags must be non-empty";
    if (auto [it, fresh] = names.emplace(p.name, i); !fresh) return "duplicate peer name '" + p.name + "'";
    if (auto [it, fresh] = keys.emplace(p.public_key, i); !fresh)
      return "peer '" + p.name + "': public key already used by peer '" + peers[it->second].name + "'";
    if (auto [it, fresh] = addresses.emplace(p.virtual_address, i); !fresh)
      return "peer '" + p.name + "': virtual address " + to_string(p.virtual_address) + " already used by peer '" +
             peers[it->second].name + "'";
  }
  return "";
}

std::vector<config::Peer> Gateway::running_peers(std::vector<uint32_t>* slots) const {
  std::vector<config::Peer> out;
  for (const auto& p : peers_) {
    if (!p) continue;
    out.push_back(p->cfg);
    if (slots != nullptr) slots->push_back(p->id);
  }
  return out;
}

bool Gateway::plan_peers(const std::vector<config::Peer>& next, PeerLayout* out, std::string* err) const {
  PeerLayout l;
  const std::vector<config::Peer> from = running_peers(&l.from_slots);
  l.diff = diff_peers(from, next);

  // Slots for the additions: never-used ones first, then freed ones past their quarantine.
  const uint32_t capacity = dp_.peers.capacity();
  const uint64_t now = now_ns();
  uint32_t fresh = next_fresh_slot_;
  auto freed = free_slots_->begin();
  for (size_t k = 0; k < l.diff.add.size(); ++k) {
    if (fresh < capacity) {
      l.add_slots.push_back(fresh++);
    } else if (freed != free_slots_->end() && freed->usable_ns <= now) {
      l.add_slots.push_back(freed->slot);
      ++freed;
    } else {
      *err = "the peer table is full (" + std::to_string(capacity) +
             " slots; slots of removed peers are free again a second after their removal)";
      return false;
    }
  }

  uint32_t size = 0;
  for (const auto& m : l.diff.keep) size = std::max(size, l.from_slots[m.from] + 1);
  for (uint32_t s : l.add_slots) size = std::max(size, s + 1);
  l.by_slot.assign(size, config::Peer{});  // nameless, no tags: no policy applies
  for (const auto& m : l.diff.keep) l.by_slot[l.from_slots[m.from]] = next[m.to];
  for (size_t k = 0; k < l.diff.add.size(); ++k) l.by_slot[l.add_slots[k]] = next[l.diff.add[k]];
  *out = std::move(l);
  return true;
}

config::Config Gateway::policy_view(const config::Config& next, const PeerLayout& layout) const {
  config::Config v = next;
  v.peers = layout.by_slot;
  return v;
}

void Gateway::apply_peers(const std::vector<config::Peer>& next, const PeerLayout& layout) {
  const PeerDiff& d = layout.diff;
  for (size_t i : d.remove) remove_peer(layout.from_slots[i]);
  // Addresses move in two phases, so two peers may swap theirs in one change.
  for (const auto& m : d.keep) {
    if (!(m.changed & kPeerVirtualAddress)) continue;
    const uint32_t slot = layout.from_slots[m.from];
    const uint32_t old_va = peers_[slot]->cfg.virtual_address;
    if (dp_.peers.peer_by_address(old_va) == slot) dp_.peers.remove_address(old_va);
  }
  for (const auto& m : d.keep) {
    Peer& p = *peers_[layout.from_slots[m.from]];
    if (m.changed == 0) {
      p.cfg = next[m.to];  // the same values (the key file's path may differ)
      continue;
    }
    update_peer(p, next[m.to], m.changed);
  }
  for (size_t k = 0; k < d.add.size(); ++k) add_peer(next[d.add[k]], layout.add_slots[k]);
}

bool Gateway::change_peers(std::vector<config::Peer> next, std::string* err) {
  if (std::string e = check_peers(next, cfg_.gateway); !e.empty()) {
    *err = e;
    return false;
  }
  PeerLayout layout;
  if (!plan_peers(next, &layout, err)) return false;
  if (!publish_policy(policy_view(cfg_, layout), policy_generation_ + 1, err)) return false;
  apply_peers(next, layout);
  cfg_.peers = std::move(next);
  return true;
}

void Gateway::add_peer(const config::Peer& c, uint32_t slot_id) {
  if (slot_id >= dp_.peers.capacity()) {
    log::error("peer_rejected", {{"peer", c.name}, {"reason", "no free peer slot"}});
    return;
  }
  // Take the slot off the free lists.
  if (slot_id >= next_fresh_slot_) {
    next_fresh_slot_ = slot_id + 1;
  } else {
    auto& fs = *free_slots_;
    fs.erase(std::remove_if(fs.begin(), fs.end(), [&](const FreeSlot& f) { return f.slot == slot_id; }), fs.end());
  }
  const wg::Key psk = c.preshared_key.value_or(wg::Key{});
  if (auto rc = noise_->add_peer(slot_id, c.public_key, psk); rc != wg::PeerChange::ok) {
    log::error("peer_rejected", {{"peer", c.name}, {"reason", "noise refused the public key"}});
    // The slot was never published: usable again at once.
    free_slots_->push_front({slot_id, 0});
    return;
  }
  auto p = std::make_unique<Peer>();
  p->cfg = c;
  p->id = slot_id;
  dp::PeerSlot& slot = dp_.peers.slot(slot_id);
  // A reused slot keeps its previous owner's counters (single writer: the owner worker).
  p->base_rx_bytes = slot.rx_bytes.get();
  p->base_tx_bytes = slot.tx_bytes.get();
  p->base_rx_packets = p->seen_rx_packets = slot.rx_packets.get();
  p->base_tx_packets = p->seen_tx_packets = slot.tx_packets.get();
  p->seen_rx_data_tsc = slot.last_rx_data_tsc.get();
  p->seen_tx_data_tsc = slot.last_tx_data_tsc.get();
  p->base_inner_source_drops = slot.inner_source_drops.get();
  p->added_tsc = rte_rdtsc();
  slot.virtual_address.store(c.virtual_address, std::memory_order_relaxed);
  slot.owner.store(uint16_t(slot_id % dp_.settings.workers), std::memory_order_relaxed);
  slot.endpoint.store(c.endpoint ? dp::pack_endpoint(c.endpoint->addr, c.endpoint->port) : 0,
                      std::memory_order_relaxed);
  slot.active.store(true, std::memory_order_release);
  if (!dp_.peers.add_address(c.virtual_address, slot_id))
    log::error("peer_address_table_full", {{"peer", c.name}});
  const uint64_t now = now_ns();
  if (c.persistent_keepalive > 0) p->timers.set_persistent_keepalive(c.persistent_keepalive, now);
  // A peer with a configured endpoint is reachable now: start the session ourselves.
  if (c.endpoint) p->timers.request_handshake(now);
  if (slot_id >= peers_.size()) peers_.resize(slot_id + 1);
  peers_[slot_id] = std::move(p);
  ++peers_added_;
  if (started_)
    log::info("peer_added", {{"peer", c.name}, {"slot", std::to_string(slot_id)},
                             {"virtual_address", to_string(c.virtual_address)}});
}

void Gateway::remove_peer(uint32_t slot_id) {
  if (slot_id >= peers_.size() || !peers_[slot_id]) return;
  Peer& p = *peers_[slot_id];
  dp::PeerSlot& s = dp_.peers.slot(slot_id);
  // Workers see the slot inactive first: from here its packets are dropped (peer_removed).
  s.active.store(false, std::memory_order_release);
  retire_keypair(s.next.exchange(nullptr));
  retire_keypair(s.current.exchange(nullptr));
  retire_keypair(s.previous.exchange(nullptr));
  noise_->remove_peer(slot_id);  // after the session indexes were released
  if (dp_.peers.peer_by_address(p.cfg.virtual_address) == slot_id) dp_.peers.remove_address(p.cfg.virtual_address);
  s.endpoint.store(0, std::memory_order_relaxed);
  drop_staged(p);
  log::info("peer_removed", {{"peer", p.cfg.name}, {"slot", std::to_string(slot_id)}});
  peers_[slot_id].reset();
  ++peers_removed_;
  // Free the slot once no worker can still hold anything of the old peer.
  auto freed = free_slots_;
  dp_.rcu.retire([freed, slot_id] {
    const uint64_t now = uint64_t(std::chrono::duration_cast<std::chrono::nanoseconds>(
                                      std::chrono::steady_clock::now().time_since_epoch())
                                      .count());
    freed->push_back({slot_id, now + kSlotQuarantineNs});
  });
}

void Gateway::update_peer(Peer& p, const config::Peer& next, uint32_t changed) {
  dp::PeerSlot& s = dp_.peers.slot(p.id);
  const uint64_t now = now_ns();
  if (changed & kPeerPresharedKey) {
    // Sessions derived with the old key end; the next handshake uses the new one.
    noise_->update_peer(p.id, next.public_key, next.preshared_key.value_or(wg::Key{}));
    retire_keypair(s.next.exchange(nullptr));
    retire_keypair(s.current.exchange(nullptr));
    retire_keypair(s.previous.exchange(nullptr));
    if (s.endpoint.load(std::memory_order_relaxed) != 0) p.timers.request_handshake(now);
  }
  if (changed & kPeerVirtualAddress) {
    // The old address entry went in apply_peers' first phase.
    s.virtual_address.store(next.virtual_address, std::memory_order_release);
    if (!dp_.peers.add_address(next.virtual_address, p.id))
      log::error("peer_address_table_full", {{"peer", next.name}});
  }
  if ((changed & kPeerEndpoint) && next.endpoint) {
    s.endpoint.store(dp::pack_endpoint(next.endpoint->addr, next.endpoint->port), std::memory_order_relaxed);
    if (!has_sending_keypair(p)) p.timers.request_handshake(now);
  }
  if (changed & kPeerKeepalive) p.timers.set_persistent_keepalive(next.persistent_keepalive, now);
  if (changed & kPeerName) log::info("peer_renamed", {{"peer", next.name}, {"was", p.cfg.name}});
  p.cfg = next;
  ++peers_updated_;
  log::info("peer_updated", {{"peer", next.name}, {"changed", std::to_string(changed)}});
}

// --- Control socket: sluicectl peers add | remove | set ---------------------------------------

namespace {

std::vector<std::string> split_list(const std::string& s) {
  std::vector<std::string> out;
  size_t start = 0;
  while (start <= s.size()) {
    size_t comma = s.find(',', start);
    if (comma == std::string::npos) comma = s.size();
    std::string item = s.substr(start, comma - start);
    while (!item.empty() && item.front() == ' ') item.erase(item.begin());
    while (!item.empty() && item.back() == ' ') item.pop_back();
    if (!item.empty()) out.push_back(item);
    start = comma + 1;
  }
  return out;
}

double ms_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

// "k=v[,k=v...]": true/false become booleans, as in the file.
bool parse_attributes(const std::string& s, std::map<std::string, config::AttributeValue>* out, std::string* err) {
  for (const std::string& item : split_list(s)) {
    const auto eq = item.find('=');
    if (eq == std::string::npos || eq == 0) {
      *err = "--attribute '" + item + "': expected NAME=VALUE";
      return false;
    }
    const std::string k = item.substr(0, eq), v = item.substr(eq + 1);
    if (v == "true" || v == "false")
      (*out)[k] = v == "true";
    else
      (*out)[k] = v;
  }
  return true;
}

}  // namespace

void Gateway::register_peer_handlers() {
  ctl_.add_handler("peers_add", [this](const nlohmann::json& args) {
    const auto t0 = std::chrono::steady_clock::now();
    config::Peer p;
    p.name = args.value("name", "");
    if (p.name.empty()) return ctl::Reply::failure("peers add needs --name");
    auto key = config::parse_key(args.value("public_key", ""));
    if (!key) return ctl::Reply::failure("--public-key: not a WireGuard public key (44 characters of base64)");
    p.public_key = *key;
    auto va = config::parse_ipv4(args.value("virtual_address", ""));
    if (!va) return ctl::Reply::failure("--virtual-address: expected an IPv4 address");
    p.virtual_address = *va;
    if (args.contains("tags")) p.tags = split_list(args.value("tags", ""));
    if (args.contains("endpoint")) {
      const std::string ep = args.value("endpoint", "");
      const auto colon = ep.rfind(':');
      auto addr = colon == std::string::npos ? std::nullopt : config::parse_ipv4(ep.substr(0, colon));
      auto port = colon == std::string::npos ? std::nullopt : config::parse_port(ep.substr(colon + 1));
      if (!addr || !port || *port == 0) return ctl::Reply::failure("--endpoint '" + ep + "': expected ADDRESS:PORT");
      p.endpoint = config::SockAddr{*addr, *port};
    }
    if (args.contains("keepalive")) {
      const std::string ka = args.value("keepalive", "");
      unsigned long v = 0;
      size_t used = 0;
      try {
        v = std::stoul(ka, &used);
      } catch (...) {
        used = 0;
      }
      if (used == 0 || used != ka.size() || v > 65535) return ctl::Reply::failure("--keepalive: seconds, 0-65535");
      p.persistent_keepalive = uint16_t(v);
    }
    if (args.contains("preshared_key")) {
      auto psk = config::parse_key(args.value("preshared_key", ""));
      if (!psk) return ctl::Reply::failure("--preshared-key-file: not a WireGuard key");
      p.preshared_key = *psk;
      config::wipe(*psk);
    }
    if (args.contains("attribute")) {
      std::string err;
      if (!parse_attributes(args.value("attribute", ""), &p.attributes, &err)) return ctl::Reply::failure(err);
    }
    std::vector<config::Peer> next = cfg_.peers;
    next.push_back(p);
    std::string err;
    if (!change_peers(std::move(next), &err)) return ctl::Reply::failure("peer not added: " + err);
    Peer* added = find_peer(p.name);
    return ctl::Reply::success({{"peer", p.name},
                                {"slot", added ? json(added->id) : json(nullptr)},
                                {"policy_generation", policy_generation_},
                                {"applied_ms", ms_since(t0)}});
  });

  ctl_.add_handler("peers_remove", [this](const nlohmann::json& args) {
    const auto t0 = std::chrono::steady_clock::now();
    const std::string name = args.value("name", "");
    std::vector<config::Peer> next = cfg_.peers;
    auto it = std::find_if(next.begin(), next.end(), [&](const config::Peer& p) { return p.name == name; });
    if (it == next.end()) return ctl::Reply::failure("no peer named '" + name + "'");
    next.erase(it);
    std::string err;
    if (!change_peers(std::move(next), &err)) return ctl::Reply::failure("peer not removed: " + err);
    return ctl::Reply::success(
        {{"peer", name}, {"policy_generation", policy_generation_}, {"applied_ms", ms_since(t0)}});
  });

  ctl_.add_handler("peers_set", [this](const nlohmann::json& args) {
    const auto t0 = std::chrono::steady_clock::now();
    const std::string name = args.value("name", "");
    std::vector<config::Peer> next = cfg_.peers;
    auto it = std::find_if(next.begin(), next.end(), [&](const config::Peer& p) { return p.name == name; });
    if (it == next.end()) return ctl::Reply::failure("no peer named '" + name + "'");
    if (!args.contains("tags") && !args.contains("attribute"))
      return ctl::Reply::failure("peers set needs --tags and/or --attribute");
    if (args.contains("tags")) it->tags = split_list(args.value("tags", ""));
    if (args.contains("attribute")) {
      std::string err;
      if (!parse_attributes(args.value("attribute", ""), &it->attributes, &err)) return ctl::Reply::failure(err);
    }
    const config::Peer updated = *it;
    std::string err;
    if (!change_peers(std::move(next), &err)) return ctl::Reply::failure("peer not changed: " + err);
    nlohmann::json attrs = nlohmann::json::object();
    for (const auto& [k, v] : updated.attributes)
      attrs[k] = std::holds_alternative<bool>(v) ? json(std::get<bool>(v)) : json(std::get<std::string>(v));
    return ctl::Reply::success({{"peer", name},
                                {"tags", updated.tags},
                                {"attributes", attrs},
                                {"policy_generation", policy_generation_},
                                {"applied_ms", ms_since(t0)}});
  });
}

}  // namespace sluice::cp
