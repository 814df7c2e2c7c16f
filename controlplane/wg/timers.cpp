#include "controlplane/wg/timers.h"

#include <algorithm>
#include <utility>

#include "controlplane/wg/primitives.h"

namespace sluice::wg {

bool keypair_can_send(const KeypairInfo& kp, uint64_t now) {
  return kp.send_counter < kRejectAfterMessages && now - kp.created < kRejectAfterTimeNs;
}

bool keypair_can_receive(const KeypairInfo& kp, uint64_t receive_counter, uint64_t now) {
  return receive_counter < kRejectAfterMessages && now - kp.created < kRejectAfterTimeNs;
}

bool keypair_needs_rekey_on_send(const KeypairInfo& kp, uint64_t now) {
  return kp.send_counter > kRekeyAfterMessages || (kp.initiator && now - kp.created > kRekeyAfterTimeNs);
}

bool keypair_needs_rekey_on_receive(const KeypairInfo& kp, uint64_t now) {
  return kp.initiator && now - kp.created > kRekeyOnReceiveNs;
}

PeerTimers::PeerTimers(Jitter jitter) : jitter_(std::move(jitter)) {
  if (!jitter_) crypto_init();
}

uint64_t PeerTimers::jitter() {
  if (jitter_) return jitter_() % kRekeyTimeoutJitterMaxNs;
  uint64_t r;
  random_bytes(&r, sizeof(r));
  return r % kRekeyTimeoutJitterMaxNs;
}

void PeerTimers::data_sent(uint64_t now) {
  // Expect an answer within KEEPALIVE + REKEY_TIMEOUT; authenticated_packet_received disarms it.
  if (new_handshake_ == kOff) new_handshake_ = now + kKeepaliveTimeoutNs + kRekeyTimeoutNs + jitter();
}

void PeerTimers::data_received(uint64_t now) {
  if (send_keepalive_ == kOff) {
    send_keepalive_ = now + kKeepaliveTimeoutNs;
  } else {
    need_another_keepalive_ = true;
  }
}

void PeerTimers::packet_traversal(uint64_t now) {
  if (persistent_keepalive_s_ > 0) persistent_keepalive_ = now + uint64_t(persistent_keepalive_s_) * kNsPerSecond;
}

void PeerTimers::authenticated_packet_sent(uint64_t now) {
  send_keepalive_ = kOff;  // whatever we sent acknowledges what we received
  packet_traversal(now);
}

void PeerTimers::authenticated_packet_received(uint64_t now) {
  new_handshake_ = kOff;  // the peer is answering
  packet_traversal(now);
}

void PeerTimers::handshake_initiated(uint64_t now) {
  last_initiation_sent_ = now;
  handshake_requested_ = false;
  retransmit_handshake_ = now + kRekeyTimeoutNs + jitter();
}

void PeerTimers::handshake_complete(uint64_t now) {
  retransmit_handshake_ = kOff;
  handshake_attempts_ = 0;
  last_handshake_complete_ = now;
}

void PeerTimers::session_derived(uint64_t now) {
  zero_key_material_ = now + kZeroKeyMaterialNs;
  sent_last_minute_handshake_ = false;
  handshake_requested_ = false;
}

void PeerTimers::set_persistent_keepalive(uint16_t interval_s, uint64_t now) {
  const uint16_t old = std::exchange(persistent_keepalive_s_, interval_s);
  if (interval_s == 0) {
    persistent_keepalive_ = kOff;
  } else if (old == 0) {
    persistent_keepalive_ = now;
  }
}

void PeerTimers::keypair_sent(const KeypairInfo& current, uint64_t now) {
  if (keypair_needs_rekey_on_send(current, now)) request_handshake(now);
}

void PeerTimers::keypair_received(const KeypairInfo& current, uint64_t now) {
  if (keypair_needs_rekey_on_receive(current, now) && !sent_last_minute_handshake_) {
    sent_last_minute_handshake_ = true;
    request_handshake(now);
  }
}

void PeerTimers::request_handshake(uint64_t /*now*/) {
  if (retransmit_handshake_ != kOff) return;
  handshake_requested_ = true;
}

std::optional<uint64_t> PeerTimers::request_due() const {
  if (!handshake_requested_) return std::nullopt;
  return last_initiation_sent_ ? *last_initiation_sent_ + kRekeyTimeoutNs : 0;
}

TimerActions PeerTimers::poll(uint64_t now) {
  TimerActions a;
  auto fire = [now](uint64_t& deadline) {
    if (deadline > now) return false;
    deadline = kOff;
    return true;
  };

  if (fire(zero_key_material_)) a.zero_keys = true;
  if (fire(retransmit_handshake_)) {
    if (handshake_attempts_ > kMaxHandshakeAttempts) {
      a.handshake_gave_up = true;
      handshake_requested_ = false;
      send_keepalive_ = kOff;
      if (zero_key_material_ == kOff) zero_key_material_ = now + kZeroKeyMaterialNs;
    } else {
      ++handshake_attempts_;
      a.send_initiation = true;
    }
  }
  if (fire(send_keepalive_)) {
    a.send_keepalive = true;
    if (need_another_keepalive_) {
      need_another_keepalive_ = false;
      send_keepalive_ = now + kKeepaliveTimeoutNs;
    }
  }
  if (fire(new_handshake_)) request_handshake(now);
  if (fire(persistent_keepalive_) && persistent_keepalive_s_ > 0) a.send_keepalive = true;

  if (a.send_initiation) {
    handshake_requested_ = false;  // the retry serves the request too
  } else if (auto due = request_due(); due && *due <= now) {
    handshake_requested_ = false;
    handshake_attempts_ = 0;
    a.send_initiation = true;
  }
  return a;
}

uint64_t PeerTimers::next_deadline() const {
  uint64_t d = std::min({retransmit_handshake_, send_keepalive_, new_handshake_, zero_key_material_,
                         persistent_keepalive_});
  if (auto due = request_due()) d = std::min(d, *due);
  return d;
}

}  // namespace sluice::wg
