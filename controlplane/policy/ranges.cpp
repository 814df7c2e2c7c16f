#include "controlplane/policy/ranges.h"

#include <algorithm>

namespace sluice::policy {

std::vector<config::PortRange> merge_ports(std::vector<config::PortRange> ports) {
  std::sort(ports.begin(), ports.end(),
            [](const config::PortRange& a, const config::PortRange& b) { return a.first < b.first; });
  std::vector<config::PortRange> out;
  for (const config::PortRange& p : ports) {
    if (!out.empty() && uint32_t(p.first) <= uint32_t(out.back().last) + 1) {
      out.back().last = std::max(out.back().last, p.last);
    } else {
      out.push_back(p);
    }
  }
  return out;
}

std::vector<AddrRange> merge_ranges(std::vector<AddrRange> ranges) {
  std::sort(ranges.begin(), ranges.end(),
            [](const AddrRange& a, const AddrRange& b) { return a.first < b.first; });
  std::vector<AddrRange> out;
  for (const AddrRange& r : ranges) {
    // Adjacent ranges join too (last + 1 == first), without overflowing at 255.255.255.255.
    if (!out.empty() && (out.back().last == UINT32_MAX || r.first <= out.back().last + 1)) {
      out.back().last = std::max(out.back().last, r.last);
    } else {
      out.push_back(r);
    }
  }
  return out;
}

bool ranges_overlap(const std::vector<AddrRange>& a, const std::vector<AddrRange>& b) {
  size_t i = 0, j = 0;
  while (i < a.size() && j < b.size()) {
    if (a[i].last < b[j].first) {
      i++;
    } else if (b[j].last < a[i].first) {
      j++;
    } else {
      return true;
    }
  }
  return false;
}

bool ranges_contain(const std::vector<AddrRange>& set, uint32_t addr) {
  auto it = std::upper_bound(set.begin(), set.end(), addr,
                             [](uint32_t a, const AddrRange& r) { return a < r.first; });
  return it != set.begin() && std::prev(it)->contains(addr);
}

}  // namespace sluice::policy
