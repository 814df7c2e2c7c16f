// The handshake engine between in-process identities, against a golden initiation made by an
// independent Python transcription of the whitepaper, and on every reject path.
#include "controlplane/wg/noise.h"

#include <gtest/gtest.h>
#include <sodium.h>

#include <cstring>
#include <set>
#include <string>
#include <vector>

namespace sluice::wg {
namespace {

constexpr uint64_t kMs = 1'000'000;
constexpr uint64_t kSec = 1'000'000'000;

struct Identity {
  Key priv;
  Key pub;
};

Identity make_identity() {
  Identity id;
  dh_generate(id.priv);
  EXPECT_TRUE(dh_pubkey(id.pub, id.priv));
  return id;
}

Identity fixed_identity(uint8_t fill) {
  Identity id;
  id.priv.fill(fill);
  EXPECT_TRUE(dh_pubkey(id.pub, id.priv));
  return id;
}

template <typename M>
Bytes wire(const M& m) {
  return {reinterpret_cast<const uint8_t*>(&m), sizeof(m)};
}

template <typename M>
std::span<uint8_t> wire_mut(M& m) {
  return {reinterpret_cast<uint8_t*>(&m), sizeof(m)};
}

uint32_t le32(const uint8_t* p) { return uint32_t(p[0]) | uint32_t(p[1]) << 8 | uint32_t(p[2]) << 16 | uint32_t(p[3]) << 24; }

template <typename Field>
uint32_t field32(const Field& f) {
  return le32(reinterpret_cast<const uint8_t*>(&f));
}

template <typename Field>
void set_field32(Field& f, uint32_t v) {
  uint8_t* p = reinterpret_cast<uint8_t*>(&f);
  for (int i = 0; i < 4; ++i) p[i] = uint8_t(v >> (8 * i));
}

std::vector<uint8_t> unhex(const std::string& s) {
  std::vector<uint8_t> out(s.size() / 2);
  for (size_t i = 0; i < out.size(); ++i) out[i] = uint8_t(std::stoul(s.substr(2 * i, 2), nullptr, 16));
  return out;
}

Key key_from_hex(const std::string& s) {
  Key k;
  auto v = unhex(s);
  std::copy(v.begin(), v.end(), k.begin());
  return k;
}

// Transport data as the data plane will build it, with libsodium directly.
std::vector<uint8_t> seal_transport(const SessionKeys& k, uint64_t counter, const std::string& payload) {
  std::vector<uint8_t> pkt(kTransportHeaderLen + payload.size() + kTagLen);
  MessageTransportHeader hdr{};
  set_field32(hdr.type, uint32_t(MessageType::transport));
  set_field32(hdr.receiver_index, k.remote_index);
  for (int i = 0; i < 8; ++i) reinterpret_cast<uint8_t*>(&hdr.counter)[i] = uint8_t(counter >> (8 * i));
  std::memcpy(pkt.data(), &hdr, sizeof(hdr));
  uint8_t nonce[12] = {};
  std::memcpy(nonce + 4, &hdr.counter, 8);
  crypto_aead_chacha20poly1305_ietf_encrypt(pkt.data() + kTransportHeaderLen, nullptr,
                                            reinterpret_cast<const uint8_t*>(payload.data()), payload.size(),
                                            nullptr, 0, nullptr, nonce, k.send_key.data());
  return pkt;
}

bool open_transport(const SessionKeys& k, const std::vector<uint8_t>& pkt, std::string& payload) {
  MessageTransportHeader hdr;
  std::memcpy(&hdr, pkt.data(), sizeof(hdr));
  if (field32(hdr.receiver_index) != k.local_index) return false;
  uint8_t nonce[12] = {};
  std::memcpy(nonce + 4, &hdr.counter, 8);
  payload.resize(pkt.size() - kTransportHeaderLen - kTagLen);
  return crypto_aead_chacha20poly1305_ietf_decrypt(reinterpret_cast<uint8_t*>(payload.data()), nullptr, nullptr,
                                                   pkt.data() + kTransportHeaderLen, pkt.size() - kTransportHeaderLen,
                                                   nullptr, 0, nonce, k.recv_key.data()) == 0;
}

// A's side holds B as peer kPeerB; B's side holds A as kPeerA.
constexpr uint32_t kPeerA = 9;
constexpr uint32_t kPeerB = 7;
const Endpoint kSrcA{0x0a000001, 51820};
const Endpoint kSrcB{0x0a000002, 51821};

class NoiseTest : public ::testing::Test {
 protected:
  NoiseTest()
      : a_id_(make_identity()),
        b_id_(make_identity()),
        a_(a_id_.priv, clock(&a_secs_)),
        b_(b_id_.priv, clock(&b_secs_)) {}

  void SetUp() override {
    ASSERT_EQ(a_.add_peer(kPeerB, b_id_.pub), PeerChange::ok);
    ASSERT_EQ(b_.add_peer(kPeerA, a_id_.pub), PeerChange::ok);
  }

  static Noise::WallClock clock(uint64_t* secs) {
    return [secs] { return tai64n((*secs)++, 0); };
  }

  // One complete handshake A -> B at now_, then advances now_ by a second.
  void handshake(SessionKeys& ka, SessionKeys& kb) {
    MessageInitiation init;
    ASSERT_EQ(a_.create_initiation(kPeerB, now_, init), Outcome::ok);
    uint32_t peer = 0;
    MessageCookieReply cr;
    ASSERT_EQ(b_.consume_initiation(wire(init), kSrcA, false, now_, peer, cr), Outcome::ok);
    ASSERT_EQ(peer, kPeerA);
    MessageResponse resp;
    ASSERT_EQ(b_.create_response(kPeerA, now_, resp, kb), Outcome::ok);
    ASSERT_EQ(a_.consume_response(wire(resp), kSrcB, false, now_, ka, cr), Outcome::ok);
    now_ += kSec;
  }

  static void expect_crosswise(const SessionKeys& ka, const SessionKeys& kb) {
    EXPECT_EQ(ka.send_key, kb.recv_key);
    EXPECT_EQ(ka.recv_key, kb.send_key);
    EXPECT_NE(ka.send_key, ka.recv_key);
    EXPECT_EQ(ka.local_index, kb.remote_index);
    EXPECT_EQ(ka.remote_index, kb.local_index);
    EXPECT_TRUE(ka.initiator);
    EXPECT_FALSE(kb.initiator);
    EXPECT_EQ(ka.peer_id, kPeerB);
    EXPECT_EQ(kb.peer_id, kPeerA);
  }

  uint64_t a_secs_ = 1'700'000'000;
  uint64_t b_secs_ = 1'700'000'000;
  uint64_t now_ = 1000 * kSec;
  Identity a_id_;
  Identity b_id_;
  Noise a_;
  Noise b_;
};

TEST_F(NoiseTest, HandshakeWithoutPskGivesCrosswiseKeysAndWorkingTransport) {
  SessionKeys ka, kb;
  handshake(ka, kb);
  expect_crosswise(ka, kb);

  std::string got;
  auto to_b = seal_transport(ka, 0, "ping from A");
  ASSERT_TRUE(open_transport(kb, to_b, got));
  EXPECT_EQ(got, "ping from A");
  auto to_a = seal_transport(kb, 0, "pong from B");
  ASSERT_TRUE(open_transport(ka, to_a, got));
  EXPECT_EQ(got, "pong from B");
  // A's own packet does not open with A's receive key.
  EXPECT_FALSE(open_transport(ka, to_b, got));
}

TEST_F(NoiseTest, HandshakeWithPsk) {
  Key psk;
  random_bytes(psk.data(), psk.size());
  ASSERT_EQ(a_.update_peer(kPeerB, b_id_.pub, psk), PeerChange::ok);
  ASSERT_EQ(b_.update_peer(kPeerA, a_id_.pub, psk), PeerChange::ok);
  SessionKeys ka, kb;
  handshake(ka, kb);
  expect_crosswise(ka, kb);
  std::string got;
  ASSERT_TRUE(open_transport(kb, seal_transport(ka, 42, "with psk"), got));
  EXPECT_EQ(got, "with psk");

  // The PSK changes the keys: a PSK-less handshake between the same statics differs.
  ASSERT_EQ(a_.update_peer(kPeerB, b_id_.pub), PeerChange::ok);
  ASSERT_EQ(b_.update_peer(kPeerA, a_id_.pub), PeerChange::ok);
  SessionKeys ka2, kb2;
  handshake(ka2, kb2);
  expect_crosswise(ka2, kb2);
  EXPECT_NE(ka2.send_key, ka.send_key);
}

TEST_F(NoiseTest, MismatchedPskFailsAtTheResponse) {
  Key p1, p2;
  p1.fill(1);
  p2.fill(2);
  ASSERT_EQ(a_.update_peer(kPeerB, b_id_.pub, p1), PeerChange::ok);
  ASSERT_EQ(b_.update_peer(kPeerA, a_id_.pub, p2), PeerChange::ok);
  MessageInitiation init;
  ASSERT_EQ(a_.create_initiation(kPeerB, now_, init), Outcome::ok);
  uint32_t peer;
  MessageCookieReply cr;
  ASSERT_EQ(b_.consume_initiation(wire(init), kSrcA, false, now_, peer, cr), Outcome::ok);
  MessageResponse resp;
  SessionKeys kb, ka;
  ASSERT_EQ(b_.create_response(kPeerA, now_, resp, kb), Outcome::ok);
  EXPECT_EQ(a_.consume_response(wire(resp), kSrcB, false, now_, ka, cr), Outcome::decrypt_failed);
}

TEST_F(NoiseTest, WireFieldsOfMessages) {
  MessageInitiation init;
  ASSERT_EQ(a_.create_initiation(kPeerB, now_, init), Outcome::ok);
  const uint8_t* p = wire(init).data();
  EXPECT_EQ(p[0], 1);
  EXPECT_EQ(p[1] | p[2] | p[3], 0);
  const uint32_t sender = field32(init.sender_index);
  EXPECT_NE(sender, 0u);
  EXPECT_TRUE(is_zero({init.mac2, kMacLen}));  // no cookie yet
  // mac1 = MAC(HASH("mac1----" || S_r), msg[0:116]), computed here from the definition.
  Key mac1_key;
  hash(mac1_key, label(kLabelMac1), b_id_.pub);
  Mac m;
  mac(m, mac1_key, wire(init).first(kInitiationMac1Offset));
  EXPECT_EQ(0, std::memcmp(m.data(), init.mac1, kMacLen));

  uint32_t peer;
  MessageCookieReply cr;
  ASSERT_EQ(b_.consume_initiation(wire(init), kSrcA, false, now_, peer, cr), Outcome::ok);
  MessageResponse resp;
  SessionKeys kb;
  ASSERT_EQ(b_.create_response(kPeerA, now_, resp, kb), Outcome::ok);
  EXPECT_EQ(wire(resp)[0], 2);
  EXPECT_EQ(field32(resp.receiver_index), sender);
  EXPECT_EQ(field32(resp.sender_index), kb.local_index);
  EXPECT_EQ(kb.remote_index, sender);
}

// Initiation made by an independent Python transcription of the whitepaper (hashlib.blake2s,
// hmac, pyca/cryptography X25519 and ChaCha20Poly1305): initiator static 0x11..., responder static
// 0x22..., ephemeral 0x33..., sender index 0x01020304, timestamp TAI64N(1700000000 s, 0.5 s).
TEST(NoiseGolden, ConsumesReferenceInitiationAndAnswersIt) {
  crypto_init();
  const Identity init_id = fixed_identity(0x11);
  const Identity resp_id = fixed_identity(0x22);
  Key ei_priv;
  ei_priv.fill(0x33);
  EXPECT_EQ(init_id.pub, key_from_hex("7b4e909bbe7ffe44c465a220037d608ee35897d31ef972f07f74892cb0f73f13"));
  EXPECT_EQ(resp_id.pub, key_from_hex("0faa684ed28867b97f4a6a2dee5df8ce974e76b7018e3f22a1c4cf2678570f20"));
  const auto golden = unhex(
      "01000000040302017b0d47d93427f8311160781c7c733fd89f88970aef490d8aa0ee19a4cb8a1b1481e498317da959fb"
      "a46669572516a5e6c021bfa620bb6c56ca0082e1feae14988c2c64d024c617734a263f76a008df04d0f94bad8ee75ec8"
      "fcc26955822044b2d7331053ca37046285bfbc84484f9e51ab888f740717d97bef7d694f000000000000000000000000"
      "00000000");
  ASSERT_EQ(golden.size(), kInitiationLen);
  // The initiator's transcript hash and chaining key after the initiation (from the same script).
  const Key h_after = key_from_hex("e11b0e21f5e697174a850710ed829170584b30de799939127d3571ae1eee834d");
  const Key ck_after = key_from_hex("24eca314409f2ca9ccbf8d50ebb72b7235d67ed11b21eeefc67942a2596df51e");

  Noise responder(resp_id.priv);
  ASSERT_EQ(responder.add_peer(5, init_id.pub), PeerChange::ok);
  uint32_t peer = 0;
  MessageCookieReply cr;
  ASSERT_EQ(responder.consume_initiation(golden, kSrcA, false, 1, peer, cr), Outcome::ok);
  EXPECT_EQ(peer, 5u);
  MessageResponse resp;
  SessionKeys kr;
  ASSERT_EQ(responder.create_response(5, 1, resp, kr), Outcome::ok);
  EXPECT_EQ(field32(resp.receiver_index), 0x01020304u);
  EXPECT_EQ(kr.remote_index, 0x01020304u);

  // Finish the handshake as the initiator does (whitepaper 5.4.3), step by step.
  Key h = h_after, ck = ck_after, ss, tau, key;
  const Key er = [&] {
    Key k;
    std::memcpy(k.data(), resp.unencrypted_ephemeral, kKeyLen);
    return k;
  }();
  hash(h, h, er);
  kdf1(ck, ck, er);
  ASSERT_TRUE(dh(ss, ei_priv, er));
  kdf1(ck, ck, ss);
  ASSERT_TRUE(dh(ss, init_id.priv, er));
  kdf1(ck, ck, ss);
  kdf3(ck, tau, key, ck, Key{});
  hash(h, h, tau);
  uint8_t none[1];
  ASSERT_TRUE(aead_decrypt(none, key, 0, {resp.encrypted_nothing, kTagLen}, h));
  Key t_send, t_recv;
  kdf2(t_send, t_recv, ck, {});
  EXPECT_EQ(kr.recv_key, t_send);
  EXPECT_EQ(kr.send_key, t_recv);

  Key mac1_key;
  hash(mac1_key, label(kLabelMac1), init_id.pub);
  Mac m;
  mac(m, mac1_key, wire(resp).first(kResponseMac1Offset));
  EXPECT_EQ(0, std::memcmp(m.data(), resp.mac1, kMacLen));

  // Replaying the reference initiation is refused.
  EXPECT_EQ(responder.consume_initiation(golden, kSrcA, false, 10 * kSec, peer, cr), Outcome::replayed_timestamp);
}

TEST_F(NoiseTest, ReplayedInitiationIsRejected) {
  MessageInitiation init;
  ASSERT_EQ(a_.create_initiation(kPeerB, now_, init), Outcome::ok);
  uint32_t peer = 0;
  MessageCookieReply cr;
  ASSERT_EQ(b_.consume_initiation(wire(init), kSrcA, false, now_, peer, cr), Outcome::ok);
  peer = 0;
  EXPECT_EQ(b_.consume_initiation(wire(init), kSrcA, false, now_ + 5 * kSec, peer, cr),
            Outcome::replayed_timestamp);
  EXPECT_EQ(peer, kPeerA);  // known for per-peer counters
}

TEST_F(NoiseTest, TimestampMustStrictlyIncrease) {
  MessageInitiation first, older, same;
  ASSERT_EQ(a_.create_initiation(kPeerB, now_, first), Outcome::ok);
  uint32_t peer;
  MessageCookieReply cr;
  ASSERT_EQ(b_.consume_initiation(wire(first), kSrcA, false, now_, peer, cr), Outcome::ok);

  a_secs_ -= 10;  // A's wall clock stepped back
  ASSERT_EQ(a_.create_initiation(kPeerB, now_, older), Outcome::ok);
  EXPECT_EQ(b_.consume_initiation(wire(older), kSrcA, false, now_ + kSec, peer, cr), Outcome::replayed_timestamp);

  a_secs_ += 8;  // back to the timestamp of `first`: equal is not enough
  ASSERT_EQ(a_.create_initiation(kPeerB, now_, same), Outcome::ok);
  EXPECT_EQ(b_.consume_initiation(wire(same), kSrcA, false, now_ + 2 * kSec, peer, cr),
            Outcome::replayed_timestamp);

  MessageInitiation newer;
  ASSERT_EQ(a_.create_initiation(kPeerB, now_, newer), Outcome::ok);
  EXPECT_EQ(b_.consume_initiation(wire(newer), kSrcA, false, now_ + 3 * kSec, peer, cr), Outcome::ok);
}

TEST_F(NoiseTest, InitiationFloodFromOnePeerIsRateLimited) {
  MessageInitiation i1, i2, i3;
  uint32_t peer;
  MessageCookieReply cr;
  ASSERT_EQ(a_.create_initiation(kPeerB, now_, i1), Outcome::ok);
  ASSERT_EQ(b_.consume_initiation(wire(i1), kSrcA, false, now_, peer, cr), Outcome::ok);
  ASSERT_EQ(a_.create_initiation(kPeerB, now_, i2), Outcome::ok);  // newer timestamp
  EXPECT_EQ(b_.consume_initiation(wire(i2), kSrcA, false, now_ + kInitiationMinIntervalNs, peer, cr),
            Outcome::rate_limited);
  // A rate-limited initiation does not count: it is still acceptable once the interval passed.
  EXPECT_EQ(b_.consume_initiation(wire(i2), kSrcA, false, now_ + kInitiationMinIntervalNs + 1, peer, cr),
            Outcome::ok);
  ASSERT_EQ(a_.create_initiation(kPeerB, now_, i3), Outcome::ok);
  EXPECT_EQ(b_.consume_initiation(wire(i3), kSrcA, false, now_ + kInitiationMinIntervalNs + 2 * kMs, peer, cr),
            Outcome::rate_limited);
}

TEST_F(NoiseTest, BadMac1IsRejected) {
  MessageInitiation init;
  ASSERT_EQ(a_.create_initiation(kPeerB, now_, init), Outcome::ok);
  uint32_t peer;
  MessageCookieReply cr;
  MessageInitiation bad = init;
  bad.mac1[0] ^= 1;
  EXPECT_EQ(b_.consume_initiation(wire(bad), kSrcA, false, now_, peer, cr), Outcome::bad_mac1);
  bad = init;
  bad.encrypted_timestamp[3] ^= 1;  // mac1 covers the body
  EXPECT_EQ(b_.consume_initiation(wire(bad), kSrcA, false, now_, peer, cr), Outcome::bad_mac1);

  // An initiator that has the wrong public key for us computes the wrong mac1.
  Identity c = make_identity();
  Noise a2(a_id_.priv);
  ASSERT_EQ(a2.add_peer(1, c.pub), PeerChange::ok);
  ASSERT_EQ(a2.create_initiation(1, now_, bad), Outcome::ok);
  EXPECT_EQ(b_.consume_initiation(wire(bad), kSrcA, false, now_, peer, cr), Outcome::bad_mac1);

  // The untouched message still passes.
  EXPECT_EQ(b_.consume_initiation(wire(init), kSrcA, false, now_, peer, cr), Outcome::ok);
}

TEST_F(NoiseTest, MalformedMessagesAreRejected) {
  MessageInitiation init;
  ASSERT_EQ(a_.create_initiation(kPeerB, now_, init), Outcome::ok);
  uint32_t peer;
  MessageCookieReply cr;
  EXPECT_EQ(b_.consume_initiation(wire(init).first(kInitiationLen - 1), kSrcA, false, now_, peer, cr),
            Outcome::malformed);
  MessageInitiation bad = init;
  reinterpret_cast<uint8_t*>(&bad)[2] = 1;  // reserved bytes must be zero
  EXPECT_EQ(b_.consume_initiation(wire(bad), kSrcA, false, now_, peer, cr), Outcome::malformed);
  SessionKeys k;
  EXPECT_EQ(a_.consume_response(wire(init), kSrcB, false, now_, k, cr), Outcome::malformed);
  EXPECT_EQ(a_.consume_cookie_reply(wire(init).first(kCookieReplyLen), now_, peer), Outcome::malformed);
}

TEST_F(NoiseTest, UnknownPeerIsRejected) {
  Identity d = make_identity();
  Noise dn(d.priv);
  ASSERT_EQ(dn.add_peer(1, b_id_.pub), PeerChange::ok);
  MessageInitiation init;
  ASSERT_EQ(dn.create_initiation(1, now_, init), Outcome::ok);
  uint32_t peer = 12345;
  MessageCookieReply cr;
  EXPECT_EQ(b_.consume_initiation(wire(init), kSrcA, false, now_, peer, cr), Outcome::unknown_peer);
  EXPECT_EQ(peer, 12345u);  // untouched: no peer was identified
  EXPECT_EQ(a_.create_initiation(999, now_, init), Outcome::unknown_peer);
  MessageResponse resp;
  SessionKeys k;
  EXPECT_EQ(b_.create_response(999, now_, resp, k), Outcome::unknown_peer);
  // A peer removed after its initiation was accepted can no longer be answered.
  ASSERT_EQ(a_.create_initiation(kPeerB, now_, init), Outcome::ok);
  ASSERT_EQ(b_.consume_initiation(wire(init), kSrcA, false, now_, peer, cr), Outcome::ok);
  ASSERT_EQ(b_.remove_peer(kPeerA), PeerChange::ok);
  EXPECT_EQ(b_.create_response(kPeerA, now_, resp, k), Outcome::unknown_peer);
}

TEST_F(NoiseTest, ForgedStaticOrTimestampFailsToDecrypt) {
  MessageInitiation init;
  ASSERT_EQ(a_.create_initiation(kPeerB, now_, init), Outcome::ok);
  CookieGenerator restamp(b_id_.pub);  // anyone can compute mac1 from B's public key
  uint32_t peer;
  MessageCookieReply cr;
  MessageInitiation bad = init;
  bad.encrypted_static[0] ^= 1;
  restamp.add_macs(wire_mut(bad), now_);
  EXPECT_EQ(b_.consume_initiation(wire(bad), kSrcA, false, now_, peer, cr), Outcome::decrypt_failed);
  bad = init;
  bad.encrypted_timestamp[0] ^= 1;
  restamp.add_macs(wire_mut(bad), now_);
  EXPECT_EQ(b_.consume_initiation(wire(bad), kSrcA, false, now_, peer, cr), Outcome::decrypt_failed);
  // A low-order ephemeral makes DH(S_r, E_i) zero.
  bad = init;
  std::memset(bad.unencrypted_ephemeral, 0, kKeyLen);
  restamp.add_macs(wire_mut(bad), now_);
  EXPECT_EQ(b_.consume_initiation(wire(bad), kSrcA, false, now_, peer, cr), Outcome::bad_key);
  EXPECT_EQ(b_.consume_initiation(wire(init), kSrcA, false, now_, peer, cr), Outcome::ok);
}

TEST_F(NoiseTest, ResponseToUnknownIndexIsRejected) {
  MessageInitiation init;
  ASSERT_EQ(a_.create_initiation(kPeerB, now_, init), Outcome::ok);
  uint32_t peer;
  MessageCookieReply cr;
  ASSERT_EQ(b_.consume_initiation(wire(init), kSrcA, false, now_, peer, cr), Outcome::ok);
  MessageResponse resp;
  SessionKeys kb, ka;
  ASSERT_EQ(b_.create_response(kPeerA, now_, resp, kb), Outcome::ok);

  MessageResponse wrong = resp;
  set_field32(wrong.receiver_index, field32(resp.receiver_index) ^ 0x5a5a5a5a);
  CookieGenerator restamp(a_id_.pub);
  restamp.add_macs(wire_mut(wrong), now_);
  EXPECT_EQ(a_.consume_response(wire(wrong), kSrcB, false, now_, ka, cr), Outcome::unknown_index);

  // A forged ephemeral does not authenticate and leaves the pending handshake intact.
  MessageResponse forged = resp;
  Identity junk = make_identity();
  std::memcpy(forged.unencrypted_ephemeral, junk.pub.data(), kKeyLen);
  restamp.add_macs(wire_mut(forged), now_);
  EXPECT_EQ(a_.consume_response(wire(forged), kSrcB, false, now_, ka, cr), Outcome::decrypt_failed);

  ASSERT_EQ(a_.consume_response(wire(resp), kSrcB, false, now_, ka, cr), Outcome::ok);
  expect_crosswise(ka, kb);
  // The same response again: the index now names a session, not a pending handshake.
  EXPECT_EQ(a_.consume_response(wire(resp), kSrcB, false, now_, ka, cr), Outcome::unknown_index);
}

TEST_F(NoiseTest, ResponseWithoutConsumedInitiationIsInvalidState) {
  MessageResponse resp;
  SessionKeys k;
  EXPECT_EQ(b_.create_response(kPeerA, now_, resp, k), Outcome::invalid_state);
  SessionKeys ka, kb;
  handshake(ka, kb);
  EXPECT_EQ(b_.create_response(kPeerA, now_, resp, k), Outcome::invalid_state);  // only once
}

TEST_F(NoiseTest, NewInitiationSupersedesThePendingOne) {
  MessageInitiation i1, i2;
  ASSERT_EQ(a_.create_initiation(kPeerB, now_, i1), Outcome::ok);
  ASSERT_EQ(a_.create_initiation(kPeerB, now_, i2), Outcome::ok);
  EXPECT_FALSE(a_.lookup_index(field32(i1.sender_index)).has_value());
  EXPECT_TRUE(a_.lookup_index(field32(i2.sender_index)).has_value());
  // B answers the first one (arrived first); A no longer has it.
  uint32_t peer;
  MessageCookieReply cr;
  ASSERT_EQ(b_.consume_initiation(wire(i1), kSrcA, false, now_, peer, cr), Outcome::ok);
  MessageResponse resp;
  SessionKeys kb, ka;
  ASSERT_EQ(b_.create_response(kPeerA, now_, resp, kb), Outcome::ok);
  EXPECT_EQ(a_.consume_response(wire(resp), kSrcB, false, now_, ka, cr), Outcome::unknown_index);
}

TEST_F(NoiseTest, UnderLoadCookieRoundTrip) {
  MessageInitiation init;
  ASSERT_EQ(a_.create_initiation(kPeerB, now_, init), Outcome::ok);
  uint32_t peer = 0;
  MessageCookieReply cr;
  ASSERT_EQ(b_.consume_initiation(wire(init), kSrcA, true, now_, peer, cr), Outcome::cookie_needed);
  EXPECT_EQ(wire(cr)[0], 3);
  EXPECT_EQ(field32(cr.receiver_index), field32(init.sender_index));

  ASSERT_EQ(a_.consume_cookie_reply(wire(cr), now_, peer), Outcome::ok);
  EXPECT_EQ(peer, kPeerB);

  now_ += kSec;
  MessageInitiation retry;
  ASSERT_EQ(a_.create_initiation(kPeerB, now_, retry), Outcome::ok);
  EXPECT_FALSE(is_zero({retry.mac2, kMacLen}));
  // The cookie is bound to A's address and port.
  EXPECT_EQ(b_.consume_initiation(wire(retry), Endpoint{kSrcA.ip, uint16_t(kSrcA.port + 1)}, true, now_, peer, cr),
            Outcome::cookie_needed);
  ASSERT_EQ(b_.consume_initiation(wire(retry), kSrcA, true, now_, peer, cr), Outcome::ok);
  MessageResponse resp;
  SessionKeys kb, ka;
  ASSERT_EQ(b_.create_response(kPeerA, now_, resp, kb), Outcome::ok);
  EXPECT_TRUE(is_zero({resp.mac2, kMacLen}));  // B holds no cookie from A

  // Now A is under load: the response lacks mac2, A answers with a cookie to B's session index.
  MessageCookieReply cr_a;
  ASSERT_EQ(a_.consume_response(wire(resp), kSrcB, true, now_, ka, cr_a), Outcome::cookie_needed);
  EXPECT_EQ(field32(cr_a.receiver_index), kb.local_index);
  ASSERT_EQ(b_.consume_cookie_reply(wire(cr_a), now_, peer), Outcome::ok);
  EXPECT_EQ(peer, kPeerA);
  // Not under load, the same response completes the handshake.
  ASSERT_EQ(a_.consume_response(wire(resp), kSrcB, false, now_, ka, cr), Outcome::ok);
  expect_crosswise(ka, kb);

  // A's cookie from B expires after COOKIE_REFRESH: mac2 goes back to zeros.
  now_ += kCookieRefreshNs;
  ASSERT_EQ(a_.create_initiation(kPeerB, now_, init), Outcome::ok);
  EXPECT_TRUE(is_zero({init.mac2, kMacLen}));
  EXPECT_EQ(b_.consume_initiation(wire(init), kSrcA, true, now_, peer, cr), Outcome::cookie_needed);
}

TEST_F(NoiseTest, CookieReplyFromTheWrongPeerIsRejected) {
  MessageInitiation init;
  ASSERT_EQ(a_.create_initiation(kPeerB, now_, init), Outcome::ok);
  // C answers A's initiation to B with a cookie sealed under C's key: A expects B's.
  Identity c = make_identity();
  CookieChecker c_checker(c.pub);
  MessageCookieReply cr;
  c_checker.create_reply(cr, wire(init), kSrcA, now_);
  uint32_t peer;
  EXPECT_EQ(a_.consume_cookie_reply(wire(cr), now_, peer), Outcome::decrypt_failed);

  // B's genuine reply, tampered, does not authenticate either.
  ASSERT_EQ(b_.consume_initiation(wire(init), kSrcA, true, now_, peer, cr), Outcome::cookie_needed);
  MessageCookieReply tampered = cr;
  tampered.encrypted_cookie[0] ^= 1;
  EXPECT_EQ(a_.consume_cookie_reply(wire(tampered), now_, peer), Outcome::decrypt_failed);
  tampered = cr;
  set_field32(tampered.receiver_index, field32(cr.receiver_index) + 1);
  EXPECT_EQ(a_.consume_cookie_reply(wire(tampered), now_, peer), Outcome::unknown_index);
  // A reply bound to an older mac1 fails once A has sent a newer message.
  MessageInitiation newer;
  ASSERT_EQ(a_.create_initiation(kPeerB, now_, newer), Outcome::ok);
  set_field32(cr.receiver_index, field32(newer.sender_index));
  EXPECT_EQ(a_.consume_cookie_reply(wire(cr), now_, peer), Outcome::decrypt_failed);
}

TEST_F(NoiseTest, IndexesAreUniqueAndReleased) {
  constexpr uint32_t kPeers = 300;
  std::vector<Identity> ids;
  std::set<uint32_t> seen;
  for (uint32_t i = 0; i < kPeers; ++i) {
    ids.push_back(make_identity());
    ASSERT_EQ(a_.add_peer(100 + i, ids.back().pub), PeerChange::ok);
    MessageInitiation init;
    ASSERT_EQ(a_.create_initiation(100 + i, now_, init), Outcome::ok);
    const uint32_t idx = field32(init.sender_index);
    EXPECT_NE(idx, 0u);
    EXPECT_TRUE(seen.insert(idx).second);
    auto e = a_.lookup_index(idx);
    ASSERT_TRUE(e.has_value());
    EXPECT_EQ(e->peer_id, 100 + i);
    EXPECT_FALSE(e->session);
  }
  EXPECT_EQ(a_.index_count(), kPeers);
  // Pending handshake indexes are not the caller's to release; clear_handshake and remove free them.
  const uint32_t first = *seen.begin();
  const uint32_t owner = a_.lookup_index(first)->peer_id;
  EXPECT_FALSE(a_.release_index(first));
  a_.clear_handshake(owner);
  EXPECT_FALSE(a_.lookup_index(first).has_value());
  ASSERT_EQ(a_.remove_peer(100), PeerChange::ok);
  EXPECT_LE(a_.index_count(), kPeers - 1);

  // Session indexes stay reserved until released, also across new handshakes and peer removal.
  const size_t before = a_.index_count();
  SessionKeys ka, kb, ka2, kb2;
  handshake(ka, kb);
  handshake(ka2, kb2);
  EXPECT_NE(ka.local_index, ka2.local_index);
  EXPECT_EQ(a_.index_count(), before + 2);
  auto e = a_.lookup_index(ka.local_index);
  ASSERT_TRUE(e.has_value());
  EXPECT_TRUE(e->session);
  EXPECT_EQ(e->peer_id, kPeerB);
  EXPECT_TRUE(b_.lookup_index(kb.local_index)->session);
  ASSERT_EQ(a_.remove_peer(kPeerB), PeerChange::ok);
  EXPECT_TRUE(a_.lookup_index(ka.local_index).has_value());
  EXPECT_TRUE(a_.release_index(ka.local_index));
  EXPECT_FALSE(a_.lookup_index(ka.local_index).has_value());
  EXPECT_FALSE(a_.release_index(ka.local_index));
  EXPECT_TRUE(a_.release_index(ka2.local_index));
  EXPECT_EQ(a_.index_count(), before);
}

TEST_F(NoiseTest, PeerManagement) {
  Identity c = make_identity();
  EXPECT_EQ(a_.add_peer(kPeerB, c.pub), PeerChange::duplicate_id);
  EXPECT_EQ(a_.add_peer(50, b_id_.pub), PeerChange::duplicate_key);
  EXPECT_EQ(a_.add_peer(50, a_id_.pub), PeerChange::duplicate_key);  // ourselves
  EXPECT_EQ(a_.add_peer(50, Key{}), PeerChange::bad_key);            // low order
  EXPECT_EQ(a_.update_peer(50, c.pub), PeerChange::unknown_peer);
  EXPECT_EQ(a_.remove_peer(50), PeerChange::unknown_peer);
  ASSERT_EQ(a_.add_peer(50, c.pub), PeerChange::ok);
  EXPECT_EQ(a_.peer_count(), 2u);
  EXPECT_EQ(a_.find_peer(c.pub), 50u);
  EXPECT_EQ(a_.update_peer(50, b_id_.pub), PeerChange::duplicate_key);

  Identity c2 = make_identity();
  ASSERT_EQ(a_.update_peer(50, c2.pub), PeerChange::ok);
  EXPECT_FALSE(a_.find_peer(c.pub).has_value());
  EXPECT_EQ(a_.find_peer(c2.pub), 50u);
  ASSERT_EQ(a_.remove_peer(50), PeerChange::ok);
  EXPECT_FALSE(a_.find_peer(c2.pub).has_value());
  EXPECT_EQ(a_.peer_count(), 1u);

  // Updating a peer abandons its pending handshake.
  MessageInitiation init;
  ASSERT_EQ(a_.create_initiation(kPeerB, now_, init), Outcome::ok);
  ASSERT_EQ(a_.update_peer(kPeerB, b_id_.pub), PeerChange::ok);
  EXPECT_FALSE(a_.lookup_index(field32(init.sender_index)).has_value());
  EXPECT_EQ(a_.index_count(), 0u);
}

TEST_F(NoiseTest, NewPublicKeyResetsReplayState) {
  SessionKeys ka, kb;
  handshake(ka, kb);
  // A's identity is replaced by A2, whose clock is far behind A's.
  Identity a2 = make_identity();
  uint64_t a2_secs = 1'000;
  Noise a2n(a2.priv, clock(&a2_secs));
  ASSERT_EQ(a2n.add_peer(kPeerB, b_id_.pub), PeerChange::ok);
  ASSERT_EQ(b_.update_peer(kPeerA, a2.pub), PeerChange::ok);
  MessageInitiation init;
  ASSERT_EQ(a2n.create_initiation(kPeerB, now_, init), Outcome::ok);
  uint32_t peer;
  MessageCookieReply cr;
  EXPECT_EQ(b_.consume_initiation(wire(init), kSrcA, false, now_, peer, cr), Outcome::ok);
  EXPECT_EQ(peer, kPeerA);
}

TEST(NoiseOutcome, NamesAreDistinctSnakeCase) {
  std::set<std::string> names;
  for (size_t i = 0; i < kOutcomeCount; ++i) {
    const std::string n(outcome_name(Outcome(i)));
    EXPECT_FALSE(n.empty());
    EXPECT_EQ(n.find_first_not_of("abcdefghijklmnopqrstuvwxyz_0123456789"), std::string::npos) << n;
    EXPECT_TRUE(names.insert(n).second) << n;
  }
  EXPECT_EQ(kOutcomeCount, 11u);
  EXPECT_EQ(outcome_name(Outcome::ok), "ok");
  EXPECT_EQ(outcome_name(Outcome::bad_mac1), "bad_mac1");
  EXPECT_EQ(outcome_name(Outcome::cookie_needed), "cookie_needed");
  EXPECT_EQ(outcome_name(Outcome::replayed_timestamp), "replayed_timestamp");
  EXPECT_EQ(outcome_name(Outcome::rate_limited), "rate_limited");
  EXPECT_EQ(outcome_name(Outcome::unknown_index), "unknown_index");
}

}  // namespace
}  // namespace sluice::wg
