#include "controlplane/wg/noise.h"

#include <cstring>
#include <utility>

namespace sluice::wg {
namespace {

uint32_t load_le32(const uint8_t* p) {
  return uint32_t(p[0]) | uint32_t(p[1]) << 8 | uint32_t(p[2]) << 16 | uint32_t(p[3]) << 24;
}

void store_le32(uint8_t* p, uint32_t v) {
  p[0] = uint8_t(v);
  p[1] = uint8_t(v >> 8);
  p[2] = uint8_t(v >> 16);
  p[3] = uint8_t(v >> 24);
}

// Wire fields of the packed structs go through byte pointers: no unaligned references.
template <typename Field>
uint8_t* bytes_of(Field& f) {
  return reinterpret_cast<uint8_t*>(&f);
}

Key public_of(const Key& private_key) {
  crypto_init();
  Key pub{};
  if (!dh_pubkey(pub, private_key)) pub.fill(0);
  return pub;
}

// h = HASH(h || data)
void mix_hash(Key& h, Bytes data) { hash(h, h, data); }

}  // namespace

std::string_view outcome_name(Outcome o) {
  switch (o) {
#define SLUICE_WG_NAME(name) \
  case Outcome::name:        \
    return #name;
    SLUICE_WG_HANDSHAKE_OUTCOMES(SLUICE_WG_NAME)
#undef SLUICE_WG_NAME
  }
  return "unknown";
}

size_t Noise::KeyHash::operator()(const Key& k) const {
  // Public keys are uniformly distributed; their first bytes are a good hash.
  size_t h;
  std::memcpy(&h, k.data(), sizeof(h));
  return h;
}

Noise::Noise(const Key& local_private, WallClock wall_clock)
    : local_private_(local_private),
      local_public_(public_of(local_private)),
      wall_clock_(std::move(wall_clock)),
      cookie_checker_(local_public_) {
  hash(initial_chaining_key_, label(kConstruction));
  hash(initial_hash_, initial_chaining_key_, label(kIdentifier));
  hash(responder_hash_, initial_hash_, local_public_);
}

Noise::~Noise() {
  for (auto& [id, p] : peers_) reset_handshake(p);
  for (auto& [id, p] : peers_) {
    secure_zero(p.preshared_key);
    secure_zero(p.static_static);
  }
  secure_zero(local_private_);
}

Noise::Peer* Noise::peer(uint32_t peer_id) {
  auto it = peers_.find(peer_id);
  return it == peers_.end() ? nullptr : &it->second;
}

std::optional<uint32_t> Noise::find_peer(const Key& public_key) const {
  auto it = peer_by_key_.find(public_key);
  if (it == peer_by_key_.end()) return std::nullopt;
  return it->second;
}

PeerChange Noise::set_keys(Peer& p, const Key& public_key, const Key& preshared_key) {
  Key ss;
  if (!dh(ss, local_private_, public_key)) return PeerChange::bad_key;
  p.remote_static = public_key;
  p.static_static = ss;
  p.preshared_key = preshared_key;
  secure_zero(ss);
  return PeerChange::ok;
}

PeerChange Noise::add_peer(uint32_t peer_id, const Key& public_key, const Key& preshared_key) {
  if (peers_.contains(peer_id)) return PeerChange::duplicate_id;
  if (peer_by_key_.contains(public_key) || public_key == local_public_) return PeerChange::duplicate_key;
  // Built in place: a temporary Peer would leave a copy of its secrets behind.
  Peer& p = peers_.try_emplace(peer_id).first->second;
  if (PeerChange r = set_keys(p, public_key, preshared_key); r != PeerChange::ok) {
    peers_.erase(peer_id);
    return r;
  }
  p.cookies = CookieGenerator(public_key);
  peer_by_key_.emplace(public_key, peer_id);
  return PeerChange::ok;
}

PeerChange Noise::update_peer(uint32_t peer_id, const Key& public_key, const Key& preshared_key) {
  Peer* p = peer(peer_id);
  if (p == nullptr) return PeerChange::unknown_peer;
  const bool new_key = public_key != p->remote_static;
  if (new_key && (peer_by_key_.contains(public_key) || public_key == local_public_)) {
    return PeerChange::duplicate_key;
  }
  const Key old_key = p->remote_static;
  if (PeerChange r = set_keys(*p, public_key, preshared_key); r != PeerChange::ok) return r;
  reset_handshake(*p);
  if (new_key) {
    peer_by_key_.erase(old_key);
    peer_by_key_.emplace(public_key, peer_id);
    p->cookies = CookieGenerator(public_key);
    p->last_timestamp = Tai64n{};
    p->has_consumed_initiation = false;
  }
  return PeerChange::ok;
}

PeerChange Noise::remove_peer(uint32_t peer_id) {
  Peer* p = peer(peer_id);
  if (p == nullptr) return PeerChange::unknown_peer;
  reset_handshake(*p);
  secure_zero(p->preshared_key);
  secure_zero(p->static_static);
  peer_by_key_.erase(p->remote_static);
  peers_.erase(peer_id);
  return PeerChange::ok;
}

void Noise::reset_handshake(Peer& p) {
  if (p.local_index != 0) indexes_.erase(p.local_index);
  p.local_index = 0;
  p.state = State::none;
  secure_zero(p.hash);
  secure_zero(p.chaining_key);
  secure_zero(p.local_ephemeral);
  secure_zero(p.remote_ephemeral);
}

void Noise::clear_handshake(uint32_t peer_id) {
  if (Peer* p = peer(peer_id)) reset_handshake(*p);
}

uint32_t Noise::new_index(uint32_t peer_id) {
  // With at most a few million live indexes a collision is rare; retry until unique.
  // 0 is never handed out so callers can use it as "none".
  for (;;) {
    uint32_t index;
    random_bytes(&index, sizeof(index));
    if (index == 0) continue;
    if (indexes_.try_emplace(index, IndexEntry{peer_id, false}).second) return index;
  }
}

std::optional<IndexEntry> Noise::lookup_index(uint32_t local_index) const {
  auto it = indexes_.find(local_index);
  if (it == indexes_.end()) return std::nullopt;
  return it->second;
}

bool Noise::release_index(uint32_t local_index) {
  auto it = indexes_.find(local_index);
  if (it == indexes_.end() || !it->second.session) return false;
  indexes_.erase(it);
  return true;
}

Outcome Noise::create_initiation(uint32_t peer_id, uint64_t now, MessageInitiation& out) {
  Peer* p = peer(peer_id);
  if (p == nullptr) return Outcome::unknown_peer;
  reset_handshake(*p);

  std::memset(&out, 0, sizeof(out));
  store_le32(bytes_of(out.type), uint32_t(MessageType::initiation));

  Key h = initial_hash_;
  Key ck = initial_chaining_key_;
  Key key;
  Key ss;
  mix_hash(h, p->remote_static);

  dh_generate(p->local_ephemeral);
  Key e_pub;
  if (!dh_pubkey(e_pub, p->local_ephemeral)) {
    reset_handshake(*p);
    return Outcome::bad_key;
  }
  std::memcpy(out.unencrypted_ephemeral, e_pub.data(), kKeyLen);
  mix_hash(h, e_pub);
  kdf1(ck, ck, e_pub);

  // Static key, under DH(e_i, S_r).
  if (!dh(ss, p->local_ephemeral, p->remote_static)) {
    reset_handshake(*p);
    return Outcome::bad_key;
  }
  kdf2(ck, key, ck, ss);
  aead_encrypt(out.encrypted_static, key, 0, local_public_, h);
  mix_hash(h, out.encrypted_static);

  // Timestamp, under the precomputed DH(S_i, S_r).
  kdf2(ck, key, ck, p->static_static);
  const Tai64n ts = wall_clock_();
  aead_encrypt(out.encrypted_timestamp, key, 0, ts, h);
  mix_hash(h, out.encrypted_timestamp);

  p->local_index = new_index(peer_id);
  store_le32(bytes_of(out.sender_index), p->local_index);
  p->hash = h;
  p->chaining_key = ck;
  p->state = State::initiation_created;
  p->cookies.add_macs({bytes_of(out), sizeof(out)}, now);

  secure_zero(h);
  secure_zero(ck);
  secure_zero(key);
  secure_zero(ss);
  return Outcome::ok;
}

Outcome Noise::consume_initiation(Bytes msg, Endpoint src, bool under_load, uint64_t now,
                                  uint32_t& peer_id, MessageCookieReply& cookie_reply) {
  if (msg.size() != kInitiationLen || load_le32(msg.data()) != uint32_t(MessageType::initiation)) {
    return Outcome::malformed;
  }
  if (!cookie_checker_.check_mac1(msg)) return Outcome::bad_mac1;
  if (under_load && !cookie_checker_.check_mac2(msg, src, now)) {
    cookie_checker_.create_reply(cookie_reply, msg, src, now);
    return Outcome::cookie_needed;
  }
  MessageInitiation m;
  std::memcpy(&m, msg.data(), sizeof(m));

  Outcome result = Outcome::ok;
  Key h = responder_hash_;
  Key ck = initial_chaining_key_;
  Key key;
  Key ss;
  Key remote_static;
  Tai64n ts;
  Peer* p = nullptr;
  const Bytes e{m.unencrypted_ephemeral, kKeyLen};

  mix_hash(h, e);
  kdf1(ck, ck, e);
  // Static key, under DH(S_r, e_i).
  Key e_key;
  std::memcpy(e_key.data(), m.unencrypted_ephemeral, kKeyLen);
  if (!dh(ss, local_private_, e_key)) {
    result = Outcome::bad_key;
  } else {
    kdf2(ck, key, ck, ss);
    if (!aead_decrypt(remote_static.data(), key, 0, {m.encrypted_static, sizeof(m.encrypted_static)}, h)) {
      result = Outcome::decrypt_failed;
    }
  }
  if (result == Outcome::ok) {
    mix_hash(h, m.encrypted_static);
    auto it = peer_by_key_.find(remote_static);
    if (it == peer_by_key_.end()) {
      result = Outcome::unknown_peer;
    } else {
      peer_id = it->second;
      p = peer(peer_id);
      // Timestamp, under the precomputed DH(S_r, S_i): proves the initiator holds S_i.
      kdf2(ck, key, ck, p->static_static);
      if (!aead_decrypt(ts.data(), key, 0, {m.encrypted_timestamp, sizeof(m.encrypted_timestamp)}, h)) {
        result = Outcome::decrypt_failed;
      }
    }
  }
  if (result == Outcome::ok) {
    mix_hash(h, m.encrypted_timestamp);
    // Big-endian TAI64N compares as bytes.
    if (std::memcmp(ts.data(), p->last_timestamp.data(), ts.size()) <= 0) {
      result = Outcome::replayed_timestamp;
    } else if (p->has_consumed_initiation && now - p->last_initiation_consumed <= kInitiationMinIntervalNs) {
      result = Outcome::rate_limited;
    }
  }
  if (result == Outcome::ok) {
    reset_handshake(*p);  // a pending initiation of ours to this peer is superseded
    p->hash = h;
    p->chaining_key = ck;
    p->remote_ephemeral = e_key;
    p->remote_index = load_le32(bytes_of(m.sender_index));
    p->last_timestamp = ts;
    p->last_initiation_consumed = now;
    p->has_consumed_initiation = true;
    p->state = State::initiation_consumed;
  }
  secure_zero(ck);
  secure_zero(key);
  secure_zero(ss);
  secure_zero(h);
  return result;
}

Outcome Noise::create_response(uint32_t peer_id, uint64_t now, MessageResponse& out, SessionKeys& keys) {
  Peer* p = peer(peer_id);
  if (p == nullptr) return Outcome::unknown_peer;
  if (p->state != State::initiation_consumed) return Outcome::invalid_state;

  std::memset(&out, 0, sizeof(out));
  store_le32(bytes_of(out.type), uint32_t(MessageType::response));
  store_le32(bytes_of(out.receiver_index), p->remote_index);

  Key& h = p->hash;
  Key& ck = p->chaining_key;
  Key ss;
  Key tau;
  Key key;
  Outcome result = Outcome::ok;

  dh_generate(p->local_ephemeral);
  Key e_pub;
  if (!dh_pubkey(e_pub, p->local_ephemeral)) result = Outcome::bad_key;
  if (result == Outcome::ok) {
    std::memcpy(out.unencrypted_ephemeral, e_pub.data(), kKeyLen);
    mix_hash(h, e_pub);
    kdf1(ck, ck, e_pub);
    if (!dh(ss, p->local_ephemeral, p->remote_ephemeral)) result = Outcome::bad_key;
  }
  if (result == Outcome::ok) {
    kdf1(ck, ck, ss);
    if (!dh(ss, p->local_ephemeral, p->remote_static)) result = Outcome::bad_key;
  }
  if (result == Outcome::ok) {
    kdf1(ck, ck, ss);
    kdf3(ck, tau, key, ck, p->preshared_key);
    mix_hash(h, tau);
    aead_encrypt(out.encrypted_nothing, key, 0, {}, h);
    mix_hash(h, out.encrypted_nothing);

    const uint32_t index = new_index(peer_id);
    p->local_index = index;
    store_le32(bytes_of(out.sender_index), index);
    p->cookies.add_macs({bytes_of(out), sizeof(out)}, now);
    begin_session(*p, peer_id, false, keys);
  } else {
    reset_handshake(*p);
  }
  secure_zero(ss);
  secure_zero(tau);
  secure_zero(key);
  return result;
}

Outcome Noise::consume_response(Bytes msg, Endpoint src, bool under_load, uint64_t now, SessionKeys& keys,
                                 MessageCookieReply& cookie_reply) {
  if (msg.size() != kResponseLen || load_le32(msg.data()) != uint32_t(MessageType::response)) {
    return Outcome::malformed;
  }
  if (!cookie_checker_.check_mac1(msg)) return Outcome::bad_mac1;
  if (under_load && !cookie_checker_.check_mac2(msg, src, now)) {
    cookie_checker_.create_reply(cookie_reply, msg, src, now);
    return Outcome::cookie_needed;
  }
  MessageResponse m;
  std::memcpy(&m, msg.data(), sizeof(m));

  const uint32_t receiver = load_le32(bytes_of(m.receiver_index));
  auto idx = indexes_.find(receiver);
  if (idx == indexes_.end() || idx->second.session) return Outcome::unknown_index;
  const uint32_t peer_id = idx->second.peer_id;
  Peer* p = peer(peer_id);
  if (p == nullptr || p->state != State::initiation_created || p->local_index != receiver) {
    return Outcome::unknown_index;
  }

  // Work on copies: a forged response must not disturb the pending handshake.
  Key h = p->hash;
  Key ck = p->chaining_key;
  Key ss;
  Key tau;
  Key key;
  Key e_key;
  std::memcpy(e_key.data(), m.unencrypted_ephemeral, kKeyLen);
  Outcome result = Outcome::ok;

  mix_hash(h, e_key);
  kdf1(ck, ck, e_key);
  if (!dh(ss, p->local_ephemeral, e_key)) result = Outcome::bad_key;
  if (result == Outcome::ok) {
    kdf1(ck, ck, ss);
    if (!dh(ss, local_private_, e_key)) result = Outcome::bad_key;
  }
  if (result == Outcome::ok) {
    kdf1(ck, ck, ss);
    kdf3(ck, tau, key, ck, p->preshared_key);
    mix_hash(h, tau);
    uint8_t nothing[1];
    if (!aead_decrypt(nothing, key, 0, {m.encrypted_nothing, sizeof(m.encrypted_nothing)}, h)) {
      result = Outcome::decrypt_failed;
    }
  }
  if (result == Outcome::ok) {
    mix_hash(h, m.encrypted_nothing);
    p->hash = h;
    p->chaining_key = ck;
    p->remote_index = load_le32(bytes_of(m.sender_index));
    begin_session(*p, peer_id, true, keys);
  }
  secure_zero(h);
  secure_zero(ck);
  secure_zero(ss);
  secure_zero(tau);
  secure_zero(key);
  return result;
}

void Noise::begin_session(Peer& p, uint32_t peer_id, bool initiator, SessionKeys& keys) {
  Key first;
  Key second;
  kdf2(first, second, p.chaining_key, {});
  keys.send_key = initiator ? first : second;
  keys.recv_key = initiator ? second : first;
  keys.local_index = p.local_index;
  keys.remote_index = p.remote_index;
  keys.initiator = initiator;
  keys.peer_id = peer_id;
  // The handshake's index now names the session; it is no longer the peer's to free.
  indexes_[p.local_index].session = true;
  p.local_index = 0;
  reset_handshake(p);
  secure_zero(first);
  secure_zero(second);
}

Outcome Noise::consume_cookie_reply(Bytes msg, uint64_t now, uint32_t& peer_id) {
  if (msg.size() != kCookieReplyLen || load_le32(msg.data()) != uint32_t(MessageType::cookie_reply)) {
    return Outcome::malformed;
  }
  MessageCookieReply m;
  std::memcpy(&m, msg.data(), sizeof(m));
  auto idx = indexes_.find(load_le32(bytes_of(m.receiver_index)));
  if (idx == indexes_.end()) return Outcome::unknown_index;
  Peer* p = peer(idx->second.peer_id);
  if (p == nullptr) return Outcome::unknown_peer;
  peer_id = idx->second.peer_id;
  if (!p->cookies.consume_reply(m, now)) return Outcome::decrypt_failed;
  return Outcome::ok;
}

}  // namespace sluice::wg
