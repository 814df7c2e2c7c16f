// Per-peer WireGuard timers (whitepaper section 6, wireguard-go timers.go and send.go) as pure
// logic over injected monotonic time (`now`, nanoseconds). The control thread feeds events as
// packets are sent and received, and calls poll(now) at or after next_deadline() to learn what to do.
//
// Driving it:
//   events:  handshake messages sent/received -> authenticated_packet_sent/received (+
//            handshake_initiated for every initiation sent, even if transmission failed);
//            transport packets -> authenticated_packet_*, plus data_* when they carry payload, plus
//            keypair_sent/keypair_received with the keypair they used;
//            handshake done -> session_derived (both roles), handshake_complete (initiator: on the
//            response; responder: on the first transport message received on the new keypair);
//            data to send but no keypair that keypair_can_send() -> request_handshake.
//   actions: TimerActions from poll(now); a send_keepalive without a usable keypair becomes a
//            request_handshake, as in wireguard-go.
// Control thread only; not thread-safe.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>

#include "controlplane/wg/cookie.h"
#include "dataplane/wg/protocol.h"

namespace sluice::wg {

inline constexpr uint64_t kRekeyTimeoutNs = uint64_t(kRekeyTimeout) * kNsPerSecond;
inline constexpr uint64_t kKeepaliveTimeoutNs = uint64_t(kKeepaliveTimeout) * kNsPerSecond;
inline constexpr uint64_t kRekeyAfterTimeNs = uint64_t(kRekeyAfterTime) * kNsPerSecond;
inline constexpr uint64_t kRejectAfterTimeNs = uint64_t(kRejectAfterTime) * kNsPerSecond;
inline constexpr uint64_t kRekeyAttemptTimeNs = uint64_t(kRekeyAttemptTime) * kNsPerSecond;
// Keys of a peer that stays silent are erased this long after the last session was derived.
inline constexpr uint64_t kZeroKeyMaterialNs = 3 * kRejectAfterTimeNs;
// An initiator keypair is renewed from the receive side once this old (wireguard-go
// keepKeyFreshReceiving): REJECT_AFTER_TIME - KEEPALIVE_TIMEOUT - REKEY_TIMEOUT = 165 s.
inline constexpr uint64_t kRekeyOnReceiveNs = kRejectAfterTimeNs - kKeepaliveTimeoutNs - kRekeyTimeoutNs;
// Retransmissions get a random extra delay in [0, 334 ms) so that peers do not stay in lockstep.
inline constexpr uint64_t kRekeyTimeoutJitterMaxNs = 334'000'000ull;
// Retries of one handshake before giving up: REKEY_ATTEMPT_TIME / REKEY_TIMEOUT (wireguard-go
// MaxTimerHandshakes); with the first initiation that is 20 sent over about 100 s.
inline constexpr uint32_t kMaxHandshakeAttempts = kRekeyAttemptTime / kRekeyTimeout;

// What one keypair has done, as the caller tracks it.
struct KeypairInfo {
  uint64_t created;       // now at session_derived
  bool initiator;         // SessionKeys::initiator
  uint64_t send_counter;  // next nonce to send (messages sent so far)
};

// A keypair may send while younger than REJECT_AFTER_TIME and below REJECT_AFTER_MESSAGES.
[[nodiscard]] bool keypair_can_send(const KeypairInfo& kp, uint64_t now);
// Received messages are accepted on it under the same bounds (receive counter for the count).
[[nodiscard]] bool keypair_can_receive(const KeypairInfo& kp, uint64_t receive_counter, uint64_t now);
// keepKeyFreshSending: after REKEY_AFTER_MESSAGES, or when it is ours (initiator) and older than
// REKEY_AFTER_TIME, sending on it asks for a new handshake.
[[nodiscard]] bool keypair_needs_rekey_on_send(const KeypairInfo& kp, uint64_t now);
// keepKeyFreshReceiving: an initiator keypair older than kRekeyOnReceiveNs asks for a new handshake
// when used to receive, so that it is replaced before the peer stops accepting it.
[[nodiscard]] bool keypair_needs_rekey_on_receive(const KeypairInfo& kp, uint64_t now);

struct TimerActions {
  // create_initiation(), send it, then handshake_initiated(now).
  bool send_initiation = false;
  // An empty transport message on the current keypair.
  bool send_keepalive = false;
  // REKEY_ATTEMPT_TIME exhausted: drop packets staged for the peer; retries stop here.
  bool handshake_gave_up = false;
  // Nothing derived for 3 * REJECT_AFTER_TIME: drop all keypairs (release_index, secure_zero)
  // and Noise::clear_handshake(peer).
  bool zero_keys = false;

  bool any() const { return send_initiation || send_keepalive || handshake_gave_up || zero_keys; }
};

class PeerTimers {
 public:
  // Returns the retransmission jitter in nanoseconds; taken modulo kRekeyTimeoutJitterMaxNs.
  // Empty: uniform random from libsodium.
  using Jitter = std::function<uint64_t()>;

  explicit PeerTimers(Jitter jitter = {});

  // timers.go events.
  void data_sent(uint64_t now);                      // transport message with payload sent
  void data_received(uint64_t now);                  // transport message with payload received
  void authenticated_packet_sent(uint64_t now);      // any handshake or transport message sent
  void authenticated_packet_received(uint64_t now);  // any authenticated handshake/transport received
  void handshake_initiated(uint64_t now);            // an initiation was sent (or attempted)
  void handshake_complete(uint64_t now);
  void session_derived(uint64_t now);
  // 0 turns it off. Turning it on sends a keepalive at once, as wireguard-go does on configuration.
  void set_persistent_keepalive(uint16_t interval_s, uint64_t now);

  // send.go/receive.go keepKeyFresh*: call after sending/receiving on the current keypair.
  void keypair_sent(const KeypairInfo& current, uint64_t now);
  void keypair_received(const KeypairInfo& current, uint64_t now);
  // Data is waiting and no keypair can send. Ignored while an initiation awaits its response (its
  // retransmission covers it); otherwise poll() asks for an initiation as soon as REKEY_TIMEOUT has
  // passed since the last one. wireguard-go drops such a request instead of deferring it.
  void request_handshake(uint64_t now);

  // Fires every timer due at `now` and returns what to do.
  [[nodiscard]] TimerActions poll(uint64_t now);
  // Earliest time at which poll() can return an action; UINT64_MAX if none is armed.
  [[nodiscard]] uint64_t next_deadline() const;

  uint32_t handshake_attempts() const { return handshake_attempts_; }
  std::optional<uint64_t> last_handshake_complete() const { return last_handshake_complete_; }
  uint16_t persistent_keepalive() const { return persistent_keepalive_s_; }

 private:
  static constexpr uint64_t kOff = UINT64_MAX;

  uint64_t jitter();
  void packet_traversal(uint64_t now);
  std::optional<uint64_t> request_due() const;

  Jitter jitter_;
  // Deadlines; kOff when disarmed.
  uint64_t retransmit_handshake_ = kOff;
  uint64_t send_keepalive_ = kOff;
  uint64_t new_handshake_ = kOff;
  uint64_t zero_key_material_ = kOff;
  uint64_t persistent_keepalive_ = kOff;

  uint32_t handshake_attempts_ = 0;
  bool need_another_keepalive_ = false;
  bool handshake_requested_ = false;
  bool sent_last_minute_handshake_ = false;
  uint16_t persistent_keepalive_s_ = 0;
  std::optional<uint64_t> last_initiation_sent_;
  std::optional<uint64_t> last_handshake_complete_;
};

}  // namespace sluice::wg
