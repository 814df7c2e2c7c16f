// The workers' view of peers and their keypairs.
//
// Ownership: the control thread creates keypairs, publishes them with single pointer stores
// (release) into a peer slot and the receiver-index hash, and retires them through Rcu
// (see rcu.h), so a worker never sees a freed keypair. Each peer belongs to one worker (its
// owner, as VPP's wireguard handoff does): only the owner decrypts and encrypts for it, so the
// replay window, the send counter and the peer's statistics have a single writer and need no
// lock or atomic read-modify-write. Packets that arrive on another worker are handed over.
#pragma once

#include <rte_hash.h>

#include <atomic>
#include <cstdint>
#include <memory>

#include "dataplane/counter.h"
#include "dataplane/rcu.h"
#include "dataplane/wg/protocol.h"
#include "dataplane/wg/replay.h"

namespace sluice::dp {

inline constexpr uint32_t kNoPeer = UINT32_MAX;

struct alignas(64) Keypair {
  // Written by the control thread before publication, read-only afterwards.
  uint8_t send_key[wg::kKeyLen];
  uint8_t recv_key[wg::kKeyLen];
  uint32_t local_index = 0;   // what the peer puts in receiver_index when sending to us
  uint32_t remote_index = 0;  // what we put in receiver_index when sending to the peer
  uint32_t peer = kNoPeer;
  bool initiator = false;
  uint64_t birth_tsc = 0;

  // Owner worker: rw. Control thread: ro.
  alignas(64) wg::ReplayWindow replay;
  uint64_t send_counter = 0;
  std::atomic<bool> received_data{false};  // a responder may send only after this (whitepaper 5.4.7)
  bool rekey_requested = false;             // owner asked the control thread once for this keypair
  bool expiry_reported = false;
};

struct alignas(64) PeerSlot {
  // Control thread: rw. Workers: ro.
  std::atomic<Keypair*> current{nullptr};
  std::atomic<Keypair*> previous{nullptr};
  std::atomic<Keypair*> next{nullptr};  // responder keypair not yet confirmed by the initiator
  std::atomic<uint32_t> virtual_address{0};
  std::atomic<uint16_t> owner{0};  // worker index
  std::atomic<bool> active{false};

  // The peer's UDP endpoint, (address << 16 | port), host order; 0 = unknown. Written by the
  // control thread (configuration, handshakes) and by the owner worker (roaming: the source of
  // the last authenticated transport packet). Plain stores: the latest authenticated packet wins.
  std::atomic<uint64_t> endpoint{0};

  // Owner worker: rw (single writer). Control thread: ro.
  alignas(64) Counter rx_bytes, rx_packets, tx_bytes, tx_packets;
  Counter last_rx_tsc;       // last authenticated transport message, keepalives included
  Counter last_rx_data_tsc;  // last one with a non-empty payload
  Counter last_tx_tsc;
  Counter last_tx_data_tsc;
  Counter inner_source_drops;
};

inline uint64_t pack_endpoint(uint32_t addr, uint16_t port) { return uint64_t(addr) << 16 | port; }
inline uint32_t endpoint_addr(uint64_t e) { return uint32_t(e >> 16); }
inline uint16_t endpoint_port(uint64_t e) { return uint16_t(e); }

// Fixed-capacity tables created at start: peer slots, receiver index -> keypair, and
// virtual address -> peer slot. Lookups are lock-free; the control thread is the only writer.
class PeerTable {
 public:
  PeerTable() = default;
  ~PeerTable();
  PeerTable(const PeerTable&) = delete;
  PeerTable& operator=(const PeerTable&) = delete;

  bool init(uint32_t max_peers, Rcu* rcu, const char* name);
  uint32_t capacity() const { return capacity_; }

  // Worker side.
  PeerSlot& slot(uint32_t peer) { return slots_[peer]; }
  const PeerSlot& slot(uint32_t peer) const { return slots_[peer]; }
  Keypair* keypair_by_index(uint32_t local_index) const;
  // Bulk form: n <= 64; missing entries come back as nullptr.
  void keypairs_by_index(const uint32_t* idx, unsigned n, Keypair** out) const;
  uint32_t peer_by_address(uint32_t virtual_address) const;

  // Control side.
  bool add_address(uint32_t virtual_address, uint32_t peer);
  void remove_address(uint32_t virtual_address);
  bool add_index(Keypair* kp);
  // Unpublishes kp from the index hash and frees it after a grace period.
  void retire_keypair(Keypair* kp);
  static Keypair* new_keypair();
  // Frees a keypair that was never published (wipes its keys).
  static void delete_keypair(Keypair* kp);

 private:
  void del_key(rte_hash* h, const void* key);
  uint32_t capacity_ = 0;
  Rcu* rcu_ = nullptr;
  PeerSlot* slots_ = nullptr;
  rte_hash* by_index_ = nullptr;
  rte_hash* by_address_ = nullptr;
};

}  // namespace sluice::dp
