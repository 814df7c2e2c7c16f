// Transport crypto cost per packet: the raw AEAD of each backend, and the worker's two-pass
// decrypt of a burst (parse, replay pre-check, AEAD, mark). Sizes are inner-packet bytes:
// 64 (TCP ACKs, VoIP), 512, and 1420 (a full packet at WireGuard's default MTU).
#include <benchmark/benchmark.h>

#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "dataplane/crypto/aead.h"
#include "dataplane/wg/replay.h"
#include "dataplane/wg/transport.h"

namespace {

using sluice::crypto::Aead;
using sluice::crypto::AeadBackend;
using sluice::crypto::backend_name;
using sluice::crypto::kAeadTagLen;
namespace wg = sluice::wg;

constexpr size_t kSizes[] = {64, 512, 1420};
constexpr AeadBackend kBackends[] = {AeadBackend::openssl, AeadBackend::sodium};
constexpr size_t kBurst = 32;  // the workers' rx burst
constexpr uint16_t kMtu = 1420;

std::vector<uint8_t> random_bytes(size_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<uint8_t> b(n);
  for (auto& x : b) x = uint8_t(rng());
  return b;
}

void report(benchmark::State& state, size_t packets_per_iteration, size_t bytes_per_packet) {
  const auto packets = int64_t(state.iterations()) * int64_t(packets_per_iteration);
  state.SetItemsProcessed(packets);
  state.SetBytesProcessed(packets * int64_t(bytes_per_packet));
}

// In place, as the tx path seals inside the mbuf; each iteration takes the next counter.
void aead_seal(benchmark::State& state, AeadBackend backend, size_t len) {
  Aead aead(backend);
  const auto key = random_bytes(sluice::crypto::kAeadKeyLen, 1);
  auto buf = random_bytes(len + kAeadTagLen, 2);
  uint64_t counter = 0;
  for (auto _ : state) {
    if (!aead.seal(key.data(), counter++, buf.data(), len, buf.data())) {
      state.SkipWithError("seal failed");
      break;
    }
    benchmark::ClobberMemory();
  }
  report(state, 1, len);
}

// Opens one genuine message over and over, to a separate buffer so the input stays intact.
void aead_open(benchmark::State& state, AeadBackend backend, size_t len) {
  Aead aead(backend);
  const auto key = random_bytes(sluice::crypto::kAeadKeyLen, 1);
  const auto plain = random_bytes(len, 2);
  std::vector<uint8_t> sealed(len + kAeadTagLen), out(len);
  if (!aead.seal(key.data(), 42, plain.data(), len, sealed.data())) {
    state.SkipWithError("seal failed");
    return;
  }
  for (auto _ : state) {
    if (!aead.open(key.data(), 42, sealed.data(), sealed.size(), out.data())) {
      state.SkipWithError("open failed");
      break;
    }
    benchmark::ClobberMemory();
  }
  report(state, 1, len);
}

// The rx worker's decrypt for one burst of one peer's packets: parse each header and pre-check
// its counter, open the burst, then mark the counters that authenticated.
void transport_decrypt_burst(benchmark::State& state, AeadBackend backend, size_t len) {
  Aead aead(backend);
  const auto key = random_bytes(wg::kKeyLen, 1);
  const auto plain = random_bytes(len, 2);
  const size_t msg_len = wg::transport_sealed_len(len, kMtu);
  std::vector<std::vector<uint8_t>> msgs(kBurst, std::vector<uint8_t>(msg_len));
  std::vector<std::vector<uint8_t>> outs(kBurst, std::vector<uint8_t>(msg_len));
  for (size_t i = 0; i < kBurst; ++i) {
    if (wg::transport_seal(aead, key.data(), 0x1234, i, plain.data(), len, kMtu,
                           msgs[i].data()) != msg_len) {
      state.SkipWithError("seal failed");
      return;
    }
  }
  wg::ReplayWindow window;
  wg::OpenOp ops[kBurst];
  uint64_t counters[kBurst];
  for (auto _ : state) {
    // The same 32 counters arrive every round; a fresh window keeps them all acceptable and is
    // 520 bytes of stores, small beside 32 AEADs.
    window.reset();
    size_t queued = 0;
    for (size_t i = 0; i < kBurst; ++i) {
      uint32_t receiver;
      uint64_t counter;
      if (!wg::transport_parse(msgs[i].data(), msg_len, &receiver, &counter) ||
          !window.check(counter))
        continue;
      counters[queued] = counter;
      ops[queued++] = {key.data(), msgs[i].data(), msg_len, outs[i].data(), -1};
    }
    wg::transport_open_burst(aead, ops, queued);
    size_t delivered = 0;
    for (size_t q = 0; q < queued; ++q)
      delivered += ops[q].plain_len >= 0 && window.mark(counters[q]);
    if (delivered != kBurst) {
      state.SkipWithError("burst did not decrypt");
      break;
    }
    benchmark::ClobberMemory();
  }
  report(state, kBurst, len);
}

}  // namespace

int main(int argc, char** argv) {
  for (AeadBackend backend : kBackends) {
    const std::string name = backend_name(backend);
    for (size_t len : kSizes) {
      const std::string suffix = "/" + name + "/" + std::to_string(len);
      benchmark::RegisterBenchmark(("aead_seal" + suffix).c_str(), aead_seal, backend, len);
      benchmark::RegisterBenchmark(("aead_open" + suffix).c_str(), aead_open, backend, len);
      benchmark::RegisterBenchmark(("transport_decrypt_burst32" + suffix).c_str(),
                                   transport_decrypt_burst, backend, len);
    }
  }
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
