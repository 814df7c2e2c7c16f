// Known-answer tests for the handshake primitives. Expected values come from the construction
// strings (the well-known initial chaining key and hash) and from Python's hashlib.blake2s/hmac.
#include "controlplane/wg/primitives.h"

#include <gtest/gtest.h>
#include <sodium.h>

#include <string>
#include <vector>

namespace sluice::wg {
namespace {

std::vector<uint8_t> unhex(const std::string& s) {
  std::vector<uint8_t> out(s.size() / 2);
  for (size_t i = 0; i < out.size(); ++i) out[i] = uint8_t(std::stoul(s.substr(2 * i, 2), nullptr, 16));
  return out;
}

template <typename C>
std::string hex(const C& c) {
  static const char* d = "0123456789abcdef";
  std::string s;
  for (uint8_t b : c) {
    s += d[b >> 4];
    s += d[b & 15];
  }
  return s;
}

Key seq_key() {
  Key k;
  for (size_t i = 0; i < k.size(); ++i) k[i] = uint8_t(i);
  return k;
}

const std::string kFox = "The quick brown fox jumps over the lazy dog";
Bytes fox() { return {reinterpret_cast<const uint8_t*>(kFox.data()), kFox.size()}; }

class Primitives : public ::testing::Test {
 protected:
  void SetUp() override { crypto_init(); }
};

TEST_F(Primitives, InitialChainingKeyAndHash) {
  Key ck;
  hash(ck, label(kConstruction));
  EXPECT_EQ(hex(ck), "60e26daef327efc02ec335e2a025d2d016eb4206f87277f52d38d1988b78cd36");
  Key h;
  hash(h, ck, label(kIdentifier));
  EXPECT_EQ(hex(h), "2211b361081ac566691243db458ad5322d9c6c662293e8b70ee19c65ba079ef3");
}

TEST_F(Primitives, HashOfConcatenationEqualsTwoPartHash) {
  Key a, b;
  hash(a, fox());
  hash(b, fox().first(10), fox().subspan(10));
  EXPECT_EQ(a, b);
}

TEST_F(Primitives, HmacBlake2sKnownAnswers) {
  Key out;
  hmac(out, seq_key(), fox());
  EXPECT_EQ(hex(out), "f4660dee21c6a48e2a3d695ceedc26693e37b64b5ac5227476578517ee87fe6d");
  hmac(out, seq_key(), {});
  EXPECT_EQ(hex(out), "e2641d24dfa8dd89e8cb77f1cdc77d8c006e5bebdfc4d6a3a3a6f8d5b7586fb0");
  std::vector<uint8_t> long_key(100);
  for (size_t i = 0; i < long_key.size(); ++i) long_key[i] = uint8_t(i);
  hmac(out, long_key, fox());  // keys longer than the 64-byte block are hashed first
  EXPECT_EQ(hex(out), "62bc55ee982e83e9f80ff756c037bac835c4201c91817685b52396da1482a6e4");
}

TEST_F(Primitives, KeyedMac128KnownAnswer) {
  Mac m;
  mac(m, seq_key(), fox());
  EXPECT_EQ(hex(m), "4e2219ec6d234a478e4ace91429bbce4");
}

TEST_F(Primitives, KdfKnownAnswers) {
  Key t1, t2, t3;
  kdf3(t1, t2, t3, seq_key(), fox());
  EXPECT_EQ(hex(t1), "c471865b3d2b771612913b81650c7c69ca16c5ac72ae83aaf2e47dc5337e67fc");
  EXPECT_EQ(hex(t2), "2411eee3c28d42aa1059e1d4a1d9622de9d3af8ecc67a0a2f7775a4af463a1df");
  EXPECT_EQ(hex(t3), "c909be26cedc47c1b8e0dad92bfb74fde4fc061980c7d398142c5e0a3c48f4e1");
  Key u1, u2;
  kdf2(u1, u2, seq_key(), fox());
  EXPECT_EQ(u1, t1);
  EXPECT_EQ(u2, t2);
  kdf1(u1, seq_key(), fox());
  EXPECT_EQ(u1, t1);
  // Empty input: the transport key derivation.
  kdf2(u1, u2, seq_key(), {});
  EXPECT_EQ(hex(u1), "7a38c34bf2b8738d7374ca77c44ecb309a11d2b2528304fa86052c365e722624");
  EXPECT_EQ(hex(u2), "1a17621f346abdc520746a9fb64d8eb03231d674fc15687537b0780fd9c060fd");
}

TEST_F(Primitives, KdfOutputMayAliasChainingKey) {
  Key ck = seq_key();
  Key t2;
  kdf2(ck, t2, ck, fox());
  EXPECT_EQ(hex(ck), "c471865b3d2b771612913b81650c7c69ca16c5ac72ae83aaf2e47dc5337e67fc");
  EXPECT_EQ(hex(t2), "2411eee3c28d42aa1059e1d4a1d9622de9d3af8ecc67a0a2f7775a4af463a1df");
}

TEST_F(Primitives, DiffieHellmanAgreesAndRejectsLowOrderPoints) {
  Key a, b, pa, pb, s1, s2;
  dh_generate(a);
  dh_generate(b);
  EXPECT_EQ(a[0] & 7, 0);  // clamped
  EXPECT_EQ(a[31] & 0xc0, 0x40);
  ASSERT_TRUE(dh_pubkey(pa, a));
  ASSERT_TRUE(dh_pubkey(pb, b));
  ASSERT_TRUE(dh(s1, a, pb));
  ASSERT_TRUE(dh(s2, b, pa));
  EXPECT_EQ(s1, s2);
  EXPECT_FALSE(is_zero(s1));

  // X25519 public key of a fixed private key (RFC 7748 section 6.1, Alice).
  auto alice = unhex("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a");
  Key ak;
  std::copy(alice.begin(), alice.end(), ak.begin());
  ASSERT_TRUE(dh_pubkey(pa, ak));
  EXPECT_EQ(hex(pa), "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a");

  Key zero{};
  EXPECT_FALSE(dh(s1, a, zero));
  EXPECT_TRUE(is_zero(s1));
  Key one{};
  one[0] = 1;  // u = 1 has order 4: a clamped scalar (multiple of 8) maps it to zero
  EXPECT_FALSE(dh(s1, a, one));
}

TEST_F(Primitives, AeadUsesLittleEndianCounterNonce) {
  Key k = seq_key();
  const uint64_t counter = 0x0102030405060708ull;
  std::vector<uint8_t> ct(kFox.size() + kTagLen);
  const uint8_t aad[3] = {1, 2, 3};
  aead_encrypt(ct.data(), k, counter, fox(), aad);

  uint8_t nonce[12] = {0, 0, 0, 0, 8, 7, 6, 5, 4, 3, 2, 1};
  std::vector<uint8_t> ref(ct.size());
  crypto_aead_chacha20poly1305_ietf_encrypt(ref.data(), nullptr, fox().data(), fox().size(), aad, sizeof(aad),
                                            nullptr, nonce, k.data());
  EXPECT_EQ(ct, ref);

  std::vector<uint8_t> pt(kFox.size());
  ASSERT_TRUE(aead_decrypt(pt.data(), k, counter, ct, aad));
  EXPECT_EQ(std::string(pt.begin(), pt.end()), kFox);
  EXPECT_FALSE(aead_decrypt(pt.data(), k, counter + 1, ct, aad));
  ct[5] ^= 1;
  EXPECT_FALSE(aead_decrypt(pt.data(), k, counter, ct, aad));
  EXPECT_FALSE(aead_decrypt(pt.data(), k, counter, Bytes(ct).first(kTagLen - 1), aad));

  // Empty plaintext: 16-byte tag only ("encrypted nothing").
  uint8_t tag[kTagLen];
  aead_encrypt(tag, k, 0, {}, aad);
  uint8_t none[1];
  EXPECT_TRUE(aead_decrypt(none, k, 0, tag, aad));
}

TEST_F(Primitives, XaeadRoundTrip) {
  Key k = seq_key();
  uint8_t nonce[kCookieNonceLen];
  random_bytes(nonce, sizeof(nonce));
  Mac cookie;
  random_bytes(cookie.data(), cookie.size());
  uint8_t ct[kMacLen + kTagLen];
  const uint8_t aad[kMacLen] = {9};
  xaead_encrypt(ct, k, nonce, cookie, aad);
  Mac back;
  ASSERT_TRUE(xaead_decrypt(back.data(), k, nonce, ct, aad));
  EXPECT_EQ(back, cookie);
  const uint8_t other_aad[kMacLen] = {8};
  EXPECT_FALSE(xaead_decrypt(back.data(), k, nonce, ct, other_aad));
}

TEST_F(Primitives, Tai64nLayoutAndWhitening) {
  EXPECT_EQ(hex(tai64n(1700000000, 123456789)), "400000006553f10a07000000");
  EXPECT_EQ(hex(tai64n(0, 0)), "400000000000000a00000000");
  // Nanoseconds within one 2^24 ns step give equal labels; later seconds compare greater.
  EXPECT_EQ(tai64n(5, 1), tai64n(5, (1u << 24) - 1));
  EXPECT_LT(tai64n(5, 999'999'999), tai64n(6, 0));
  EXPECT_LT(tai64n(5, 0), tai64n(5, 1u << 24));
  const Tai64n now = tai64n_now();
  EXPECT_EQ(now[0], 0x40);
}

TEST_F(Primitives, SecureZeroAndCompare) {
  Key k = seq_key();
  secure_zero(k);
  EXPECT_TRUE(is_zero(k));
  Key a = seq_key(), b = seq_key();
  EXPECT_TRUE(equal_ct(a, b));
  b[31] ^= 1;
  EXPECT_FALSE(equal_ct(a, b));
  EXPECT_FALSE(equal_ct(Bytes(a).first(31), b));
}

}  // namespace
}  // namespace sluice::wg
