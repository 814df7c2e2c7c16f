// Single-writer statistics counters: the owning worker adds, the control thread reads.
// Relaxed atomic load/store compile to plain moves on x86-64, so an increment costs
// what a plain `++` costs while the reader never sees a torn value; no locked RMW.
#pragma once

#include <atomic>
#include <cstdint>

namespace sluice::dp {

class Counter {
 public:
  void add(uint64_t n = 1) { v_.store(v_.load(std::memory_order_relaxed) + n, std::memory_order_relaxed); }
  void set(uint64_t n) { v_.store(n, std::memory_order_relaxed); }
  uint64_t get() const { return v_.load(std::memory_order_relaxed); }

 private:
  std::atomic<uint64_t> v_{0};
};

}  // namespace sluice::dp
