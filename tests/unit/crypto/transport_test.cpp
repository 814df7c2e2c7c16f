#include "dataplane/wg/transport.h"

#include <gtest/gtest.h>

#include <cstring>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "dataplane/wg/replay.h"

namespace sluice::wg {
namespace {

using crypto::Aead;
using crypto::AeadBackend;
using Bytes = std::vector<uint8_t>;

constexpr uint16_t kMtu = 1420;

Bytes random_bytes(std::mt19937_64& rng, size_t n) {
  Bytes b(n);
  for (auto& x : b) x = uint8_t(rng());
  return b;
}

// Sealed by one backend, opened by the other as well as by itself: the peer on the other end is
// a different implementation too.
class TransportTest : public ::testing::TestWithParam<std::tuple<AeadBackend, AeadBackend>> {
 protected:
  Aead sealer_{std::get<0>(GetParam())};
  Aead opener_{std::get<1>(GetParam())};
  std::mt19937_64 rng_{7};
  Bytes key_ = random_bytes(rng_, kKeyLen);
};

TEST_P(TransportTest, SealParseOpenRoundTripWithPadding) {
  struct Case {
    size_t plain_len, padded;
  };
  // 1420 is not a multiple of 16: padding stops at the MTU rather than overshoot it.
  for (Case tc :
       {Case{0, 0}, Case{1, 16}, Case{15, 16}, Case{16, 16}, Case{17, 32}, Case{1420, 1420}}) {
    const Bytes plain = random_bytes(rng_, tc.plain_len);
    const uint32_t receiver = 0xA1B2C3D4;
    const uint64_t counter = 0x0102030405060708ull;
    ASSERT_EQ(transport_sealed_len(tc.plain_len, kMtu), 16 + tc.padded + 16);
    Bytes msg(transport_sealed_len(tc.plain_len, kMtu), 0xCC);
    const size_t n = transport_seal(sealer_, key_.data(), receiver, counter, plain.data(),
                                    plain.size(), kMtu, msg.data());
    ASSERT_EQ(n, 16 + tc.padded + 16) << tc.plain_len;

    // The header on the wire: type 4 and three zero bytes, then both fields little-endian.
    const uint8_t header[16] = {4,    0,    0,    0,    0xD4, 0xC3, 0xB2, 0xA1,
                                0x08, 0x07, 0x06, 0x05, 0x04, 0x03, 0x02, 0x01};
    EXPECT_EQ(std::memcmp(msg.data(), header, 16), 0) << tc.plain_len;

    uint32_t parsed_receiver = 0;
    uint64_t parsed_counter = 0;
    ASSERT_TRUE(transport_parse(msg.data(), n, &parsed_receiver, &parsed_counter));
    EXPECT_EQ(parsed_receiver, receiver);
    EXPECT_EQ(parsed_counter, counter);

    Bytes out(tc.padded + 1, 0xEE);
    ASSERT_EQ(transport_open(opener_, key_.data(), msg.data(), n, out.data()), ssize_t(tc.padded));
    EXPECT_TRUE(std::equal(plain.begin(), plain.end(), out.begin())) << tc.plain_len;
    for (size_t i = tc.plain_len; i < tc.padded; ++i) EXPECT_EQ(out[i], 0) << "padding byte " << i;
    EXPECT_EQ(out[tc.padded], 0xEE) << "wrote past the padded plaintext";
  }
}

TEST_P(TransportTest, KeepaliveIsHeaderAndTagOnly) {
  uint8_t msg[kTransportMinLen];
  ASSERT_EQ(transport_seal(sealer_, key_.data(), 9, 3, nullptr, 0, kMtu, msg), kTransportMinLen);
  uint32_t receiver;
  uint64_t counter;
  ASSERT_TRUE(transport_parse(msg, sizeof(msg), &receiver, &counter));
  EXPECT_EQ(receiver, 9u);
  EXPECT_EQ(counter, 3u);
  uint8_t out[1];
  EXPECT_EQ(transport_open(opener_, key_.data(), msg, sizeof(msg), out), 0);
  msg[20] ^= 1;
  EXPECT_EQ(transport_open(opener_, key_.data(), msg, sizeof(msg), out), -1);
}

// The fast path: the inner packet sits 16 bytes into the buffer, sealed and opened where it lies.
TEST_P(TransportTest, InPlaceSealAndOpenMatchCopying) {
  for (size_t len : {size_t{1}, size_t{60}, size_t{1400}}) {
    const Bytes plain = random_bytes(rng_, len);
    const size_t total = transport_sealed_len(len, kMtu);
    Bytes copied(total);
    ASSERT_EQ(transport_seal(sealer_, key_.data(), 1, 77, plain.data(), len, kMtu, copied.data()),
              total);

    Bytes buf(total, 0xAB);  // 0xAB where the padding goes: the seal must zero it
    std::copy(plain.begin(), plain.end(), buf.begin() + 16);
    ASSERT_EQ(transport_seal(sealer_, key_.data(), 1, 77, buf.data() + 16, len, kMtu, buf.data()),
              total);
    EXPECT_EQ(buf, copied) << len;

    const ssize_t padded = transport_open(opener_, key_.data(), buf.data(), total, buf.data() + 16);
    ASSERT_EQ(padded, ssize_t(padded_len(len, kMtu)));
    EXPECT_TRUE(std::equal(plain.begin(), plain.end(), buf.begin() + 16)) << len;
  }
}

TEST_P(TransportTest, CorruptOrTruncatedMessagesRejected) {
  const Bytes plain = random_bytes(rng_, 100);
  Bytes msg(transport_sealed_len(plain.size(), kMtu));
  const size_t n =
      transport_seal(sealer_, key_.data(), 5, 1000, plain.data(), plain.size(), kMtu, msg.data());
  ASSERT_EQ(n, msg.size());
  Bytes out(n);
  uint32_t receiver;
  uint64_t counter;

  auto opens = [&](const Bytes& m, size_t len) {
    return transport_open(opener_, key_.data(), m.data(), len, out.data());
  };
  ASSERT_EQ(opens(msg, n), 112);

  // Wrong type, and a type whose reserved bytes are not zero.
  for (size_t pos : {size_t{0}, size_t{1}, size_t{3}}) {
    Bytes bad = msg;
    bad[pos] ^= 0x01;
    EXPECT_FALSE(transport_parse(bad.data(), n, &receiver, &counter)) << pos;
    EXPECT_EQ(opens(bad, n), -1) << pos;
  }
  // The counter is the nonce: changing it breaks authentication.
  {
    Bytes bad = msg;
    bad[8] ^= 0x01;
    ASSERT_TRUE(transport_parse(bad.data(), n, &receiver, &counter));
    EXPECT_EQ(counter, 1001u);
    EXPECT_EQ(opens(bad, n), -1);
  }
  // Payload and tag.
  for (size_t pos : {size_t{16}, size_t{16 + 50}, n - 16, n - 1}) {
    Bytes bad = msg;
    bad[pos] ^= 0x40;
    EXPECT_EQ(opens(bad, n), -1) << pos;
  }
  // Truncated by a byte, to the header, and below a keepalive's length.
  EXPECT_EQ(opens(msg, n - 1), -1);
  EXPECT_EQ(opens(msg, n - 16), -1);
  EXPECT_FALSE(transport_parse(msg.data(), kTransportMinLen - 1, &receiver, &counter));
  EXPECT_EQ(opens(msg, kTransportMinLen - 1), -1);
  EXPECT_EQ(opens(msg, kTransportHeaderLen), -1);
  EXPECT_EQ(opens(msg, 0), -1);
  // Another keypair's key.
  Bytes other = key_;
  other[0] ^= 1;
  EXPECT_EQ(transport_open(opener_, other.data(), msg.data(), n, out.data()), -1);
}

TEST_P(TransportTest, SealRefusesCountersAtTheRejectLimit) {
  const uint8_t plain[8] = {};
  uint8_t msg[transport_sealed_len(sizeof(plain), kMtu)];
  EXPECT_EQ(transport_seal(sealer_, key_.data(), 1, kRejectAfterMessages, plain, sizeof(plain),
                           kMtu, msg),
            0u);
  EXPECT_EQ(transport_seal(sealer_, key_.data(), 1, ~uint64_t{0}, plain, sizeof(plain), kMtu, msg),
            0u);
  ASSERT_EQ(transport_seal(sealer_, key_.data(), 1, kRejectAfterMessages - 1, plain, sizeof(plain),
                           kMtu, msg),
            sizeof(msg));
  uint8_t out[16];
  EXPECT_EQ(transport_open(opener_, key_.data(), msg, sizeof(msg), out), 16);
}

// The worker's two-pass decrypt over a burst: pre-check, open the survivors, mark the
// authenticated. Two peers' keys, a forged packet and a duplicate within the burst.
TEST_P(TransportTest, TwoPassBurstWithForgeryAndDuplicate) {
  const Bytes key_b = random_bytes(rng_, kKeyLen);
  const uint8_t* keys[2] = {key_.data(), key_b.data()};
  constexpr size_t kBurst = 8;
  std::vector<Bytes> msgs;
  std::vector<Bytes> plains;
  for (size_t i = 0; i < kBurst - 1; ++i) {
    plains.push_back(random_bytes(rng_, 40 + i * 100));
    msgs.emplace_back(transport_sealed_len(plains.back().size(), kMtu));
    ASSERT_GT(transport_seal(sealer_, keys[i % 2], uint32_t(i % 2), 10 + i, plains.back().data(),
                             plains.back().size(), kMtu, msgs.back().data()),
              0u);
  }
  msgs.back().back() ^= 1;  // forged tag on the last distinct message
  msgs.push_back(msgs[2]);  // a replay of message 2 arriving in the same burst
  plains.push_back(plains[2]);

  ReplayWindow windows[2];
  OpenOp ops[kBurst];
  std::vector<Bytes> outs(kBurst, Bytes(1500));
  size_t queued = 0;
  size_t which[kBurst];
  for (size_t i = 0; i < kBurst; ++i) {
    uint32_t receiver;
    uint64_t counter;
    ASSERT_TRUE(transport_parse(msgs[i].data(), msgs[i].size(), &receiver, &counter));
    ASSERT_TRUE(windows[receiver].check(counter)) << i;  // the duplicate passes the pre-check too
    ops[queued] = {keys[receiver], msgs[i].data(), msgs[i].size(), outs[i].data(), -2};
    which[queued++] = i;
  }
  transport_open_burst(opener_, ops, queued);

  size_t delivered = 0;
  for (size_t q = 0; q < queued; ++q) {
    const size_t i = which[q];
    if (i == kBurst - 2) {
      EXPECT_EQ(ops[q].plain_len, -1) << "forgery";
      continue;
    }
    ASSERT_EQ(ops[q].plain_len, ssize_t(padded_len(plains[i].size(), kMtu))) << i;
    EXPECT_TRUE(std::equal(plains[i].begin(), plains[i].end(), outs[i].begin())) << i;
    uint32_t receiver;
    uint64_t counter;
    ASSERT_TRUE(transport_parse(msgs[i].data(), msgs[i].size(), &receiver, &counter));
    if (windows[receiver].mark(counter))
      ++delivered;
    else
      EXPECT_EQ(i, kBurst - 1) << "only the in-burst replay may fail to mark";
  }
  EXPECT_EQ(delivered, kBurst - 2);
  EXPECT_EQ(windows[0].greatest(), 10u + 4);  // 16 was the forgery: never marked
  EXPECT_EQ(windows[1].greatest(), 10u + 5);
}

INSTANTIATE_TEST_SUITE_P(
    Backends, TransportTest,
    ::testing::Combine(::testing::Values(AeadBackend::openssl, AeadBackend::sodium),
                       ::testing::Values(AeadBackend::openssl, AeadBackend::sodium)),
    [](const auto& info) {
      return std::string(crypto::backend_name(std::get<0>(info.param))) + "_to_" +
             crypto::backend_name(std::get<1>(info.param));
    });

}  // namespace
}  // namespace sluice::wg
