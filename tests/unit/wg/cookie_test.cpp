// mac1/mac2 and cookie replies between a CookieGenerator (sender) and a CookieChecker (receiver).
#include "controlplane/wg/cookie.h"

#include <gtest/gtest.h>

#include <cstring>

namespace sluice::wg {
namespace {

constexpr uint64_t kSec = 1'000'000'000;
const Endpoint kSrc{0xc0a80101, 0x1234};

struct Fixture {
  Fixture() {
    crypto_init();
    Key priv;
    dh_generate(priv);
    EXPECT_TRUE(dh_pubkey(receiver_pub, priv));
    std::memset(&msg, 0, sizeof(msg));
    msg.type = 1;
    msg.sender_index = 0x11223344;
    random_bytes(msg.unencrypted_ephemeral, sizeof(msg.unencrypted_ephemeral));
  }
  std::span<uint8_t> bytes() { return {reinterpret_cast<uint8_t*>(&msg), sizeof(msg)}; }
  Key receiver_pub;
  MessageInitiation msg;
};

TEST(Cookie, SourceBytesAreAddressThenLittleEndianPort) {
  uint8_t b[kCookieSourceLen];
  cookie_source_bytes(b, Endpoint{0x0a000102, 0xabcd});
  const uint8_t want[kCookieSourceLen] = {10, 0, 1, 2, 0xcd, 0xab};
  EXPECT_EQ(0, std::memcmp(b, want, sizeof(b)));
}

TEST(Cookie, Mac1ChecksTheReceiverKey) {
  Fixture f;
  CookieChecker checker(f.receiver_pub);
  CookieGenerator gen(f.receiver_pub);
  gen.add_macs(f.bytes(), 0);
  EXPECT_TRUE(checker.check_mac1(f.bytes()));
  EXPECT_TRUE(is_zero({f.msg.mac2, kMacLen}));
  f.msg.sender_index ^= 1;
  EXPECT_FALSE(checker.check_mac1(f.bytes()));
  Key other;
  random_bytes(other.data(), other.size());
  CookieGenerator wrong(other);
  wrong.add_macs(f.bytes(), 0);
  EXPECT_FALSE(checker.check_mac1(f.bytes()));
}

TEST(Cookie, Mac2AfterCookieReplyAndItsExpiry) {
  Fixture f;
  CookieChecker checker(f.receiver_pub);
  CookieGenerator gen(f.receiver_pub);
  const uint64_t t0 = 5000 * kSec;
  MessageCookieReply reply;
  EXPECT_FALSE(gen.consume_reply(reply, t0));  // nothing sent yet: no mac1 to bind to

  gen.add_macs(f.bytes(), t0);
  EXPECT_FALSE(checker.check_mac2(f.bytes(), kSrc, t0));  // no secret yet
  checker.create_reply(reply, f.bytes(), kSrc, t0);
  EXPECT_EQ(uint32_t{reply.receiver_index}, 0x11223344u);
  ASSERT_TRUE(gen.consume_reply(reply, t0));
  EXPECT_TRUE(gen.has_fresh_cookie(t0));

  gen.add_macs(f.bytes(), t0 + kSec);
  EXPECT_FALSE(is_zero({f.msg.mac2, kMacLen}));
  EXPECT_TRUE(checker.check_mac2(f.bytes(), kSrc, t0 + kSec));
  EXPECT_FALSE(checker.check_mac2(f.bytes(), Endpoint{kSrc.ip + 1, kSrc.port}, t0 + kSec));
  EXPECT_FALSE(checker.check_mac2(f.bytes(), Endpoint{kSrc.ip, uint16_t(kSrc.port + 1)}, t0 + kSec));

  // The sender stops using a cookie COOKIE_REFRESH after receiving it.
  gen.add_macs(f.bytes(), t0 + kCookieRefreshNs - 1);
  EXPECT_FALSE(is_zero({f.msg.mac2, kMacLen}));
  gen.add_macs(f.bytes(), t0 + kCookieRefreshNs);
  EXPECT_FALSE(gen.has_fresh_cookie(t0 + kCookieRefreshNs));
  EXPECT_TRUE(is_zero({f.msg.mac2, kMacLen}));
}

TEST(Cookie, SecretRotatesEveryRefreshInterval) {
  Fixture f;
  CookieChecker checker(f.receiver_pub);
  CookieGenerator gen(f.receiver_pub);
  const uint64_t t0 = 77 * kSec;
  MessageCookieReply reply;
  gen.add_macs(f.bytes(), t0);
  checker.create_reply(reply, f.bytes(), kSrc, t0);
  ASSERT_TRUE(gen.consume_reply(reply, t0));
  // A message stamped with the first cookie, replayed to the checker as time passes.
  gen.add_macs(f.bytes(), t0);
  MessageInitiation old_msg = f.msg;
  const Bytes old_bytes{reinterpret_cast<const uint8_t*>(&old_msg), sizeof(old_msg)};
  EXPECT_TRUE(checker.check_mac2(old_bytes, kSrc, t0 + kCookieRefreshNs));
  EXPECT_FALSE(checker.check_mac2(old_bytes, kSrc, t0 + kCookieRefreshNs + 1));  // secret expired

  // A new reply rotates the secret: the old cookie stays invalid, the new one works.
  const uint64_t t1 = t0 + kCookieRefreshNs + kSec;
  gen.add_macs(f.bytes(), t1);
  checker.create_reply(reply, f.bytes(), kSrc, t1);
  EXPECT_FALSE(checker.check_mac2(old_bytes, kSrc, t1));
  ASSERT_TRUE(gen.consume_reply(reply, t1));
  gen.add_macs(f.bytes(), t1);
  EXPECT_TRUE(checker.check_mac2(f.bytes(), kSrc, t1));
  EXPECT_NE(0, std::memcmp(old_msg.mac2, f.msg.mac2, kMacLen));

  // Within the interval the secret is kept: a second reply gives the same cookie.
  MessageInitiation before = f.msg;
  checker.create_reply(reply, f.bytes(), kSrc, t1 + kSec);
  ASSERT_TRUE(gen.consume_reply(reply, t1 + kSec));
  gen.add_macs(f.bytes(), t1 + kSec);
  EXPECT_EQ(0, std::memcmp(before.mac2, f.msg.mac2, kMacLen));
}

TEST(Cookie, ReplyIsBoundToTheAnsweredMac1) {
  Fixture f;
  CookieChecker checker(f.receiver_pub);
  CookieGenerator gen(f.receiver_pub);
  gen.add_macs(f.bytes(), 0);
  MessageCookieReply reply;
  checker.create_reply(reply, f.bytes(), kSrc, 0);
  f.msg.sender_index = 99;  // a newer message: a different mac1
  gen.add_macs(f.bytes(), 0);
  EXPECT_FALSE(gen.consume_reply(reply, 0));
}

}  // namespace
}  // namespace sluice::wg
