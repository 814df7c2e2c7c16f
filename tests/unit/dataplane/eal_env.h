// One EAL per test process, without hugepages, and helpers to build frames.
#pragma once

#include <rte_mbuf.h>

#include <cstdint>
#include <vector>

namespace sluice::test {

// Initialises the EAL on first use (lcores 0-2: the test thread plays the control thread and
// calls the workers' poll_once() itself).
void ensure_eal();

// A small pool for tests that need mbufs without a Dataplane.
rte_mempool* test_pool();

rte_mbuf* mbuf_from(rte_mempool* pool, const std::vector<uint8_t>& bytes, uint16_t priv_headroom = 0);
std::vector<uint8_t> bytes_of(const rte_mbuf* m);

}  // namespace sluice::test
