#include "dataplane/conntrack.h"

#include <rte_malloc.h>
#include <sys/mman.h>
#include <sys/random.h>

#include <algorithm>
#include <cstring>

namespace sluice::dp {

namespace {

const char* const kStateNames[kConnStateCount] = {
#define SLUICE_CONN_STATE_NAME(name, text) text,
    SLUICE_FOREACH_CONN_STATE(SLUICE_CONN_STATE_NAME)
#undef SLUICE_CONN_STATE_NAME
};

// 64x64 -> 128 multiply, folded: the mixing step of wyhash.
inline uint64_t mum(uint64_t a, uint64_t b) {
  unsigned __int128 r = static_cast<unsigned __int128>(a) * b;
  return uint64_t(r) ^ uint64_t(r >> 64);
}

uint64_t random_seed() {
  uint64_t s = 0;
  if (getrandom(&s, sizeof s, 0) != sizeof s || s == 0) s = 0x9e3779b97f4a7c15ull;
  return s;
}

uint64_t splitmix(uint64_t& x) {
  uint64_t z = (x += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

uint64_t next_pow2(uint64_t v) {
  uint64_t p = 1;
  while (p < v) p <<= 1;
  return p;
}

enum class Seg : uint8_t { syn, synack, fin, ack, rst, invalid };

Seg classify(uint8_t f) {
  const uint8_t syn = f & kTcpSyn, ack = f & kTcpAck, fin = f & kTcpFin, rst = f & kTcpRst;
  if (rst) return syn ? Seg::invalid : Seg::rst;
  if (syn) {
    if (fin) return Seg::invalid;
    return ack ? Seg::synack : Seg::syn;
  }
  if (!ack) return Seg::invalid;  // only SYN and RST may come without ACK
  return fin ? Seg::fin : Seg::ack;
}

}  // namespace

const char* conn_state_name(ConnState s) {
  unsigned i = static_cast<unsigned>(s);
  return i < kConnStateCount ? kStateNames[i] : "?";
}

ConnTable::~ConnTable() {
  release(conns_, conns_bytes_);
  release(free_, free_bytes_);
  release(buckets_, buckets_bytes_);
}

void* ConnTable::alloc(size_t bytes) {
  if (cfg_.socket_id >= 0) return rte_zmalloc_socket("sluice_conntrack", bytes, 64, cfg_.socket_id);
  void* p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) return nullptr;
  if (bytes >= (2u << 20)) madvise(p, bytes, MADV_HUGEPAGE);  // best effort: fewer TLB misses
  return p;  // zero-filled
}

void ConnTable::release(void* p, size_t bytes) {
  if (p == nullptr) return;
  if (cfg_.socket_id >= 0)
    rte_free(p);
  else
    munmap(p, bytes);
}

bool ConnTable::init(const Config& cfg) {
  if (conns_ != nullptr || cfg.capacity == 0 || cfg.capacity > (1u << 28) || cfg.n_workers == 0 ||
      cfg.worker >= cfg.n_workers || cfg.n_workers > ConnTable::slice(0, 1).size() ||
      cfg.ticks_per_sec == 0 || cfg.port_attempts == 0)
    return false;
  cfg_ = cfg;
  cap_ = cfg.capacity;
  slice_ = slice(cfg.worker, cfg.n_workers);

  // Two keys per entry at <= 75% of the slots.
  const uint64_t want = (uint64_t(cap_) * 2 * 4 / 3 + Bucket::kSlots - 1) / Bucket::kSlots;
  const uint64_t nb = std::max<uint64_t>(2, next_pow2(want));
  bucket_mask_ = nb - 1;
  conns_bytes_ = size_t(cap_) * sizeof(Conn);
  free_bytes_ = size_t(cap_) * sizeof(uint32_t);
  buckets_bytes_ = size_t(nb) * sizeof(Bucket);
  conns_ = static_cast<Conn*>(alloc(conns_bytes_));
  free_ = static_cast<uint32_t*>(alloc(free_bytes_));
  buckets_ = static_cast<Bucket*>(alloc(buckets_bytes_));
  if (conns_ == nullptr || free_ == nullptr || buckets_ == nullptr) {
    release(conns_, conns_bytes_), conns_ = nullptr;
    release(free_, free_bytes_), free_ = nullptr;
    release(buckets_, buckets_bytes_), buckets_ = nullptr;
    return false;
  }
  for (uint32_t i = 0; i < cap_; i++) free_[i] = cap_ - 1 - i;  // hand out 0, 1, 2... first

  uint64_t s = cfg.seed ? cfg.seed : random_seed();
  seed_[0] = splitmix(s) | 1;
  seed_[1] = splitmix(s) | 1;
  rng_ = splitmix(s) | 1;

  const ConnTimeouts& t = cfg.timeouts;
  const uint32_t secs[kConnStateCount] = {
      0,
      t.tcp_syn_sent,
      t.tcp_syn_recv,
      t.tcp_established,
      t.tcp_fin_wait,
      t.tcp_close_wait,
      t.tcp_last_ack,
      t.tcp_time_wait,
      t.tcp_close,
      t.udp_unreplied,
      t.udp_replied,
      t.icmp,
  };
  for (unsigned i = 0; i < kConnStateCount; i++) timeout_[i] = uint64_t(secs[i]) * cfg.ticks_per_sec;
  return true;
}

// Contiguous slices, as VPP's port_per_thread: worker w owns [first + w*per, first + (w+1)*per),
// the last worker also takes the remainder.
PortSlice ConnTable::slice(unsigned worker, unsigned n_workers) {
  const uint32_t total = uint32_t(kNatPortLast) - kNatPortFirst + 1;
  const uint32_t per = total / n_workers;
  const uint32_t first = kNatPortFirst + worker * per;
  const uint32_t last = worker + 1 == n_workers ? kNatPortLast : first + per - 1;
  return PortSlice{uint16_t(first), uint16_t(last)};
}

unsigned ConnTable::owner_worker(uint16_t port, unsigned n_workers) {
  if (port < kNatPortFirst) return n_workers;
  const uint32_t per = (uint32_t(kNatPortLast) - kNatPortFirst + 1) / n_workers;
  return std::min<unsigned>((port - kNatPortFirst) / per, n_workers - 1);
}

uint64_t ConnTable::hash(const FlowKey& k, FlowDir dir) const {
  const uint64_t a = uint64_t(k.src) << 32 | k.dst;
  const uint64_t b = uint64_t(k.sport) << 48 | uint64_t(k.dport) << 32 | uint64_t(k.proto) << 8 |
                     static_cast<uint64_t>(dir);
  return mum(a ^ seed_[0], b ^ seed_[1]);
}

bool ConnTable::matches(const Conn& c, const FlowKey& k, FlowDir dir) const {
  if (c.proto != k.proto) return false;
  if (dir == FlowDir::orig)
    return c.src == k.src && c.dst == k.dst && c.sport == k.sport && c.dport == k.dport;
  return c.dst == k.src && c.snat_addr == k.dst && c.dport == k.sport && c.snat_port == k.dport;
}

Conn* ConnTable::find(const FlowKey& k, FlowDir dir, uint64_t h) {
  const uint32_t tag = tag_of(h);
  uint64_t b = h & bucket_mask_;
  for (;;) {
    const Bucket& bk = buckets_[b];
    for (unsigned i = 0; i < Bucket::kSlots; i++) {
      if (bk.tag[i] == tag) {
        Conn& c = conns_[bk.idx[i]];
        if (matches(c, k, dir)) return &c;
      }
    }
    if (bk.overflow == 0) return nullptr;
    b = (b + 1) & bucket_mask_;
  }
}

Conn* ConnTable::lookup(const FlowKey& k, FlowDir dir) { return find(k, dir, hash(k, dir)); }

void ConnTable::lookup_bulk(const FlowKey* keys, unsigned n, FlowDir dir, Conn** out) {
  uint64_t h[kMaxBulk];
  uint32_t cand[kMaxBulk];  // first tag match in the home bucket, or UINT32_MAX
  n = std::min(n, kMaxBulk);
  for (unsigned j = 0; j < n; j++) {
    h[j] = hash(keys[j], dir);
    __builtin_prefetch(&buckets_[h[j] & bucket_mask_]);
  }
  for (unsigned j = 0; j < n; j++) {
    const Bucket& bk = buckets_[h[j] & bucket_mask_];
    const uint32_t tag = tag_of(h[j]);
    cand[j] = UINT32_MAX;
    for (unsigned i = 0; i < Bucket::kSlots; i++) {
      if (bk.tag[i] == tag) {
        cand[j] = bk.idx[i];
        __builtin_prefetch(&conns_[cand[j]]);
        break;
      }
    }
  }
  for (unsigned j = 0; j < n; j++) {
    if (cand[j] != UINT32_MAX && matches(conns_[cand[j]], keys[j], dir)) {
      out[j] = &conns_[cand[j]];
      continue;
    }
    // A false tag match, a second match or an overflowed home bucket: the full walk.
    const Bucket& bk = buckets_[h[j] & bucket_mask_];
    out[j] = (cand[j] == UINT32_MAX && bk.overflow == 0) ? nullptr : find(keys[j], dir, h[j]);
  }
}

void ConnTable::index_add(uint64_t h, uint32_t idx) {
  uint64_t b = h & bucket_mask_;
  for (;;) {
    Bucket& bk = buckets_[b];
    for (unsigned i = 0; i < Bucket::kSlots; i++) {
      if (bk.tag[i] == 0) {
        bk.tag[i] = tag_of(h);
        bk.idx[i] = idx;
        return;
      }
    }
    // Full: the key goes further; lookups of keys homed here must follow it.
    bk.overflow++;
    b = (b + 1) & bucket_mask_;
  }
}

void ConnTable::index_del(uint64_t h, uint32_t idx) {
  const uint32_t tag = tag_of(h);
  const uint64_t home = h & bucket_mask_;
  uint64_t b = home;
  for (uint64_t walked = 0; walked <= bucket_mask_; walked++) {
    Bucket& bk = buckets_[b];
    for (unsigned i = 0; i < Bucket::kSlots; i++) {
      if (bk.tag[i] == tag && bk.idx[i] == idx) {
        bk.tag[i] = 0;
        for (uint64_t p = home; p != b; p = (p + 1) & bucket_mask_) buckets_[p].overflow--;
        return;
      }
    }
    b = (b + 1) & bucket_mask_;
  }
  // Unreachable: every live entry has both keys in the index.
}

uint64_t ConnTable::next_random() {
  // xorshift64*: cheap, and good enough to make ports unpredictable to a LAN observer.
  rng_ ^= rng_ >> 12;
  rng_ ^= rng_ << 25;
  rng_ ^= rng_ >> 27;
  return rng_ * 0x2545f4914f6cdd1dull;
}

bool ConnTable::pick_port(const FlowKey& orig, uint32_t snat_addr, uint16_t* port) {
  // Endpoint-dependent (as Linux): a port is taken only for the same remote endpoint and
  // protocol, so the check is one index lookup of the would-be reply key. Random probes
  // (RFC 6056) find a free port in 1/(1-u) tries when a fraction u of the slice is used
  // towards that endpoint.
  FlowKey r;
  r.src = orig.dst;
  r.dst = snat_addr;
  r.sport = orig.dport;
  r.proto = orig.proto;
  const uint32_t n = slice_.size();
  for (unsigned a = 0; a < cfg_.port_attempts; a++) {
    r.dport = uint16_t(slice_.first + ((next_random() >> 32) * n >> 32));
    if (find(r, FlowDir::reply, hash(r, FlowDir::reply)) == nullptr) {
      *port = r.dport;
      return true;
    }
  }
  return false;
}

bool ConnTable::can_open(uint8_t proto, uint8_t tcp_flags) {
  if (proto != kProtoTcp) return proto == kProtoUdp || proto == kProtoIcmp;
  return (tcp_flags & (kTcpSyn | kTcpAck | kTcpRst | kTcpFin)) == kTcpSyn;
}

Conn* ConnTable::insert(const FlowKey& orig, uint32_t peer, uint32_t snat_addr, uint64_t now,
                        InsertResult* result) {
  InsertResult dummy;
  InsertResult& res = result ? *result : dummy;
  const uint64_t ho = hash(orig, FlowDir::orig);
  if (Conn* c = find(orig, FlowDir::orig, ho)) {
    res = InsertResult::existed;
    return c;
  }
  if (size_ == cap_) {
    stats_.full_drops.add();
    res = InsertResult::table_full;
    return nullptr;
  }
  uint16_t port;
  if (!pick_port(orig, snat_addr, &port)) {
    stats_.port_exhausted.add();
    res = InsertResult::no_port;
    return nullptr;
  }
  const uint32_t idx = free_[cap_ - 1 - size_];
  Conn& c = conns_[idx];
  c = Conn{};
  c.src = orig.src;
  c.dst = orig.dst;
  c.sport = orig.sport;
  c.dport = orig.dport;
  c.proto = orig.proto;
  c.state = orig.proto == kProtoTcp   ? ConnState::tcp_syn_sent
            : orig.proto == kProtoUdp ? ConnState::udp_unreplied
                                      : ConnState::icmp;
  c.snat_addr = snat_addr;
  c.snat_port = port;
  c.out_port = UINT16_MAX;
  c.peer = peer;
  c.expires = now + timeout_ticks(c.state);
  size_++;
  index_add(ho, idx);
  index_add(hash(c.reply_key(), FlowDir::reply), idx);
  stats_.inserts.add();
  stats_.size.set(size_);
  res = InsertResult::created;
  return &c;
}

bool ConnTable::tcp_next(ConnState cur, FlowDir dir, uint8_t tcp_flags, uint8_t& cf,
                         ConnState* next) {
  using S = ConnState;
  const Seg seg = classify(tcp_flags);
  const bool orig = dir == FlowDir::orig;
  const uint8_t my_fin = orig ? kConnFinOrig : kConnFinReply;
  S n = cur;
  if (seg == Seg::invalid) return false;
  if (seg == Seg::rst) {
    *next = S::tcp_close;
    return true;
  }
  switch (cur) {
    case S::tcp_syn_sent:
      if (orig && seg == Seg::syn) break;                           // retransmission
      if (!orig && seg == Seg::synack) { n = S::tcp_syn_recv; break; }
      return false;
    case S::tcp_syn_recv:
      if (orig) {
        if (seg == Seg::ack) { n = S::tcp_established; cf |= kConnAssured; break; }
        if (seg == Seg::syn) break;                                  // SYN-ACK lost
        if (seg == Seg::fin) { n = S::tcp_fin_wait; cf |= my_fin; break; }
        return false;
      }
      if (seg == Seg::synack || seg == Seg::ack) break;              // retransmission, TFO data
      if (seg == Seg::fin) { n = S::tcp_fin_wait; cf |= my_fin; break; }
      return false;
    case S::tcp_established:
      if (seg == Seg::ack) break;
      if (seg == Seg::fin) { n = S::tcp_fin_wait; cf |= my_fin; break; }
      if (!orig && seg == Seg::synack) break;                        // late retransmission
      return false;
    case S::tcp_fin_wait:
    case S::tcp_close_wait:
      if (seg == Seg::fin) {
        if (cf & my_fin) break;                                      // retransmitted FIN
        cf |= my_fin;
        cf = orig ? uint8_t(cf & ~kConnLastFinReply) : uint8_t(cf | kConnLastFinReply);
        n = S::tcp_last_ack;
        break;
      }
      if (seg == Seg::ack) {
        // The other side acknowledges the first FIN (or still sends: a half-closed stream).
        if (cur == S::tcp_fin_wait && !(cf & my_fin)) n = S::tcp_close_wait;
        break;
      }
      return false;
    case S::tcp_last_ack:
      if (seg == Seg::ack || seg == Seg::fin) {
        const bool last_fin_orig = !(cf & kConnLastFinReply);
        if (seg == Seg::ack && orig != last_fin_orig) n = S::tcp_time_wait;
        break;
      }
      return false;
    case S::tcp_time_wait:
    case S::tcp_close:
      if (seg == Seg::syn && orig) {                                  // the tuple is reused
        cf &= uint8_t(~(kConnFinOrig | kConnFinReply | kConnLastFinReply));
        n = S::tcp_syn_sent;
        break;
      }
      if (seg == Seg::ack || seg == Seg::fin) break;
      return false;
    default:
      return false;
  }
  *next = n;
  return true;
}

bool ConnTable::track(Conn& c, FlowDir dir, uint8_t tcp_flags, uint64_t now) {
  if (c.proto == kProtoTcp) {
    ConnState n;
    uint8_t f = c.flags;
    if (!tcp_next(c.state, dir, tcp_flags, f, &n)) return false;
    c.state = n;
    c.flags = f;
  }
  if (dir == FlowDir::reply) {
    c.flags |= kConnSeenReply;
    c.packets_reply++;
    if (c.proto == kProtoUdp) c.state = ConnState::udp_replied;
  } else {
    c.packets_orig++;
  }
  c.expires = now + timeout_[static_cast<unsigned>(c.state)];
  return true;
}

void ConnTable::remove(uint32_t idx, uint64_t h_orig, uint64_t h_reply) {
  index_del(h_orig, idx);
  index_del(h_reply, idx);
  conns_[idx].state = ConnState::none;
  free_[cap_ - size_] = idx;  // push on the free stack
  size_--;
}

void ConnTable::erase(Conn& c) {
  remove(index_of(c), hash(c.orig_key(), FlowDir::orig), hash(c.reply_key(), FlowDir::reply));
  stats_.erased.add();
  stats_.size.set(size_);
}

size_t ConnTable::expire(uint64_t now, size_t budget) {
  if (size_ == 0) return 0;
  budget = std::min<size_t>(budget, cap_);
  size_t removed = 0;
  // Collect a batch of expired entries and prefetch their buckets, then unlink them: the
  // bucket misses overlap instead of coming one after another.
  constexpr unsigned kBatch = 32;
  uint32_t idx[kBatch];
  uint64_t ho[kBatch], hr[kBatch];
  while (budget > 0) {
    unsigned n = 0;
    for (; budget > 0 && n < kBatch; budget--) {
      const uint32_t i = hand_;
      if (++hand_ == cap_) hand_ = 0;
      const Conn& c = conns_[i];
      if (c.state == ConnState::none || c.expires > now) continue;
      idx[n] = i;
      ho[n] = hash(c.orig_key(), FlowDir::orig);
      hr[n] = hash(c.reply_key(), FlowDir::reply);
      __builtin_prefetch(&buckets_[ho[n] & bucket_mask_], 1);
      __builtin_prefetch(&buckets_[hr[n] & bucket_mask_], 1);
      n++;
    }
    for (unsigned j = 0; j < n; j++) remove(idx[j], ho[j], hr[j]);
    removed += n;
  }
  if (removed) {
    stats_.expired.add(removed);
    stats_.size.set(size_);
  }
  return removed;
}

void ConnTable::serve_snapshot(ConnSnapshot& s, uint64_t now, uint32_t budget) {
  if (s.state.load(std::memory_order_acquire) != ConnSnapshot::requested) return;
  if (s.cursor == 0) s.count = s.total = 0;
  // Entries never move, so a walk spread over several loops sees each long-lived one once.
  const uint32_t end = uint32_t(std::min<uint64_t>(uint64_t(s.cursor) + budget, cap_));
  for (uint32_t i = s.cursor; i < end; i++) {
    const Conn& c = conns_[i];
    if (c.state == ConnState::none) continue;
    s.total++;
    if (s.count < s.max) s.buf[s.count++] = c;
  }
  s.cursor = end;
  if (end == cap_) {
    s.cursor = 0;
    s.now = now;
    s.state.store(ConnSnapshot::done, std::memory_order_release);
  }
}

size_t ConnTable::copy_out(Conn* out, size_t max) const {
  size_t n = 0;
  for (uint32_t i = 0; i < cap_ && n < max; i++)
    if (conns_[i].state != ConnState::none) out[n++] = conns_[i];
  return n;
}

// --- FragTracker ---

FragTracker::~FragTracker() { delete[] entries_; }

bool FragTracker::init(uint32_t entries, uint64_t ttl_ticks, uint64_t seed) {
  if (entries_ != nullptr || entries < kWays || ttl_ticks == 0) return false;
  const uint64_t sets = next_pow2((entries + kWays - 1) / kWays);
  entries_ = new Entry[sets * kWays]();
  sets_mask_ = uint32_t(sets - 1);
  ttl_ = ttl_ticks;
  uint64_t s = seed ? seed : random_seed();
  seed_ = splitmix(s) | 1;
  return true;
}

FragTracker::Entry* FragTracker::set_of(const FragKey& k) const {
  const uint64_t a = uint64_t(k.src) << 32 | k.dst;
  const uint64_t b = uint64_t(k.id) << 8 | k.proto;
  return &entries_[(mum(a ^ seed_, b ^ (seed_ >> 7 | 1)) & sets_mask_) * kWays];
}

void FragTracker::remember(const FragKey& k, uint32_t value, uint64_t now) {
  Entry* set = set_of(k);
  Entry* victim = &set[0];
  for (unsigned w = 0; w < kWays; w++) {
    Entry& e = set[w];
    if (e.expires != 0 && e.key == k) {
      victim = &e;
      break;
    }
    if (e.expires < victim->expires) victim = &e;  // empty (0) or oldest
  }
  victim->key = k;
  victim->value = value;
  victim->expires = now + ttl_;
}

bool FragTracker::find(const FragKey& k, uint64_t now, uint32_t* value) const {
  const Entry* set = set_of(k);
  for (unsigned w = 0; w < kWays; w++) {
    const Entry& e = set[w];
    if (e.expires > now && e.key == k) {
      *value = e.value;
      return true;
    }
  }
  return false;
}

void FragTracker::forget(const FragKey& k) {
  Entry* set = set_of(k);
  for (unsigned w = 0; w < kWays; w++)
    if (set[w].expires != 0 && set[w].key == k) set[w].expires = 0;
}

}  // namespace sluice::dp
