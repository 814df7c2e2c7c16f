// The kernel's view of the gateway's interfaces, through rtnetlink (libmnl): IPv4 addresses of
// the network namespace sluiced runs in, and link state (also of the interfaces behind
// net_af_packet ports).
//
// KernelWatcher keeps one non-blocking socket subscribed to link and IPv4 address changes; the
// control loop drains it and, when anything arrived (or the kernel dropped events because the
// socket overflowed), takes a complete dump on a separate socket. Rebuilding from a dump instead
// of applying each event keeps the state right by construction: a change after the dump sends a
// new event, which brings another dump.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "controlplane/discovery/registry.h"

struct mnl_socket;

namespace sluice::discovery {

struct KernelLink {
  int index = 0;
  std::string name;
  unsigned flags = 0;       // IFF_*
  unsigned short type = 0;  // ARPHRD_*
};

struct KernelAddr {
  int index = 0;            // the link's index
  uint32_t addr = 0;        // host order: IFA_LOCAL, else IFA_ADDRESS
  uint8_t prefix_len = 0;
  uint32_t flags = 0;       // IFA_F_*
};

struct KernelSnapshot {
  std::vector<KernelLink> links;
  std::vector<KernelAddr> addrs;
  const KernelLink* link(const std::string& name) const;
  const KernelLink* link(int index) const;
};

// An interface whose subnets count: administratively up with carrier (IFF_UP and IFF_RUNNING),
// not loopback, Ethernet framing (wired, wireless, bridges, VLANs; not tunnels or WireGuard).
bool usable_link(unsigned flags, unsigned short type);
// A unicast address worth announcing: not 0/8, loopback 127/8, auto-configured link-local
// 169.254/16, multicast 224/4, reserved 240/4 or limited broadcast, and not the directed
// broadcast address of its own prefix.
bool usable_address(uint32_t addr, uint8_t prefix_len);

// The subnets the snapshot shows: one observation per usable address on a usable link.
std::vector<Observation> kernel_observations(const KernelSnapshot& snap);

// Link up with carrier (for the interface behind a net_af_packet port).
bool link_running(const KernelLink& l);

class KernelWatcher {
 public:
  KernelWatcher() = default;
  ~KernelWatcher();
  KernelWatcher(const KernelWatcher&) = delete;
  KernelWatcher& operator=(const KernelWatcher&) = delete;

  // Subscribes to RTNLGRP_LINK and RTNLGRP_IPV4_IFADDR.
  bool open(std::string* err);
  bool is_open() const { return events_ != nullptr; }

  // Reads every pending event without blocking. True when something arrived or was lost.
  bool drain();

  // A complete dump of links and IPv4 addresses on a socket of its own (bounded by a 1 s
  // receive timeout).
  static bool dump(KernelSnapshot* out, std::string* err);

 private:
  mnl_socket* events_ = nullptr;
};

}  // namespace sluice::discovery
