// A plain evaluator of gateway access policies straight off the configuration: no sender
// classes, no CIDR covers, no rte_acl. Tests only: it cross-checks CompiledPolicy::classify()
// and explain() on random flows.
#pragma once

#include <cstdint>

#include "controlplane/config/config.h"
#include "controlplane/policy/compiled.h"

namespace sluice::policy::test {

// The verdict for one flow of config.peers[peer]: allowed iff some applicable policy's first
// matching rule allows; the deciding policy is the lowest-index allowing one, else the
// lowest-index one whose destinations hold dst (its deny rule, or kNoRule for default deny).
Verdict reference_verdict(const config::Config& cfg, const AppliesFn& applies, size_t peer, uint32_t dst,
                          uint8_t proto, uint16_t dport);

// Whether the gateway routes dst at all: a configured subnet or a LAN port's network holds it.
bool reference_routed(const config::Config& cfg, uint32_t dst);

}  // namespace sluice::policy::test
