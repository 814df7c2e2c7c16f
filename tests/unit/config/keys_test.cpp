#include "controlplane/config/keys.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/stat.h>

#include "tests/unit/config/test_util.h"

namespace sluice::config {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

// The example pair from the wg(8) man page.
constexpr const char* kManPrivate = "yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=";
constexpr const char* kManPublic = "HIgo9xNzJMWLKASShiTqIybxZ0U3wGLiUeJ1PKf8ykw=";

TEST(Keys, Base64RoundTrip) {
  auto key = parse_key(kManPrivate);
  ASSERT_TRUE(key);
  EXPECT_EQ(encode_key(*key), kManPrivate);
  EXPECT_EQ((*key)[0], 0xc8);  // 'yAnz' -> c8 09 f3
  EXPECT_EQ((*key)[1], 0x09);
  EXPECT_EQ((*key)[2], 0xf3);
}

TEST(Keys, PublicFromPrivateMatchesWg) {
  auto priv = parse_key(kManPrivate);
  ASSERT_TRUE(priv);
  auto pub = public_key_from_private(*priv);
  ASSERT_TRUE(pub);
  EXPECT_EQ(encode_key(*pub), kManPublic);
}

TEST(Keys, RandomKeysRoundTrip) {
  for (int i = 0; i < 100; i++) {
    Key k = test::random_key();
    std::string b64 = encode_key(k);
    ASSERT_EQ(b64.size(), kKeyBase64Len);
    auto back = parse_key(b64);
    ASSERT_TRUE(back);
    EXPECT_EQ(*back, k);
  }
}

TEST(Keys, RejectsMalformedBase64) {
  std::string good = kManPublic;
  EXPECT_FALSE(parse_key(""));
  EXPECT_FALSE(parse_key(good.substr(0, 43)));              // too short
  EXPECT_FALSE(parse_key(good + "A"));                      // too long
  EXPECT_FALSE(parse_key(good.substr(0, 43) + "A"));        // no padding: 33 bytes' worth
  std::string bad_char = good;
  bad_char[5] = '*';
  EXPECT_FALSE(parse_key(bad_char));
  std::string url_safe = "yAnz5TF-lXXJte14tji3zlMNq-hd2rYUIgJBgB3fBmk=";  // URL-safe alphabet is not wg's
  EXPECT_FALSE(parse_key(url_safe));
  std::string trailing_bits = good;
  trailing_bits[42] = 'x';  // 'w' -> 'x': sets bits past the 32nd byte
  EXPECT_FALSE(parse_key(trailing_bits));
  EXPECT_FALSE(parse_key(" " + good.substr(1)));
}

TEST(KeyFile, TrailingNewlineAndWhitespaceAccepted) {
  test::TempDir dir;
  auto r = read_key_file(dir.write("a.key", std::string(kManPrivate) + "\n"));
  ASSERT_TRUE(r.key) << r.error;
  EXPECT_EQ(encode_key(*r.key), kManPrivate);
  r = read_key_file(dir.write("b.key", "  \t" + std::string(kManPrivate) + "\r\n\n"));
  ASSERT_TRUE(r.key) << r.error;
  EXPECT_EQ(encode_key(*r.key), kManPrivate);
  r = read_key_file(dir.write("c.key", kManPrivate));
  ASSERT_TRUE(r.key) << r.error;
}

TEST(KeyFile, GarbageRejectedWithoutEchoingIt) {
  test::TempDir dir;
  std::string garbage = "this is not a key, it is a secret sentence!!!";  // 45 chars
  auto r = read_key_file(dir.write("g.key", garbage.substr(0, 44) + "\n"));
  EXPECT_FALSE(r.key);
  EXPECT_THAT(r.error, HasSubstr("g.key"));
  EXPECT_THAT(r.error, HasSubstr("not hold a valid base64 key"));
  EXPECT_THAT(r.error, Not(HasSubstr("secret")));

  r = read_key_file(dir.write("short.key", "c2VjcmV0\n"));
  EXPECT_FALSE(r.key);
  EXPECT_THAT(r.error, HasSubstr("expected 44 characters, found 8"));
  EXPECT_THAT(r.error, Not(HasSubstr("c2VjcmV0")));

  r = read_key_file(dir.write("two.key", std::string(kManPrivate) + "\n" + kManPublic + "\n"));
  EXPECT_FALSE(r.key);
  EXPECT_THAT(r.error, HasSubstr("expected 44 characters"));
  EXPECT_THAT(r.error, Not(HasSubstr(kManPrivate)));

  r = read_key_file(dir.write("empty.key", "\n"));
  EXPECT_FALSE(r.key);
  EXPECT_THAT(r.error, HasSubstr("is empty"));

  r = read_key_file(dir.write("big.key", std::string(4096, 'A')));
  EXPECT_FALSE(r.key);
  EXPECT_THAT(r.error, HasSubstr("too long"));
}

TEST(KeyFile, UnreadableFile) {
  test::TempDir dir;
  auto r = read_key_file(dir.file("missing.key"));
  EXPECT_FALSE(r.key);
  EXPECT_THAT(r.error, HasSubstr("cannot read"));
  EXPECT_THAT(r.error, HasSubstr("No such file or directory"));

  r = read_key_file(dir.path());
  EXPECT_FALSE(r.key);
  EXPECT_THAT(r.error, HasSubstr("cannot read"));
}

}  // namespace
}  // namespace sluice::config
