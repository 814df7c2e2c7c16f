// Small helpers the control thread's files share.
#pragma once

#include <cstdint>
#include <cstdio>
#include <string>

#include "controlplane/config/address.h"
#include "dataplane/neigh.h"
#include "dataplane/peers.h"

namespace sluice::cp {

inline constexpr uint64_t kTickNs = 10'000'000;  // timers and housekeeping every 10 ms
inline constexpr unsigned kDrainBatch = 64;

inline std::string endpoint_text(uint64_t ep) {
  if (ep == 0) return "";
  return config::to_string(config::SockAddr{dp::endpoint_addr(ep), dp::endpoint_port(ep)});
}

inline std::string mac_text(const dp::MacAddr& m) {
  char b[18];
  snprintf(b, sizeof b, "%02x:%02x:%02x:%02x:%02x:%02x", m.b[0], m.b[1], m.b[2], m.b[3], m.b[4], m.b[5]);
  return b;
}

}  // namespace sluice::cp
