// Connection tracking for source NAT: one ConnTable per worker, single-threaded.
//
// Only peers open connections. A connection is created by the first packet of a peer's flow
// (peer -> LAN, the "orig" direction) and owns an SNAT (address, port) from its worker's slice
// of [1024, 65535], so the LAN's replies ("reply" direction) can be steered back to the worker
// that owns the entry: owner_worker(dport of the reply). Peers are pinned to a worker (see
// peers.h), so every packet of a connection, in both directions, is handled by one worker and
// the table needs no lock, atomic or allocation after init.
//
// Keys are the tuple as it appears in the packet ("as seen"), in host order:
//   orig:  {src = peer VA,  dst = remote,     sport = peer port,   dport = remote port}
//   reply: {src = remote,   dst = SNAT addr,  sport = remote port, dport = SNAT port}
// ICMP echo uses the identifier as the port on the side that chose it: a request is
// {sport = id, dport = 0}, its reply {sport = 0, dport = id}. So the reply key of a connection
// is its orig key reversed with the SNAT (address, port) in place of the peer's, and the tuple
// embedded in an ICMP error, reversed, is a lookup key too (nat.h IcmpError::lookup_key).
//
// Index: our own bucketised open-addressing hash rather than rte_hash. Both keys of an entry
// are derivable from the entry itself, so a bucket slot holds only a 32-bit tag and the entry
// index: a lookup touches one 64-byte bucket and then the entry (which it needs anyway), where
// rte_hash goes bucket -> key store -> data. It needs no EAL (tests run on plain memory), never
// fails an insert below capacity (the index is sized for 2 keys per entry at <= 75% load and
// probes linearly past full buckets, with F14-style overflow counts so deletes need no
// tombstones), and its hash (wyhash-style multiply) is keyed with a random per-table seed, so
// peers cannot pick tuples that pile up in one bucket without knowing it.
//
// Expiry: a clock hand over the entry array; expire(now, budget) looks at `budget` slots,
// in address order so the hardware prefetcher streams them. No timer is touched per packet
// (track() only rewrites `expires`); an entry is reclaimed at most capacity/budget calls after
// it expired (1M entries, budget 128 a loop: one sweep per 8192 loops, tens of ms). Freed
// entries go on a LIFO free stack, so a new connection usually reuses a line still in cache.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>

#include "dataplane/counter.h"

namespace sluice::dp {

inline constexpr uint8_t kProtoIcmp = 1;
inline constexpr uint8_t kProtoTcp = 6;
inline constexpr uint8_t kProtoUdp = 17;

inline constexpr uint8_t kTcpFin = 0x01;
inline constexpr uint8_t kTcpSyn = 0x02;
inline constexpr uint8_t kTcpRst = 0x04;
inline constexpr uint8_t kTcpAck = 0x10;

// First and last port (or ICMP identifier) that SNAT hands out.
inline constexpr uint16_t kNatPortFirst = 1024;
inline constexpr uint16_t kNatPortLast = 65535;

// A flow tuple as seen in a packet, host order. 16 bytes; pad must stay zero.
struct FlowKey {
  uint32_t src = 0;
  uint32_t dst = 0;
  uint16_t sport = 0;
  uint16_t dport = 0;
  uint8_t proto = 0;
  uint8_t pad[3] = {0, 0, 0};

  // The tuple of a packet going the other way.
  FlowKey reversed() const {
    FlowKey r;
    r.src = dst;
    r.dst = src;
    r.sport = dport;
    r.dport = sport;
    r.proto = proto;
    return r;
  }
  bool operator==(const FlowKey& o) const {
    return src == o.src && dst == o.dst && sport == o.sport && dport == o.dport && proto == o.proto;
  }
};
static_assert(sizeof(FlowKey) == 16);

enum class FlowDir : uint8_t { orig = 0, reply = 1 };

// One list generates the states, their names and their timeouts' config fields.
#define SLUICE_FOREACH_CONN_STATE(_)   \
  _(none, "NONE")                      \
  _(tcp_syn_sent, "SYN_SENT")          \
  _(tcp_syn_recv, "SYN_RECV")          \
  _(tcp_established, "ESTABLISHED")    \
  _(tcp_fin_wait, "FIN_WAIT")          \
  _(tcp_close_wait, "CLOSE_WAIT")      \
  _(tcp_last_ack, "LAST_ACK")          \
  _(tcp_time_wait, "TIME_WAIT")        \
  _(tcp_close, "CLOSE")                \
  _(udp_unreplied, "UDP_UNREPLIED")    \
  _(udp_replied, "UDP_REPLIED")        \
  _(icmp, "ICMP")

enum class ConnState : uint8_t {
#define SLUICE_CONN_STATE_ENUM(name, text) name,
  SLUICE_FOREACH_CONN_STATE(SLUICE_CONN_STATE_ENUM)
#undef SLUICE_CONN_STATE_ENUM
      count_
};
inline constexpr unsigned kConnStateCount = static_cast<unsigned>(ConnState::count_);
const char* conn_state_name(ConnState s);

enum class Verdict : uint8_t { unknown = 0, allow, deny };

// One connection. Exactly one cache line. Fields marked "caller" are not used by ConnTable:
// the worker caches there what it decided for the flow (policy verdict, next hop) and
// revalidates when `policy_gen` differs from the current generation.
struct alignas(64) Conn {
  // Orig tuple (peer -> LAN), host order.
  uint32_t src;    // the peer's virtual address
  uint32_t dst;    // the remote (LAN or Internet) address
  uint16_t sport;  // peer port, or the peer's ICMP echo identifier
  uint16_t dport;  // remote port, 0 for ICMP
  uint8_t proto;
  ConnState state;
  uint8_t flags;      // kConn*
  Verdict verdict;    // caller
  // Translation: the orig source becomes (snat_addr, snat_port).
  uint32_t snat_addr;
  uint16_t snat_port;  // or the ICMP echo identifier
  uint16_t out_port;   // caller: cached egress port
  uint32_t peer;       // the peer slot
  uint32_t policy_gen; // caller: generation of verdict/policy_id/rule_id
  uint64_t expires;    // in the table's ticks
  uint32_t policy_id;  // caller
  uint32_t rule_id;    // caller
  uint32_t next_hop;   // caller: cached next hop address
  uint32_t packets_orig;   // wraps at 2^32
  uint32_t packets_reply;
  uint32_t route_gen;  // caller: generation of out_port/next_hop

  FlowKey orig_key() const {
    FlowKey k;
    k.src = src, k.dst = dst, k.sport = sport, k.dport = dport, k.proto = proto;
    return k;
  }
  FlowKey reply_key() const {
    FlowKey k;
    k.src = dst, k.dst = snat_addr, k.sport = dport, k.dport = snat_port, k.proto = proto;
    return k;
  }
};
static_assert(sizeof(Conn) == 64, "a connection is one cache line");

inline constexpr uint8_t kConnSeenReply = 0x01;  // a packet went LAN -> peer
inline constexpr uint8_t kConnAssured = 0x02;    // TCP handshake completed
inline constexpr uint8_t kConnFinOrig = 0x04;    // FIN seen from the peer
inline constexpr uint8_t kConnFinReply = 0x08;   // FIN seen from the remote
inline constexpr uint8_t kConnLastFinReply = 0x10;  // the second FIN came from the remote

// Timeouts in seconds (netfilter's defaults).
struct ConnTimeouts {
  uint32_t tcp_syn_sent = 120;
  uint32_t tcp_syn_recv = 60;
  uint32_t tcp_established = 432000;
  uint32_t tcp_fin_wait = 120;
  uint32_t tcp_close_wait = 60;
  uint32_t tcp_last_ack = 30;
  uint32_t tcp_time_wait = 120;
  uint32_t tcp_close = 10;
  uint32_t udp_unreplied = 30;
  uint32_t udp_replied = 120;
  uint32_t icmp = 30;
};

// A worker's share of the SNAT port space, inclusive.
struct PortSlice {
  uint16_t first;
  uint16_t last;
  bool contains(uint16_t p) const { return p >= first && p <= last; }
  uint32_t size() const { return uint32_t(last) - first + 1; }
};

// Statistics: the owning worker writes, anyone reads.
struct ConnStats {
  Counter size;
  Counter inserts;
  Counter expired;
  Counter erased;           // removed by erase()
  Counter full_drops;       // insert refused: table full
  Counter port_exhausted;   // insert refused: no free port for that remote endpoint
};

// A copy of the table for `sluicectl conntrack`, made by the worker on request.
// Protocol: the control thread sets buf/max, then stores state = requested (release). The
// worker calls serve_snapshot() once per loop; it copies a bounded number of slots per call,
// then writes count/now and stores state = done (release). The control thread reads after an
// acquire load of done and stores idle before the next request. buf must stay valid until
// done: the worker finishes within capacity/budget loops while it runs. Entries are copied
// as of the loop that reached them (not one instant): a connection that lived throughout
// appears exactly once.
struct ConnSnapshot {
  enum State : uint8_t { idle, requested, done };
  Conn* buf = nullptr;     // cp: w before request; dp: w while requested
  size_t max = 0;          // cp: w before request
  size_t count = 0;        // dp: w; cp: r after done
  size_t total = 0;        // dp: w; live entries seen (count < total when buf was too small)
  uint64_t now = 0;        // dp: w; the worker's clock when it finished
  uint32_t cursor = 0;     // dp only
  std::atomic<uint8_t> state{idle};
};

class ConnTable {
 public:
  struct Config {
    uint32_t capacity = 65536;
    unsigned worker = 0;          // this table's worker index
    unsigned n_workers = 1;
    uint64_t ticks_per_sec = 1;   // rte_get_tsc_hz() in the dataplane: `now` is the TSC
    ConnTimeouts timeouts;
    unsigned port_attempts = 128; // random probes for a free port before giving up
    int socket_id = -1;           // >= 0: rte_zmalloc_socket (hugepages, NUMA-local);
                                  // otherwise mmap with transparent huge pages
    uint64_t seed = 0;            // hash and port randomisation; 0: from getrandom()
  };

  enum class InsertResult : uint8_t { created, existed, table_full, no_port };

  static constexpr unsigned kMaxBulk = 64;

  ConnTable() = default;
  ~ConnTable();
  ConnTable(const ConnTable&) = delete;
  ConnTable& operator=(const ConnTable&) = delete;

  bool init(const Config& cfg);

  // The worker that owns `port` of every SNAT address when there are n_workers, or
  // n_workers when the port is below kNatPortFirst (not ours to translate).
  static unsigned owner_worker(uint16_t port, unsigned n_workers);
  static PortSlice slice(unsigned worker, unsigned n_workers);
  PortSlice port_slice() const { return slice_; }

  // The connection whose `dir` key is k, or nullptr.
  Conn* lookup(const FlowKey& k, FlowDir dir);
  // Bulk form, n <= kMaxBulk: hashes, prefetches buckets, then entries, then compares.
  void lookup_bulk(const FlowKey* keys, unsigned n, FlowDir dir, Conn** out);

  // A connection for a peer's new flow (`orig` as seen from the peer), translated to
  // snat_addr and a free port of this worker's slice (unique per remote endpoint and
  // protocol). Returns it (created, or existed when `orig` was already there), or nullptr
  // with table_full or no_port counted. The initial state is SYN_SENT, UDP_UNREPLIED or ICMP;
  // the caller checks can_open() first and then calls track() for the packet.
  Conn* insert(const FlowKey& orig, uint32_t peer, uint32_t snat_addr, uint64_t now,
               InsertResult* result = nullptr);

  // Whether a packet may create a connection: TCP needs a SYN without ACK/RST/FIN;
  // UDP and ICMP echo requests always can.
  static bool can_open(uint8_t proto, uint8_t tcp_flags);

  // Accounts a packet of c in direction dir: state machine, timeout, counters. Returns false
  // for a TCP packet that does not fit the state (the connection is left untouched; the
  // caller should drop it).
  bool track(Conn& c, FlowDir dir, uint8_t tcp_flags, uint64_t now);

  // Looks at the next `budget` entry slots (clock hand) and removes the expired connections
  // among them; returns how many it removed.
  size_t expire(uint64_t now, size_t budget);
  void erase(Conn& c);

  // Copies up to `budget` slots' worth of live connections into s (see ConnSnapshot).
  void serve_snapshot(ConnSnapshot& s, uint64_t now, uint32_t budget = 8192);
  // Copies all live connections at once (tests, a stopped worker); returns how many.
  size_t copy_out(Conn* out, size_t max) const;

  // The TCP state machine alone: the next state for a packet with `tcp_flags` going `dir`,
  // updating the kConnFin*/kConnAssured bits of conn_flags. false: invalid packet.
  static bool tcp_next(ConnState cur, FlowDir dir, uint8_t tcp_flags, uint8_t& conn_flags,
                       ConnState* next);

  uint64_t timeout_ticks(ConnState s) const { return timeout_[static_cast<unsigned>(s)]; }
  uint32_t capacity() const { return cap_; }
  uint32_t size() const { return size_; }
  Conn& at(uint32_t index) { return conns_[index]; }
  uint32_t index_of(const Conn& c) const { return uint32_t(&c - conns_); }
  const ConnStats& stats() const { return stats_; }

 private:
  struct alignas(64) Bucket {
    static constexpr unsigned kSlots = 7;
    uint32_t tag[kSlots];  // 0: empty
    uint32_t idx[kSlots];
    uint32_t overflow;     // keys homed at an earlier bucket stored at or past this one
    uint32_t unused;
  };
  static_assert(sizeof(Bucket) == 64);

  uint64_t hash(const FlowKey& k, FlowDir dir) const;
  static uint32_t tag_of(uint64_t h) { uint32_t t = uint32_t(h >> 32); return t ? t : 1; }
  bool matches(const Conn& c, const FlowKey& k, FlowDir dir) const;
  Conn* find(const FlowKey& k, FlowDir dir, uint64_t h);
  void index_add(uint64_t h, uint32_t idx);
  void index_del(uint64_t h, uint32_t idx);
  bool pick_port(const FlowKey& orig, uint32_t snat_addr, uint16_t* port);
  uint64_t next_random();
  void remove(uint32_t idx, uint64_t h_orig, uint64_t h_reply);
  void* alloc(size_t bytes);
  void release(void* p, size_t bytes);

  Config cfg_;
  PortSlice slice_{kNatPortFirst, kNatPortLast};
  uint32_t cap_ = 0;
  uint32_t size_ = 0;
  uint32_t hand_ = 0;          // clock hand, an entry index
  Conn* conns_ = nullptr;      // cap_ entries; state none: free
  uint32_t* free_ = nullptr;   // [0, cap_ - size_): free entry indices, a stack
  Bucket* buckets_ = nullptr;
  uint64_t bucket_mask_ = 0;
  size_t conns_bytes_ = 0, free_bytes_ = 0, buckets_bytes_ = 0;
  uint64_t seed_[2] = {0, 0};
  uint64_t rng_ = 0;
  uint64_t timeout_[kConnStateCount] = {};
  ConnStats stats_;
};

// Maps IPv4 fragments without ports to what their first fragment decided, keyed by
// (src, dst, id, proto) as seen. Intended use, one instance per purpose and worker:
//  - on the connection's worker: first fragment -> remember(frag_key, index_of(conn)); later
//    fragments -> find() -> at(index), check the addresses still match, snat_out/unsnat_in
//    (address only for them);
//  - on a LAN RX worker: the first fragment of a reply names its owner by its port
//    (owner_worker); later ones carry no port and RSS hashes fragments on addresses only,
//    so they land on the same RX worker: remember/find the owner worker and hand them over
//    on the same ring, which keeps their order behind the first fragment.
// Fixed size, 4-way set-associative, entries age out after `ttl` ticks; a full set replaces
// its oldest entry. Fragments that arrive before their first fragment are not found (the
// caller drops them): there is no reassembly here.
struct FragKey {
  uint32_t src = 0, dst = 0;
  uint16_t id = 0;
  uint8_t proto = 0;
  uint8_t pad = 0;
  bool operator==(const FragKey& o) const {
    return src == o.src && dst == o.dst && id == o.id && proto == o.proto;
  }
};

class FragTracker {
 public:
  FragTracker() = default;
  ~FragTracker();
  FragTracker(const FragTracker&) = delete;
  FragTracker& operator=(const FragTracker&) = delete;

  bool init(uint32_t entries, uint64_t ttl_ticks, uint64_t seed = 0);
  void remember(const FragKey& k, uint32_t value, uint64_t now);
  bool find(const FragKey& k, uint64_t now, uint32_t* value) const;
  void forget(const FragKey& k);

 private:
  struct Entry {
    FragKey key;
    uint32_t value;
    uint64_t expires;  // 0: empty
  };
  static constexpr unsigned kWays = 4;
  Entry* set_of(const FragKey& k) const;

  Entry* entries_ = nullptr;
  uint32_t sets_mask_ = 0;
  uint64_t ttl_ = 0;
  uint64_t seed_ = 0;
};

}  // namespace sluice::dp
