// One EAL per test process, without hugepages: rte_acl and rte_lpm need its memory.
#pragma once

namespace sluice::policy::test {

void ensure_eal();

}  // namespace sluice::policy::test
