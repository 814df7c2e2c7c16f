#include "tests/unit/dataplane/eal_env.h"

#include <rte_eal.h>
#include <unistd.h>

#include <cstring>
#include <stdexcept>
#include <string>

#include "dataplane/dataplane.h"
#include "dataplane/mbuf_meta.h"

namespace sluice::test {

void ensure_eal() {
  dp::Settings s;
  s.workers = 2;  // three lcores for the two-worker tests; eal_argv maps them onto the CPUs there are
  s.eal_args = {"--no-huge", "-m", "256", "--no-pci", "--log-level=lib.eal:error",
                "--file-prefix=sluice-unit-" + std::to_string(getpid()), "--no-shconf"};
  std::string err;
  if (!dp::eal_init(s, &err)) throw std::runtime_error(err);
}

rte_mempool* test_pool() {
  static rte_mempool* pool = [] {
    ensure_eal();
    return rte_pktmbuf_pool_create("unit_pool", 1023, 0, dp::kMetaPrivSize, RTE_MBUF_DEFAULT_BUF_SIZE, 0);
  }();
  return pool;
}

rte_mbuf* mbuf_from(rte_mempool* pool, const std::vector<uint8_t>& bytes, uint16_t) {
  rte_mbuf* m = rte_pktmbuf_alloc(pool);
  if (m == nullptr) throw std::runtime_error("mbuf pool empty");
  void* d = rte_pktmbuf_append(m, uint16_t(bytes.size()));
  memcpy(d, bytes.data(), bytes.size());
  return m;
}

std::vector<uint8_t> bytes_of(const rte_mbuf* m) {
  const uint8_t* d = rte_pktmbuf_mtod(m, const uint8_t*);
  return std::vector<uint8_t>(d, d + m->data_len);
}

}  // namespace sluice::test
