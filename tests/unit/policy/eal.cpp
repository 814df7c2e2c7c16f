#include "tests/unit/policy/eal.h"

#include <rte_eal.h>
#include <unistd.h>

#include <stdexcept>
#include <string>
#include <vector>

namespace sluice::policy::test {

void ensure_eal() {
  static const bool ok = [] {
    std::vector<std::string> args = {"unit-policy", "--no-huge", "-m", "256", "--no-pci", "--no-shconf",
                                      "--file-prefix=sluice-policy-" + std::to_string(getpid()), "-l", "0",
                                      "--log-level=lib.eal:error"};
    std::vector<char*> argv;
    for (auto& a : args) {
      argv.push_back(a.data());
    }
    return rte_eal_init(int(argv.size()), argv.data()) >= 0;
  }();
  if (!ok) {
    throw std::runtime_error("rte_eal_init failed");
  }
}

}  // namespace sluice::policy::test
