#include "dataplane/crypto/aead.h"

#include <gtest/gtest.h>

#include <cstring>
#include <random>
#include <string>
#include <type_traits>
#include <vector>

namespace sluice::crypto {
namespace {

using Bytes = std::vector<uint8_t>;

Bytes from_hex(std::string_view hex) {
  Bytes out;
  for (size_t i = 0; i + 1 < hex.size(); i += 2)
    out.push_back(uint8_t(std::stoul(std::string(hex.substr(i, 2)), nullptr, 16)));
  return out;
}

// RFC 8439 appendix A.5. Its nonce, 00000000 0102030405060708, is already WireGuard-shaped: four
// zero bytes, then the counter 0x0807060504030201 little-endian. The ciphertext does not depend on
// the AAD, so it must match the RFC byte for byte. The RFC's tag covers its AAD; WireGuard has
// none, and the empty-AAD tag below is the one published for this key, nonce and plaintext in
// TLS 1.3 test suites (and reproduced with Python's cryptography package).
constexpr uint64_t kA5Counter = 0x0807060504030201ull;
constexpr std::string_view kA5Key =
    "1c9240a5eb55d38af333888604f6b5f0473917c1402b80099dca5cbc207075c0";
constexpr std::string_view kA5Plaintext =
    "496e7465726e65742d4472616674732061726520647261667420646f63756d65"
    "6e74732076616c696420666f722061206d6178696d756d206f6620736978206d"
    "6f6e74687320616e64206d617920626520757064617465642c207265706c6163"
    "65642c206f72206f62736f6c65746564206279206f7468657220646f63756d65"
    "6e747320617420616e792074696d652e20497420697320696e617070726f7072"
    "6961746520746f2075736520496e7465726e65742d4472616674732061732072"
    "65666572656e6365206d6174657269616c206f7220746f206369746520746865"
    "6d206f74686572207468616e206173202fe2809c776f726b20696e2070726f67"
    "726573732e2fe2809d";
constexpr std::string_view kA5Ciphertext =
    "64a0861575861af460f062c79be643bd5e805cfd345cf389f108670ac76c8cb2"
    "4c6cfc18755d43eea09ee94e382d26b0bdb7b73c321b0100d4f03b7f355894cf"
    "332f830e710b97ce98c8a84abd0b948114ad176e008d33bd60f982b1ff37c855"
    "9797a06ef4f0ef61c186324e2b3506383606907b6a7c02b0f9f6157b53c867e4"
    "b9166c767b804d46a59b5216cde7a4e99040c5a40433225ee282a1b0a06c523e"
    "af4534d7f83fa1155b0047718cbc546a0d072b04b3564eea1b422273f548271a"
    "0bb2316053fa76991955ebd63159434ecebb4e466dae5a1073a6727627097a10"
    "49e617d91d361094fa68f0ff77987130305beaba2eda04df997b714d6c6f2c29"
    "a6ad5cb4022b02709b";
constexpr std::string_view kA5TagNoAad = "6e3570b1acaaf1f24f2a644f01acd12b";

TEST(AeadBackendNames, RoundTripAndRejectUnknown) {
  for (AeadBackend b : {AeadBackend::openssl, AeadBackend::sodium}) {
    auto parsed = parse_backend(backend_name(b));
    ASSERT_TRUE(parsed.has_value());
    EXPECT_EQ(*parsed, b);
  }
  EXPECT_STREQ(backend_name(AeadBackend::openssl), "openssl");
  EXPECT_STREQ(backend_name(AeadBackend::sodium), "sodium");
  EXPECT_FALSE(parse_backend("").has_value());
  EXPECT_FALSE(parse_backend("OpenSSL").has_value());
  EXPECT_FALSE(parse_backend("libsodium").has_value());
  EXPECT_EQ(default_backend(), AeadBackend::openssl);
}

TEST(Aead, NonCopyableButMovable) {
  static_assert(!std::is_copy_constructible_v<Aead> && !std::is_copy_assignable_v<Aead>);
  static_assert(std::is_nothrow_move_constructible_v<Aead> &&
                std::is_nothrow_move_assignable_v<Aead>);
}

class AeadTest : public ::testing::TestWithParam<AeadBackend> {
 protected:
  Aead aead_{GetParam()};
};

TEST_P(AeadTest, Rfc8439A5VectorWithWireGuardNonce) {
  ASSERT_TRUE(aead_.ready());
  EXPECT_EQ(aead_.backend(), GetParam());
  const Bytes key = from_hex(kA5Key), plain = from_hex(kA5Plaintext);
  Bytes expected = from_hex(kA5Ciphertext);
  const Bytes tag = from_hex(kA5TagNoAad);
  expected.insert(expected.end(), tag.begin(), tag.end());
  ASSERT_EQ(plain.size(), 265u);

  Bytes sealed(plain.size() + kAeadTagLen);
  ASSERT_TRUE(aead_.seal(key.data(), kA5Counter, plain.data(), plain.size(), sealed.data()));
  EXPECT_EQ(sealed, expected);

  Bytes opened(plain.size());
  ASSERT_TRUE(aead_.open(key.data(), kA5Counter, expected.data(), expected.size(), opened.data()));
  EXPECT_EQ(opened, plain);
}

TEST_P(AeadTest, EmptyPlaintextIsJustATag) {
  const Bytes key(kAeadKeyLen, 0x42);
  uint8_t tag[kAeadTagLen];
  ASSERT_TRUE(aead_.seal(key.data(), 7, nullptr, 0, tag));
  uint8_t none[1];
  EXPECT_TRUE(aead_.open(key.data(), 7, tag, sizeof(tag), none));
  EXPECT_FALSE(aead_.open(key.data(), 8, tag, sizeof(tag), none));
  tag[0] ^= 1;
  EXPECT_FALSE(aead_.open(key.data(), 7, tag, sizeof(tag), none));
}

TEST_P(AeadTest, TamperingAnyPartIsRejected) {
  std::mt19937_64 rng(11);
  uint8_t key[kAeadKeyLen];
  for (auto& b : key) b = uint8_t(rng());
  Bytes plain(200);
  for (auto& b : plain) b = uint8_t(rng());
  Bytes sealed(plain.size() + kAeadTagLen);
  const uint64_t counter = 123456789;
  ASSERT_TRUE(aead_.seal(key, counter, plain.data(), plain.size(), sealed.data()));

  Bytes out(plain.size());
  // One flipped bit anywhere in ciphertext or tag.
  for (size_t pos : {size_t{0}, size_t{99}, plain.size() - 1, plain.size(), sealed.size() - 1}) {
    Bytes bad = sealed;
    bad[pos] ^= 0x80;
    EXPECT_FALSE(aead_.open(key, counter, bad.data(), bad.size(), out.data())) << "byte " << pos;
  }
  // Wrong nonce (a replayed packet relabelled with another counter) or wrong key.
  EXPECT_FALSE(aead_.open(key, counter + 1, sealed.data(), sealed.size(), out.data()));
  EXPECT_FALSE(aead_.open(key, counter ^ (1ull << 63), sealed.data(), sealed.size(), out.data()));
  uint8_t other_key[kAeadKeyLen];
  std::memcpy(other_key, key, sizeof(key));
  other_key[31] ^= 1;
  EXPECT_FALSE(aead_.open(other_key, counter, sealed.data(), sealed.size(), out.data()));
  // Truncated: the tag is then read from the wrong place.
  EXPECT_FALSE(aead_.open(key, counter, sealed.data(), sealed.size() - 1, out.data()));
  // Shorter than a tag.
  EXPECT_FALSE(aead_.open(key, counter, sealed.data(), kAeadTagLen - 1, out.data()));
  // A forgery leaves no plaintext behind in out.
  Bytes bad = sealed;
  bad.back() ^= 1;
  std::fill(out.begin(), out.end(), 0xEE);
  ASSERT_FALSE(aead_.open(key, counter, bad.data(), bad.size(), out.data()));
  EXPECT_NE(std::memcmp(out.data(), plain.data(), 16), 0);

  ASSERT_TRUE(aead_.open(key, counter, sealed.data(), sealed.size(), out.data()));
  EXPECT_EQ(out, plain);
}

TEST_P(AeadTest, InPlaceMatchesOutOfPlace) {
  std::mt19937_64 rng(5);
  uint8_t key[kAeadKeyLen];
  for (auto& b : key) b = uint8_t(rng());
  for (size_t len : {size_t{1}, size_t{63}, size_t{64}, size_t{65}, size_t{1420}}) {
    Bytes plain(len);
    for (auto& b : plain) b = uint8_t(rng());
    const uint64_t counter = rng();

    Bytes separate(len + kAeadTagLen);
    ASSERT_TRUE(aead_.seal(key, counter, plain.data(), len, separate.data()));
    Bytes buf(len + kAeadTagLen);
    std::copy(plain.begin(), plain.end(), buf.begin());
    ASSERT_TRUE(aead_.seal(key, counter, buf.data(), len, buf.data()));
    EXPECT_EQ(buf, separate) << "len " << len;

    ASSERT_TRUE(aead_.open(key, counter, buf.data(), buf.size(), buf.data()));
    EXPECT_TRUE(std::equal(plain.begin(), plain.end(), buf.begin())) << "len " << len;
  }
}

TEST_P(AeadTest, MovedFromContextRefusesAndMovedToWorks) {
  Aead moved(std::move(aead_));
  EXPECT_EQ(moved.backend(), GetParam());
  const uint8_t key[kAeadKeyLen] = {1};
  const uint8_t plain[4] = {1, 2, 3, 4};
  uint8_t sealed[sizeof(plain) + kAeadTagLen];
  EXPECT_TRUE(moved.seal(key, 1, plain, sizeof(plain), sealed));
  EXPECT_FALSE(aead_.ready());
  EXPECT_FALSE(aead_.seal(key, 1, plain, sizeof(plain), sealed));

  Aead assigned(GetParam() == AeadBackend::openssl ? AeadBackend::sodium : AeadBackend::openssl);
  assigned = std::move(moved);
  EXPECT_EQ(assigned.backend(), GetParam());
  uint8_t opened[sizeof(plain)];
  EXPECT_TRUE(assigned.open(key, 1, sealed, sizeof(sealed), opened));
  EXPECT_EQ(std::memcmp(opened, plain, sizeof(plain)), 0);
}

INSTANTIATE_TEST_SUITE_P(Backends, AeadTest,
                         ::testing::Values(AeadBackend::openssl, AeadBackend::sodium),
                         [](const auto& info) { return std::string(backend_name(info.param)); });

// The two backends are independent implementations: on the same input they must produce the same
// bytes, and each must open what the other sealed. Every length a tunnelled packet can have.
TEST(AeadCrossBackend, IdenticalCiphertextAndInteroperableForLengths0To1500) {
  Aead openssl(AeadBackend::openssl), sodium(AeadBackend::sodium);
  std::mt19937_64 rng(0x5eed);
  uint8_t key[kAeadKeyLen];
  Bytes plain, by_openssl, by_sodium, opened;
  for (size_t len = 0; len <= 1500; ++len) {
    for (auto& b : key) b = uint8_t(rng());
    // Counters from the whole range, so every nonce byte is exercised.
    const uint64_t counter = rng() >> (rng() % 64);
    plain.resize(len);
    for (auto& b : plain) b = uint8_t(rng());
    by_openssl.assign(len + kAeadTagLen, 0);
    by_sodium.assign(len + kAeadTagLen, 0xff);
    opened.assign(len, 0);

    ASSERT_TRUE(openssl.seal(key, counter, plain.data(), len, by_openssl.data()));
    ASSERT_TRUE(sodium.seal(key, counter, plain.data(), len, by_sodium.data()));
    ASSERT_EQ(by_openssl, by_sodium) << "len " << len << " counter " << counter;

    ASSERT_TRUE(sodium.open(key, counter, by_openssl.data(), by_openssl.size(), opened.data()));
    ASSERT_EQ(opened, plain) << "len " << len;
    std::fill(opened.begin(), opened.end(), 0);
    ASSERT_TRUE(openssl.open(key, counter, by_sodium.data(), by_sodium.size(), opened.data()));
    ASSERT_EQ(opened, plain) << "len " << len;
  }
}

}  // namespace
}  // namespace sluice::crypto
