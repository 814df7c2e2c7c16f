// The neighbour (ARP) table.
//
// Workers look entries up lock-free (rte_hash with RW_CONCURRENCY_LF) and read the MAC with
// one atomic load; the control thread is the only writer. Packets whose next hop is unknown
// are handed to the control thread, which holds a bounded number per neighbour while it
// resolves (RFC 1122 2.3.2.2 asks for at least one), ARPs at most once a second, gives up
// after kMaxProbes, and ages entries out after `timeout` unless a worker still uses them, in
// which case it re-probes them first (unicast, as Linux does) so busy flows never stall.
#pragma once

#include <rte_hash.h>
#include <rte_mbuf.h>

#include <atomic>
#include <cstdint>
#include <functional>
#include <vector>

#include "dataplane/rcu.h"

namespace sluice::dp {

struct MacAddr {
  uint8_t b[6];
};

// What a worker reads. dp: ro (used_tsc: rw, at most once a second), cp: rw.
struct alignas(16) NeighEntry {
  std::atomic<uint64_t> mac{0};  // bit 63 set when valid; the MAC in the low 48 bits
  std::atomic<uint64_t> used_tsc{0};

  static constexpr uint64_t kValid = 1ull << 63;
  bool valid(uint64_t v) const { return (v & kValid) != 0; }
};

uint64_t pack_mac(const MacAddr& m);
MacAddr unpack_mac(uint64_t v);

class NeighTable {
 public:
  enum class State : uint8_t { free, incomplete, reachable, probing, failed };

  struct Config {
    unsigned capacity = 4096;
    double timeout_s = 300;      // a confirmed entry is trusted this long
    unsigned queue_per_entry = 16;
    unsigned max_probes = 3;
    double probe_interval_s = 1;
    double failed_hold_s = 3;    // drop straight away for this long after a failure
  };

  // Callbacks of the control thread: send an ARP request (unicast to `mac` when non-null),
  // and drop a held packet (counted by the caller under the given reason).
  struct Io {
    std::function<void(uint16_t port, uint32_t ip, const MacAddr* unicast)> send_request;
    std::function<void(rte_mbuf*, bool unreachable)> drop;
    std::function<void(rte_mbuf*, const MacAddr&)> send_held;
  };

  NeighTable() = default;
  ~NeighTable();
  NeighTable(const NeighTable&) = delete;
  NeighTable& operator=(const NeighTable&) = delete;

  bool init(const Config& cfg, uint64_t tsc_hz, Rcu* rcu, const char* name);

  // Worker side: the entry, or nullptr when there is none yet.
  const NeighEntry* lookup(uint16_t port, uint32_t ip) const;
  void touch(const NeighEntry* e, uint64_t now_tsc) const;

  // Control side.
  // A packet whose next hop has no valid entry: hold it (or drop it when the queue is full or
  // the neighbour recently failed) and ARP if no request is outstanding.
  void resolve(uint16_t port, uint32_t ip, rte_mbuf* m, uint64_t now_tsc, const Io& io);
  // An ARP message told us ip is at mac. Creates the entry only when `create` (a reply to our
  // request, or a request addressed to us) or when it already exists (RFC 826 merge).
  void learn(uint16_t port, uint32_t ip, const MacAddr& mac, bool create, uint64_t now_tsc,
             const Io& io);
  // Retries, ageing, probes; call a few times a second.
  void tick(uint64_t now_tsc, const Io& io);
  void flush(const Io& io);  // drops every held packet (shutdown)

  struct View {
    uint16_t port;
    uint32_t ip;
    MacAddr mac;
    State state;
    double age_s;
    size_t queued;
  };
  std::vector<View> snapshot(uint64_t now_tsc) const;
  size_t size() const { return used_; }
  static const char* state_name(State s);

 private:
  struct Slot {  // control thread only
    State state = State::free;
    uint16_t port = 0;
    uint32_t ip = 0;
    int32_t hash_pos = -1;
    unsigned probes = 0;
    uint64_t confirmed_tsc = 0;
    uint64_t next_action_tsc = 0;
    std::vector<rte_mbuf*> held;
  };
  static uint64_t key(uint16_t port, uint32_t ip) { return uint64_t(port) << 32 | ip; }
  int find(uint16_t port, uint32_t ip) const;
  int create(uint16_t port, uint32_t ip);
  void remove(unsigned idx);
  uint64_t secs(double s) const { return uint64_t(s * double(hz_)); }

  Config cfg_;
  uint64_t hz_ = 1;
  Rcu* rcu_ = nullptr;
  rte_hash* hash_ = nullptr;
  NeighEntry* entries_ = nullptr;  // capacity entries, indexed like slots_
  std::vector<Slot> slots_;
  std::vector<unsigned> free_;
  size_t used_ = 0;
};

}  // namespace sluice::dp
