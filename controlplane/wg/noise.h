// The WireGuard handshake (Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s, whitepaper 5.4) for one local
// static identity and many peers, with mac1/mac2 cookies and the handshake index table.
//
// Control thread only: not thread-safe, never throws for protocol failures. `now` is monotonic
// nanoseconds (cookie ages, initiation flood limit); the TAI64N wall clock is injected.
//
// Responder:
//   uint32_t peer; MessageCookieReply cr;
//   switch (noise.consume_initiation(pkt, src, under_load, now, peer, cr)) {
//     case Outcome::ok: noise.create_response(peer, now, resp, keys); send resp; install keys; break;
//     case Outcome::cookie_needed: send cr to src; break;
//     default: count it; }
// Initiator:
//   noise.create_initiation(peer, now, init); send init; ... on a response packet:
//   noise.consume_response(pkt, src, under_load, now, keys, cr) == Outcome::ok -> install keys.
//   A cookie reply: noise.consume_cookie_reply(pkt, now, peer); the next initiation carries mac2.
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <optional>
#include <string_view>
#include <unordered_map>

#include "controlplane/wg/cookie.h"
#include "controlplane/wg/primitives.h"
#include "dataplane/wg/protocol.h"

namespace sluice::wg {

// wireguard-go's HandshakeInitationRate: at most 50 initiations per second consumed per peer.
inline constexpr uint64_t kInitiationMinIntervalNs = kNsPerSecond / 50;

// Why a handshake message was accepted or dropped; the names are metric labels.
#define SLUICE_WG_HANDSHAKE_OUTCOMES(X)                                                        \
  X(ok)                 /* accepted */                                                         \
  X(malformed)          /* wrong length or type field */                                       \
  X(bad_mac1)           /* mac1 does not match our public key */                               \
  X(cookie_needed)      /* under load and mac2 missing or stale: a cookie reply was made */    \
  X(unknown_peer)       /* static key (or peer_id) not configured */                           \
  X(decrypt_failed)     /* an AEAD (static, timestamp, empty, cookie) did not authenticate */  \
  X(bad_key)            /* a DH gave the all-zero shared secret (low-order point) */           \
  X(replayed_timestamp) /* TAI64N not greater than the greatest seen from this peer */         \
  X(rate_limited)       /* initiations from this peer faster than kInitiationMinIntervalNs */  \
  X(unknown_index)      /* response or cookie reply to no pending handshake of ours */         \
  X(invalid_state)      /* create_response without a consumed initiation */

enum class Outcome : uint8_t {
#define SLUICE_WG_ENUM(name) name,
  SLUICE_WG_HANDSHAKE_OUTCOMES(SLUICE_WG_ENUM)
#undef SLUICE_WG_ENUM
};
inline constexpr size_t kOutcomeCount = 0
#define SLUICE_WG_COUNT(name) +1
    SLUICE_WG_HANDSHAKE_OUTCOMES(SLUICE_WG_COUNT)
#undef SLUICE_WG_COUNT
    ;
std::string_view outcome_name(Outcome o);

enum class PeerChange : uint8_t {
  ok,
  duplicate_id,   // add_peer: peer_id already configured
  duplicate_key,  // public key already used by another peer, or our own
  unknown_peer,   // update_peer/remove_peer: no such peer_id
  bad_key,        // DH(local, public) is all zero: the key can never complete a handshake
};

// Transport keys of one completed handshake. The caller owns them: install them in the data plane
// and secure_zero() this struct. Keypair rules (see timers.h): the initiator may send at once; the
// responder must not send on these keys until it has received the first transport message on them.
struct SessionKeys {
  std::array<uint8_t, 32> send_key;
  std::array<uint8_t, 32> recv_key;
  uint32_t local_index;   // receiver index peers put on transport data to us; reserved until
                          // release_index()
  uint32_t remote_index;  // receiver index we put on transport data to the peer
  bool initiator;
  uint32_t peer_id;
};

struct IndexEntry {
  uint32_t peer_id;
  bool session;  // true: taken by SessionKeys (until release_index), false: a pending handshake
};

class Noise {
 public:
  using WallClock = std::function<Tai64n()>;

  explicit Noise(const Key& local_private, WallClock wall_clock = tai64n_now);
  ~Noise();  // zeroes every key
  Noise(const Noise&) = delete;
  Noise& operator=(const Noise&) = delete;

  const Key& local_public() const { return local_public_; }

  // Peers. A zero preshared key means none (it is the same computation). Adding precomputes
  // DH(local, remote) and the peer's mac1/cookie keys. Changing a peer abandons its pending
  // handshake; a new public key also resets its replay timestamp and cookie.
  // Removing a peer frees its pending handshake index; its session indexes stay reserved until
  // the caller releases them (release them before reusing the peer_id).
  PeerChange add_peer(uint32_t peer_id, const Key& public_key, const Key& preshared_key = Key{});
  PeerChange update_peer(uint32_t peer_id, const Key& public_key, const Key& preshared_key = Key{});
  PeerChange remove_peer(uint32_t peer_id);
  std::optional<uint32_t> find_peer(const Key& public_key) const;
  size_t peer_count() const { return peers_.size(); }

  // Responder. Checks length/type, mac1, mac2 when under_load (else fills cookie_reply and returns
  // cookie_needed), decrypts and authenticates the initiator, then the replay and flood checks.
  // peer_id is set as soon as the peer is known (for per-peer counters), also on rejects.
  // On ok, the peer's handshake waits for create_response (which any later initiation replaces).
  Outcome consume_initiation(Bytes msg, Endpoint src, bool under_load, uint64_t now, uint32_t& peer_id,
                             MessageCookieReply& cookie_reply);
  // The response to the initiation just consumed from peer_id, with mac1/mac2, and its session.
  Outcome create_response(uint32_t peer_id, uint64_t now, MessageResponse& out, SessionKeys& keys);

  // Initiator. A new initiation replaces the peer's pending handshake and frees its index.
  Outcome create_initiation(uint32_t peer_id, uint64_t now, MessageInitiation& out);
  // Completes our pending handshake named by the receiver index. Macs as for consume_initiation.
  Outcome consume_response(Bytes msg, Endpoint src, bool under_load, uint64_t now, SessionKeys& keys,
                           MessageCookieReply& cookie_reply);
  // A cookie reply to any index of ours (pending handshake or session); on ok, messages to peer_id
  // carry mac2 for COOKIE_REFRESH.
  Outcome consume_cookie_reply(Bytes msg, uint64_t now, uint32_t& peer_id);

  // Forgets the peer's pending handshake (retries given up, keys zeroed) and frees its index.
  void clear_handshake(uint32_t peer_id);

  // Local indexes: random, non-zero, unique among pending handshakes and live sessions.
  std::optional<IndexEntry> lookup_index(uint32_t local_index) const;
  // Frees a session index (the session's keys are gone). False if it is not a session index.
  bool release_index(uint32_t local_index);
  size_t index_count() const { return indexes_.size(); }

 private:
  enum class State : uint8_t { none, initiation_created, initiation_consumed };

  struct Peer {
    Key remote_static;
    Key preshared_key;
    Key static_static;  // DH(local private, remote static)
    CookieGenerator cookies;
    State state = State::none;
    Key hash{};
    Key chaining_key{};
    Key local_ephemeral{};  // private
    Key remote_ephemeral{};
    uint32_t local_index = 0;  // 0: none
    uint32_t remote_index = 0;
    Tai64n last_timestamp{};
    uint64_t last_initiation_consumed = 0;
    bool has_consumed_initiation = false;
  };

  struct KeyHash {
    size_t operator()(const Key& k) const;
  };

  Peer* peer(uint32_t peer_id);
  PeerChange set_keys(Peer& p, const Key& public_key, const Key& preshared_key);
  void reset_handshake(Peer& p);
  uint32_t new_index(uint32_t peer_id);
  void begin_session(Peer& p, uint32_t peer_id, bool initiator, SessionKeys& keys);

  Key local_private_;
  Key local_public_;
  Key initial_hash_;       // HASH(HASH(construction) || identifier)
  Key initial_chaining_key_;
  Key responder_hash_;     // HASH(initial_hash || our public key): first step of every initiation
  WallClock wall_clock_;
  CookieChecker cookie_checker_;
  std::unordered_map<uint32_t, Peer> peers_;
  std::unordered_map<Key, uint32_t, KeyHash> peer_by_key_;
  std::unordered_map<uint32_t, IndexEntry> indexes_;
};

}  // namespace sluice::wg
