#include "dataplane/peers.h"

#include <rte_jhash.h>
#include <rte_malloc.h>
#include <sodium.h>

#include <new>
#include <string>

namespace sluice::dp {

PeerTable::~PeerTable() {
  if (by_index_ != nullptr) {
    // Free every keypair still published; workers have stopped by the time we are destroyed.
    const void* key;
    void* data;
    uint32_t it = 0;
    while (rte_hash_iterate(by_index_, &key, &data, &it) >= 0) {
      delete_keypair(static_cast<Keypair*>(data));
    }
    rte_hash_free(by_index_);
  }
  if (by_address_ != nullptr) rte_hash_free(by_address_);
  if (slots_ != nullptr) {
    for (uint32_t i = 0; i < capacity_; ++i) slots_[i].~PeerSlot();
    rte_free(slots_);
  }
}

static rte_hash* make_hash(const std::string& name, uint32_t entries) {
  rte_hash_parameters p{};
  p.name = name.c_str();
  p.entries = entries < 8 ? 8 : entries;
  p.key_len = sizeof(uint32_t);
  p.hash_func = rte_jhash;
  p.socket_id = SOCKET_ID_ANY;
  p.extra_flag = RTE_HASH_EXTRA_FLAGS_RW_CONCURRENCY_LF;
  return rte_hash_create(&p);
}

bool PeerTable::init(uint32_t max_peers, Rcu* rcu, const char* name) {
  capacity_ = max_peers;
  rcu_ = rcu;
  slots_ = static_cast<PeerSlot*>(
      rte_zmalloc("sluice_peers", sizeof(PeerSlot) * max_peers, RTE_CACHE_LINE_SIZE));
  if (slots_ == nullptr) return false;
  for (uint32_t i = 0; i < max_peers; ++i) new (&slots_[i]) PeerSlot();
  // Each peer has up to three live keypairs plus ones in their grace period.
  by_index_ = make_hash(std::string(name) + "_idx", max_peers * 4);
  by_address_ = make_hash(std::string(name) + "_va", max_peers);
  return by_index_ != nullptr && by_address_ != nullptr;
}

Keypair* PeerTable::keypair_by_index(uint32_t local_index) const {
  void* data = nullptr;
  if (rte_hash_lookup_data(by_index_, &local_index, &data) < 0) return nullptr;
  return static_cast<Keypair*>(data);
}

void PeerTable::keypairs_by_index(const uint32_t* idx, unsigned n, Keypair** out) const {
  const void* keys[RTE_HASH_LOOKUP_BULK_MAX];
  void* data[RTE_HASH_LOOKUP_BULK_MAX];
  uint64_t hits = 0;
  for (unsigned i = 0; i < n; ++i) keys[i] = &idx[i];
  rte_hash_lookup_bulk_data(by_index_, keys, n, &hits, data);
  for (unsigned i = 0; i < n; ++i)
    out[i] = (hits >> i) & 1 ? static_cast<Keypair*>(data[i]) : nullptr;
}

uint32_t PeerTable::peer_by_address(uint32_t va) const {
  void* data = nullptr;
  if (rte_hash_lookup_data(by_address_, &va, &data) < 0) return kNoPeer;
  return uint32_t(reinterpret_cast<uintptr_t>(data));
}

void PeerTable::del_key(rte_hash* h, const void* key) {
  int32_t pos = rte_hash_del_key(h, key);
  if (pos >= 0) rcu_->retire([h, pos] { rte_hash_free_key_with_position(h, pos); });
}

bool PeerTable::add_address(uint32_t va, uint32_t peer) {
  return rte_hash_add_key_data(by_address_, &va, reinterpret_cast<void*>(uintptr_t(peer))) >= 0;
}

void PeerTable::remove_address(uint32_t va) { del_key(by_address_, &va); }

bool PeerTable::add_index(Keypair* kp) {
  return rte_hash_add_key_data(by_index_, &kp->local_index, kp) >= 0;
}

Keypair* PeerTable::new_keypair() {
  void* mem = rte_zmalloc("sluice_keypair", sizeof(Keypair), RTE_CACHE_LINE_SIZE);
  return mem != nullptr ? new (mem) Keypair() : nullptr;
}

void PeerTable::delete_keypair(Keypair* kp) {
  sodium_memzero(kp->send_key, sizeof kp->send_key);
  sodium_memzero(kp->recv_key, sizeof kp->recv_key);
  kp->~Keypair();
  rte_free(kp);
}

void PeerTable::retire_keypair(Keypair* kp) {
  if (kp == nullptr) return;
  int32_t pos = rte_hash_del_key(by_index_, &kp->local_index);
  rte_hash* h = by_index_;
  rcu_->retire([h, pos, kp] {
    if (pos >= 0) rte_hash_free_key_with_position(h, pos);
    delete_keypair(kp);
  });
}

}  // namespace sluice::dp
