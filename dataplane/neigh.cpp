#include "dataplane/neigh.h"

#include <rte_errno.h>
#include <rte_jhash.h>
#include <rte_malloc.h>

#include <algorithm>
#include <new>

namespace sluice::dp {

uint64_t pack_mac(const MacAddr& m) {
  uint64_t v = 0;
  for (int i = 0; i < 6; ++i) v = (v << 8) | m.b[i];
  return v | NeighEntry::kValid;
}

MacAddr unpack_mac(uint64_t v) {
  MacAddr m;
  for (int i = 5; i >= 0; --i) {
    m.b[i] = uint8_t(v);
    v >>= 8;
  }
  return m;
}

NeighTable::~NeighTable() {
  if (hash_ != nullptr) rte_hash_free(hash_);
  if (entries_ != nullptr) {
    for (unsigned i = 0; i < cfg_.capacity; ++i) entries_[i].~NeighEntry();
    rte_free(entries_);
  }
  for (auto& s : slots_)
    for (auto* m : s.held) rte_pktmbuf_free(m);
}

bool NeighTable::init(const Config& cfg, uint64_t tsc_hz, Rcu* rcu, const char* name) {
  cfg_ = cfg;
  hz_ = tsc_hz;
  rcu_ = rcu;
  rte_hash_parameters p{};
  p.name = name;
  p.entries = cfg.capacity;
  p.key_len = sizeof(uint64_t);
  p.hash_func = rte_jhash;
  p.socket_id = SOCKET_ID_ANY;
  p.extra_flag = RTE_HASH_EXTRA_FLAGS_RW_CONCURRENCY_LF;
  hash_ = rte_hash_create(&p);
  if (hash_ == nullptr) return false;
  entries_ = static_cast<NeighEntry*>(
      rte_zmalloc("sluice_neigh", sizeof(NeighEntry) * cfg.capacity, RTE_CACHE_LINE_SIZE));
  if (entries_ == nullptr) return false;
  for (unsigned i = 0; i < cfg.capacity; ++i) new (&entries_[i]) NeighEntry();
  slots_.resize(cfg.capacity);
  free_.reserve(cfg.capacity);
  for (unsigned i = cfg.capacity; i > 0; --i) free_.push_back(i - 1);
  return true;
}

const NeighEntry* NeighTable::lookup(uint16_t port, uint32_t ip) const {
  uint64_t k = key(port, ip);
  void* data = nullptr;
  if (rte_hash_lookup_data(hash_, &k, &data) < 0) return nullptr;
  return &entries_[reinterpret_cast<uintptr_t>(data)];
}

void NeighTable::touch(const NeighEntry* e, uint64_t now_tsc) const {
  // At most one store a second per entry keeps the cache line from bouncing between workers.
  auto& used = const_cast<NeighEntry*>(e)->used_tsc;
  if (now_tsc - used.load(std::memory_order_relaxed) > hz_) used.store(now_tsc, std::memory_order_relaxed);
}

int NeighTable::find(uint16_t port, uint32_t ip) const {
  uint64_t k = key(port, ip);
  void* data = nullptr;
  if (rte_hash_lookup_data(hash_, &k, &data) < 0) return -1;
  return int(reinterpret_cast<uintptr_t>(data));
}

int NeighTable::create(uint16_t port, uint32_t ip) {
  if (free_.empty()) return -1;
  unsigned idx = free_.back();
  uint64_t k = key(port, ip);
  Slot& s = slots_[idx];
  entries_[idx].mac.store(0, std::memory_order_relaxed);
  entries_[idx].used_tsc.store(0, std::memory_order_relaxed);
  int32_t pos = rte_hash_add_key_data(hash_, &k, reinterpret_cast<void*>(uintptr_t(idx)));
  if (pos < 0) return -1;
  free_.pop_back();
  s = Slot{};
  s.port = port;
  s.ip = ip;
  s.hash_pos = pos;
  ++used_;
  return int(idx);
}

void NeighTable::remove(unsigned idx) {
  Slot& s = slots_[idx];
  uint64_t k = key(s.port, s.ip);
  int32_t pos = rte_hash_del_key(hash_, &k);
  entries_[idx].mac.store(0, std::memory_order_release);
  s.state = State::free;
  s.held.clear();
  --used_;
  // A worker may still hold the index it looked up a moment ago: recycle the key slot and the
  // entry only after every worker went through a quiescent state.
  rcu_->retire([this, idx, pos] {
    if (pos >= 0) rte_hash_free_key_with_position(hash_, pos);
    free_.push_back(idx);
  });
}

void NeighTable::resolve(uint16_t port, uint32_t ip, rte_mbuf* m, uint64_t now, const Io& io) {
  int idx = find(port, ip);
  if (idx < 0) {
    idx = create(port, ip);
    if (idx < 0) {
      io.drop(m, false);
      return;
    }
    Slot& s = slots_[idx];
    s.state = State::incomplete;
    s.probes = 1;
    s.next_action_tsc = now + secs(cfg_.probe_interval_s);
    s.held.push_back(m);
    io.send_request(port, ip, nullptr);
    return;
  }
  Slot& s = slots_[idx];
  switch (s.state) {
    case State::reachable:
    case State::probing:
      // The worker raced with our update: the entry is usable now.
      io.send_held(m, unpack_mac(entries_[idx].mac.load(std::memory_order_relaxed)));
      return;
    case State::failed:
      io.drop(m, true);
      return;
    case State::incomplete:
    case State::free:
      break;
  }
  if (s.held.size() >= cfg_.queue_per_entry) {
    // Keep the newest packets, as Linux's unres_qlen does: the oldest are the likeliest to
    // have been retransmitted already.
    io.drop(s.held.front(), false);
    s.held.erase(s.held.begin());
  }
  s.held.push_back(m);
}

void NeighTable::learn(uint16_t port, uint32_t ip, const MacAddr& mac, bool create_entry,
                       uint64_t now, const Io& io) {
  int idx = find(port, ip);
  if (idx < 0) {
    if (!create_entry) return;
    idx = create(port, ip);
    if (idx < 0) return;
  }
  Slot& s = slots_[idx];
  entries_[idx].mac.store(pack_mac(mac), std::memory_order_release);
  s.state = State::reachable;
  s.probes = 0;
  s.confirmed_tsc = now;
  s.next_action_tsc = now + secs(cfg_.timeout_s);
  auto held = std::move(s.held);
  s.held.clear();
  for (auto* m : held) io.send_held(m, mac);
}

void NeighTable::tick(uint64_t now, const Io& io) {
  for (unsigned idx = 0; idx < slots_.size(); ++idx) {
    Slot& s = slots_[idx];
    if (s.state == State::free || now < s.next_action_tsc) continue;
    switch (s.state) {
      case State::incomplete:
        if (s.probes >= cfg_.max_probes) {
          for (auto* m : s.held) io.drop(m, true);
          s.held.clear();
          s.state = State::failed;
          s.next_action_tsc = now + secs(cfg_.failed_hold_s);
        } else {
          ++s.probes;
          s.next_action_tsc = now + secs(cfg_.probe_interval_s);
          io.send_request(s.port, s.ip, nullptr);
        }
        break;
      case State::reachable: {
        uint64_t used = entries_[idx].used_tsc.load(std::memory_order_relaxed);
        if (used > s.confirmed_tsc) {
          // Still in use: confirm it by unicast before it expires, keeping the MAC meanwhile.
          s.state = State::probing;
          s.probes = 1;
          s.next_action_tsc = now + secs(cfg_.probe_interval_s);
          MacAddr mac = unpack_mac(entries_[idx].mac.load(std::memory_order_relaxed));
          io.send_request(s.port, s.ip, &mac);
        } else {
          remove(idx);
        }
        break;
      }
      case State::probing:
        if (s.probes >= cfg_.max_probes) {
          remove(idx);
        } else {
          ++s.probes;
          s.next_action_tsc = now + secs(cfg_.probe_interval_s);
          // Fall back to broadcast: the host may have changed its MAC.
          io.send_request(s.port, s.ip, nullptr);
        }
        break;
      case State::failed:
        remove(idx);
        break;
      case State::free:
        break;
    }
  }
}

void NeighTable::flush(const Io& io) {
  for (auto& s : slots_) {
    for (auto* m : s.held) io.drop(m, false);
    s.held.clear();
  }
}

std::vector<NeighTable::View> NeighTable::snapshot(uint64_t now) const {
  std::vector<View> out;
  for (unsigned idx = 0; idx < slots_.size(); ++idx) {
    const Slot& s = slots_[idx];
    if (s.state == State::free) continue;
    View v{s.port, s.ip, unpack_mac(entries_[idx].mac.load(std::memory_order_relaxed)), s.state,
           s.confirmed_tsc ? double(now - s.confirmed_tsc) / double(hz_) : -1.0, s.held.size()};
    out.push_back(v);
  }
  return out;
}

const char* NeighTable::state_name(State s) {
  switch (s) {
    case State::free: return "free";
    case State::incomplete: return "incomplete";
    case State::reachable: return "reachable";
    case State::probing: return "probing";
    case State::failed: return "failed";
  }
  return "?";
}

}  // namespace sluice::dp
