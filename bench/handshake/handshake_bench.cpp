// Handshake cost on the control thread: responder (consume_initiation + create_response), initiator
// (create_initiation, and a full round trip), and the cheap reject paths that bound DoS cost.
#include <benchmark/benchmark.h>

#include <vector>

#include "controlplane/wg/noise.h"

namespace sluice::wg {
namespace {

constexpr uint64_t kStepNs = 25'000'000;  // > kInitiationMinIntervalNs: no flood rejects
const Endpoint kSrc{0x0a000001, 51820};

struct Pair {
  Pair() : a(make_key(a_priv), clock(&a_secs)), b(make_key(b_priv), clock(&b_secs)) {
    Key psk;
    random_bytes(psk.data(), psk.size());
    if (a.add_peer(1, b.local_public(), psk) != PeerChange::ok ||
        b.add_peer(2, a.local_public(), psk) != PeerChange::ok) {
      std::abort();
    }
  }
  static const Key& make_key(Key& k) {
    dh_generate(k);
    return k;
  }
  static Noise::WallClock clock(uint64_t* secs) {
    return [secs] { return tai64n((*secs)++, 0); };
  }
  Key a_priv, b_priv;
  uint64_t a_secs = 1'700'000'000, b_secs = 1'700'000'000;
  uint64_t now = 1'000'000'000'000;
  Noise a, b;
};

template <typename M>
Bytes wire(const M& m) {
  return {reinterpret_cast<const uint8_t*>(&m), sizeof(m)};
}

// Responder: consume_initiation + create_response; items/s = handshakes per second on one core.
void BM_Responder(benchmark::State& state) {
  crypto_init();
  Pair p;
  constexpr size_t kBatch = 1024;
  std::vector<MessageInitiation> inits(kBatch);
  size_t next = kBatch;
  MessageCookieReply cr;
  MessageResponse resp;
  SessionKeys keys;
  for (auto _ : state) {
    if (next == kBatch) {
      state.PauseTiming();
      for (auto& m : inits) {
        if (p.a.create_initiation(1, p.now, m) != Outcome::ok) std::abort();
      }
      next = 0;
      state.ResumeTiming();
    }
    p.now += kStepNs;
    uint32_t peer;
    if (p.b.consume_initiation(wire(inits[next++]), kSrc, false, p.now, peer, cr) != Outcome::ok ||
        p.b.create_response(peer, p.now, resp, keys) != Outcome::ok) {
      state.SkipWithError("handshake rejected");
      break;
    }
    p.b.release_index(keys.local_index);
    benchmark::DoNotOptimize(keys);
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_Responder);

void BM_InitiatorCreateInitiation(benchmark::State& state) {
  crypto_init();
  Pair p;
  MessageInitiation init;
  for (auto _ : state) {
    p.now += kStepNs;
    if (p.a.create_initiation(1, p.now, init) != Outcome::ok) std::abort();
    benchmark::DoNotOptimize(init);
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_InitiatorCreateInitiation);

// Both sides of one handshake; minus BM_Responder it is the initiator's share.
void BM_FullHandshake(benchmark::State& state) {
  crypto_init();
  Pair p;
  MessageInitiation init;
  MessageResponse resp;
  MessageCookieReply cr;
  SessionKeys ka, kb;
  for (auto _ : state) {
    p.now += kStepNs;
    uint32_t peer;
    if (p.a.create_initiation(1, p.now, init) != Outcome::ok ||
        p.b.consume_initiation(wire(init), kSrc, false, p.now, peer, cr) != Outcome::ok ||
        p.b.create_response(peer, p.now, resp, kb) != Outcome::ok ||
        p.a.consume_response(wire(resp), kSrc, false, p.now, ka, cr) != Outcome::ok) {
      state.SkipWithError("handshake failed");
      break;
    }
    p.a.release_index(ka.local_index);
    p.b.release_index(kb.local_index);
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_FullHandshake);

// Under load, an initiation without mac2 costs a mac1 check and a cookie reply, no DH.
void BM_UnderLoadCookieReply(benchmark::State& state) {
  crypto_init();
  Pair p;
  MessageInitiation init;
  if (p.a.create_initiation(1, p.now, init) != Outcome::ok) std::abort();
  MessageCookieReply cr;
  for (auto _ : state) {
    uint32_t peer;
    if (p.b.consume_initiation(wire(init), kSrc, true, p.now, peer, cr) != Outcome::cookie_needed) std::abort();
    benchmark::DoNotOptimize(cr);
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_UnderLoadCookieReply);

// An initiation with a bad mac1 is dropped after one BLAKE2s.
void BM_BadMac1Reject(benchmark::State& state) {
  crypto_init();
  Pair p;
  MessageInitiation init;
  if (p.a.create_initiation(1, p.now, init) != Outcome::ok) std::abort();
  init.mac1[0] ^= 1;
  MessageCookieReply cr;
  for (auto _ : state) {
    uint32_t peer;
    if (p.b.consume_initiation(wire(init), kSrc, false, p.now, peer, cr) != Outcome::bad_mac1) std::abort();
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_BadMac1Reject);

}  // namespace
}  // namespace sluice::wg

BENCHMARK_MAIN();
