// Per-peer timer rules with injected time and a fixed jitter.
#include "controlplane/wg/timers.h"

#include <gtest/gtest.h>

namespace sluice::wg {
namespace {

constexpr uint64_t kMs = 1'000'000;
constexpr uint64_t kSec = 1'000'000'000;
constexpr uint64_t kJitter = 100 * kMs;
constexpr uint64_t kT0 = 10'000 * kSec;

PeerTimers make_timers() {
  return PeerTimers([] { return kJitter; });
}

bool nothing(const TimerActions& a) { return !a.any(); }

TEST(Timers, IdlePeerHasNoDeadline) {
  PeerTimers t = make_timers();
  EXPECT_EQ(t.next_deadline(), UINT64_MAX);
  EXPECT_TRUE(nothing(t.poll(kT0)));
}

TEST(Timers, JitterIsBoundedAndDefaultIsRandom) {
  PeerTimers t([] { return kRekeyTimeoutJitterMaxNs + 5; });
  t.handshake_initiated(kT0);
  EXPECT_EQ(t.next_deadline(), kT0 + kRekeyTimeoutNs + 5);
  PeerTimers r;
  r.handshake_initiated(kT0);
  EXPECT_GE(r.next_deadline(), kT0 + kRekeyTimeoutNs);
  EXPECT_LT(r.next_deadline(), kT0 + kRekeyTimeoutNs + kRekeyTimeoutJitterMaxNs);
}

TEST(Timers, InitiationRetransmittedAfterRekeyTimeoutPlusJitter) {
  PeerTimers t = make_timers();
  t.handshake_initiated(kT0);
  const uint64_t due = kT0 + kRekeyTimeoutNs + kJitter;
  EXPECT_EQ(t.next_deadline(), due);
  EXPECT_TRUE(nothing(t.poll(due - 1)));
  TimerActions a = t.poll(due);
  EXPECT_TRUE(a.send_initiation);
  EXPECT_FALSE(a.handshake_gave_up);
  EXPECT_EQ(t.handshake_attempts(), 1u);
  EXPECT_TRUE(nothing(t.poll(due)));  // fired once
}

TEST(Timers, HandshakeCompleteStopsRetransmission) {
  PeerTimers t = make_timers();
  t.handshake_initiated(kT0);
  t.handshake_complete(kT0 + kSec);
  EXPECT_EQ(t.last_handshake_complete(), kT0 + kSec);
  EXPECT_TRUE(nothing(t.poll(kT0 + 60 * kSec)));
  EXPECT_EQ(t.handshake_attempts(), 0u);
}

TEST(Timers, GivesUpAfterRekeyAttemptTime) {
  PeerTimers t = make_timers();
  uint64_t now = kT0;
  t.handshake_initiated(now);
  int sent = 1;
  bool gave_up = false;
  while (now < kT0 + 200 * kSec) {
    now = t.next_deadline();
    TimerActions a = t.poll(now);
    if (a.handshake_gave_up) {
      gave_up = true;
      EXPECT_FALSE(a.send_initiation);
      break;
    }
    ASSERT_TRUE(a.send_initiation);
    ++sent;
    t.handshake_initiated(now);
  }
  ASSERT_TRUE(gave_up);
  EXPECT_EQ(sent, int(kMaxHandshakeAttempts) + 2);  // 20 initiations, as wireguard-go
  EXPECT_GE(now - kT0, kRekeyAttemptTimeNs);
  // Giving up schedules the key erasure.
  EXPECT_EQ(t.next_deadline(), now + kZeroKeyMaterialNs);
  EXPECT_TRUE(t.poll(now + kZeroKeyMaterialNs).zero_keys);
}

TEST(Timers, KeepaliveAfterReceivingDataWithoutSending) {
  PeerTimers t = make_timers();
  t.data_received(kT0);
  EXPECT_EQ(t.next_deadline(), kT0 + kKeepaliveTimeoutNs);
  EXPECT_TRUE(nothing(t.poll(kT0 + kKeepaliveTimeoutNs - 1)));
  EXPECT_TRUE(t.poll(kT0 + kKeepaliveTimeoutNs).send_keepalive);

  // Anything we send in between makes the keepalive unnecessary.
  t.data_received(kT0 + 20 * kSec);
  t.authenticated_packet_sent(kT0 + 21 * kSec);
  EXPECT_TRUE(nothing(t.poll(kT0 + 40 * kSec)));
}

TEST(Timers, DataReceivedWhileKeepalivePendingAsksForAnother) {
  PeerTimers t = make_timers();
  t.data_received(kT0);
  t.data_received(kT0 + 3 * kSec);  // does not push the deadline
  EXPECT_EQ(t.next_deadline(), kT0 + kKeepaliveTimeoutNs);
  EXPECT_TRUE(t.poll(kT0 + kKeepaliveTimeoutNs).send_keepalive);
  EXPECT_EQ(t.next_deadline(), kT0 + 2 * kKeepaliveTimeoutNs);
  EXPECT_TRUE(t.poll(kT0 + 2 * kKeepaliveTimeoutNs).send_keepalive);
  EXPECT_EQ(t.next_deadline(), UINT64_MAX);
}

TEST(Timers, NewHandshakeWhenSentDataIsNotAnswered) {
  PeerTimers t = make_timers();
  t.data_sent(kT0);
  t.data_sent(kT0 + 2 * kSec);  // the first send arms it
  const uint64_t due = kT0 + kKeepaliveTimeoutNs + kRekeyTimeoutNs + kJitter;
  EXPECT_EQ(t.next_deadline(), due);
  EXPECT_TRUE(nothing(t.poll(due - 1)));
  EXPECT_TRUE(t.poll(due).send_initiation);

  // Any authenticated packet from the peer disarms it.
  PeerTimers u = make_timers();
  u.data_sent(kT0);
  u.authenticated_packet_received(kT0 + kSec);
  EXPECT_TRUE(nothing(u.poll(kT0 + 60 * kSec)));
}

TEST(Timers, RekeyWhenInitiatorKeypairIsOldOnSend) {
  const KeypairInfo mine{kT0, true, 10};
  EXPECT_FALSE(keypair_needs_rekey_on_send(mine, kT0 + kRekeyAfterTimeNs));
  EXPECT_TRUE(keypair_needs_rekey_on_send(mine, kT0 + kRekeyAfterTimeNs + 1));
  const KeypairInfo theirs{kT0, false, 10};
  EXPECT_FALSE(keypair_needs_rekey_on_send(theirs, kT0 + kRekeyAfterTimeNs + 1));
  EXPECT_TRUE(keypair_needs_rekey_on_send(KeypairInfo{kT0, false, kRekeyAfterMessages + 1}, kT0));
  EXPECT_FALSE(keypair_needs_rekey_on_send(KeypairInfo{kT0, false, kRekeyAfterMessages}, kT0));

  PeerTimers t = make_timers();
  t.keypair_sent(mine, kT0 + 60 * kSec);
  EXPECT_TRUE(nothing(t.poll(kT0 + 60 * kSec)));
  t.keypair_sent(mine, kT0 + 121 * kSec);
  TimerActions a = t.poll(kT0 + 121 * kSec);
  EXPECT_TRUE(a.send_initiation);
  EXPECT_EQ(t.handshake_attempts(), 0u);  // a fresh handshake, not a retry
}

TEST(Timers, RekeyOnReceiveOnceNearRejectAfterTime) {
  const KeypairInfo mine{kT0, true, 0};
  EXPECT_FALSE(keypair_needs_rekey_on_receive(mine, kT0 + kRekeyOnReceiveNs));
  EXPECT_TRUE(keypair_needs_rekey_on_receive(mine, kT0 + kRekeyOnReceiveNs + 1));
  EXPECT_FALSE(keypair_needs_rekey_on_receive(KeypairInfo{kT0, false, 0}, kT0 + 170 * kSec));
  EXPECT_EQ(kRekeyOnReceiveNs, 165 * kSec);

  PeerTimers t = make_timers();
  const uint64_t late = kT0 + 166 * kSec;
  t.keypair_received(mine, late);
  EXPECT_TRUE(t.poll(late).send_initiation);
  t.handshake_initiated(late);
  t.handshake_complete(late + kSec);
  // Only once per keypair, until a new session is derived.
  t.keypair_received(mine, late + 10 * kSec);
  EXPECT_TRUE(nothing(t.poll(late + 10 * kSec)));
  t.session_derived(late + 11 * kSec);
  t.keypair_received(mine, late + 12 * kSec);
  EXPECT_TRUE(t.poll(late + 12 * kSec).send_initiation);
}

TEST(Timers, HandshakeRequestsAreRateLimitedToOnePerRekeyTimeout) {
  PeerTimers t = make_timers();
  t.request_handshake(kT0);
  EXPECT_EQ(t.next_deadline(), 0u);  // due at once
  ASSERT_TRUE(t.poll(kT0).send_initiation);
  t.handshake_initiated(kT0);
  t.handshake_complete(kT0 + kSec);

  t.request_handshake(kT0 + 2 * kSec);
  EXPECT_EQ(t.next_deadline(), kT0 + kRekeyTimeoutNs);
  EXPECT_TRUE(nothing(t.poll(kT0 + 2 * kSec)));
  EXPECT_TRUE(t.poll(kT0 + kRekeyTimeoutNs).send_initiation);
}

TEST(Timers, RequestWhileHandshakeInFlightIsCoveredByRetransmission) {
  PeerTimers t = make_timers();
  t.handshake_initiated(kT0);
  t.request_handshake(kT0 + kSec);
  EXPECT_EQ(t.next_deadline(), kT0 + kRekeyTimeoutNs + kJitter);
  EXPECT_TRUE(nothing(t.poll(kT0 + kRekeyTimeoutNs)));
  TimerActions a = t.poll(kT0 + kRekeyTimeoutNs + kJitter);
  EXPECT_TRUE(a.send_initiation);
  EXPECT_EQ(t.handshake_attempts(), 1u);  // a retry
}

TEST(Timers, PersistentKeepalive) {
  PeerTimers t = make_timers();
  t.set_persistent_keepalive(25, kT0);
  EXPECT_EQ(t.persistent_keepalive(), 25);
  EXPECT_TRUE(t.poll(kT0).send_keepalive);  // turning it on sends one at once
  t.authenticated_packet_sent(kT0);
  EXPECT_EQ(t.next_deadline(), kT0 + 25 * kSec);
  // Any authenticated traffic, either way, pushes it back.
  t.authenticated_packet_received(kT0 + 20 * kSec);
  EXPECT_TRUE(nothing(t.poll(kT0 + 25 * kSec)));
  EXPECT_TRUE(t.poll(kT0 + 45 * kSec).send_keepalive);
  // Changing the interval does not send at once; turning it off disarms it.
  t.set_persistent_keepalive(30, kT0 + 46 * kSec);
  EXPECT_TRUE(nothing(t.poll(kT0 + 46 * kSec)));
  t.authenticated_packet_sent(kT0 + 50 * kSec);
  t.set_persistent_keepalive(0, kT0 + 51 * kSec);
  EXPECT_EQ(t.next_deadline(), UINT64_MAX);
  t.authenticated_packet_sent(kT0 + 52 * kSec);
  EXPECT_TRUE(nothing(t.poll(kT0 + 500 * kSec)));
}

TEST(Timers, KeysZeroedThreeRejectAfterTimesAfterLastSession) {
  PeerTimers t = make_timers();
  t.session_derived(kT0);
  t.session_derived(kT0 + 100 * kSec);  // a newer session pushes it back
  EXPECT_EQ(kZeroKeyMaterialNs, 540 * kSec);
  EXPECT_TRUE(nothing(t.poll(kT0 + kZeroKeyMaterialNs)));
  TimerActions a = t.poll(kT0 + 100 * kSec + kZeroKeyMaterialNs);
  EXPECT_TRUE(a.zero_keys);
  EXPECT_FALSE(a.send_initiation);
}

TEST(Timers, KeypairSendAndReceiveLimits) {
  const KeypairInfo kp{kT0, true, 0};
  EXPECT_TRUE(keypair_can_send(kp, kT0));
  EXPECT_TRUE(keypair_can_send(kp, kT0 + kRejectAfterTimeNs - 1));
  EXPECT_FALSE(keypair_can_send(kp, kT0 + kRejectAfterTimeNs));
  EXPECT_TRUE(keypair_can_send(KeypairInfo{kT0, false, kRejectAfterMessages - 1}, kT0));
  EXPECT_FALSE(keypair_can_send(KeypairInfo{kT0, false, kRejectAfterMessages}, kT0));
  EXPECT_TRUE(keypair_can_receive(kp, kRejectAfterMessages - 1, kT0 + kRejectAfterTimeNs - 1));
  EXPECT_FALSE(keypair_can_receive(kp, kRejectAfterMessages, kT0));
  EXPECT_FALSE(keypair_can_receive(kp, 0, kT0 + kRejectAfterTimeNs));
}

TEST(Timers, SessionDerivedSatisfiesPendingRequest) {
  PeerTimers t = make_timers();
  t.handshake_initiated(kT0);
  t.handshake_complete(kT0 + kSec);
  t.request_handshake(kT0 + 2 * kSec);  // deferred until kT0 + 5 s
  t.session_derived(kT0 + 3 * kSec);    // the peer initiated meanwhile
  EXPECT_TRUE(nothing(t.poll(kT0 + kRekeyTimeoutNs)));
}

}  // namespace
}  // namespace sluice::wg
