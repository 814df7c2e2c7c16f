// Anti-replay for transport-data counters (whitepaper 5.4.6): the RFC 6479 sliding bitmap, laid
// out as the Linux driver does it. Packets may arrive reordered (multiple paths, NIC queues), so
// any counter within the window that has not been seen yet is accepted.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>

#include "dataplane/wg/protocol.h"

namespace sluice::wg {

// The worker uses it in two passes over a burst (the VPP/boringtun split):
//   check() before the AEAD, to drop replays and stale packets without paying for decryption;
//   mark() after the tag has verified, because only authenticated counters may move the window.
// Two copies of one packet in the same burst both pass check(); mark() is the authority and
// rejects the second, so the caller must drop a packet whose mark() fails.
//
// Not thread-safe: a keypair's window is owned by the one worker that receives its peer's
// traffic (RSS keeps the peer's UDP flow on one queue). No allocation: plain data, copyable.
class ReplayWindow {
 public:
  static constexpr size_t kWordBits = 64;
  static constexpr size_t kRingBits = 4096;
  static constexpr size_t kRingWords = kRingBits / kWordBits;
  // The word holding the newest counter is recycled whole when the top crosses into it, so one
  // word of the ring is never history: the window is the ring less a word, as the kernel's
  // 8192-bit ring gives 8128.
  static constexpr uint64_t kWindowSize = kRingBits - kWordBits;  // 4032

  // True if counter may be accepted: below the rekey hard limit, not older than the window, and
  // not yet marked. Cheap; does not change the window.
  bool check(uint64_t counter) const {
    if (counter >= kRejectAfterMessages) return false;
    const uint64_t n = counter + 1;
    if (n > top_) return true;
    if (n + kWindowSize < top_) return false;
    return (ring_[word_of(n)] & bit_of(n)) == 0;
  }

  // Records an authenticated counter. Returns false, recording nothing, if check() would now
  // say no: a duplicate, or a counter the window moved past since check().
  bool mark(uint64_t counter) {
    if (counter >= kRejectAfterMessages) return false;
    const uint64_t n = counter + 1;
    if (n + kWindowSize < top_) return false;
    if (n > top_) {
      // Words between the old and the new top hold bits from a lap ago: clear them. A jump of
      // a whole ring or more clears every word, which bounds the loop at kRingWords.
      const uint64_t top_word = top_ / kWordBits;
      const uint64_t stale = std::min<uint64_t>(n / kWordBits - top_word, kRingWords);
      for (uint64_t i = 1; i <= stale; ++i) ring_[(top_word + i) % kRingWords] = 0;
      top_ = n;
    }
    uint64_t& word = ring_[word_of(n)];
    const uint64_t bit = bit_of(n);
    if (word & bit) return false;
    word |= bit;
    return true;
  }

  // A fresh keypair starts with nothing seen.
  void reset() { *this = ReplayWindow{}; }

  // Greatest counter marked so far; 0 when nothing has been (counter 0 is a valid counter too).
  uint64_t greatest() const { return top_ == 0 ? 0 : top_ - 1; }

 private:
  static size_t word_of(uint64_t n) { return size_t(n / kWordBits) % kRingWords; }
  static uint64_t bit_of(uint64_t n) { return uint64_t{1} << (n % kWordBits); }

  // Counters are stored plus one, so the all-zero state means "nothing seen" and counter 0 needs
  // no special case. No overflow: counters are capped below kRejectAfterMessages.
  uint64_t top_ = 0;  // greatest marked counter + 1
  uint64_t ring_[kRingWords] = {};
};

}  // namespace sluice::wg
