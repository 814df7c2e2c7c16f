#include "controlplane/discovery/kernel.h"

#include <arpa/inet.h>
#include <libmnl/libmnl.h>
#include <linux/if.h>
#include <linux/if_addr.h>
#include <linux/if_arp.h>
#include <linux/rtnetlink.h>
#include <sys/socket.h>
#include <sys/time.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <ctime>

namespace sluice::discovery {

const KernelLink* KernelSnapshot::link(const std::string& name) const {
  for (const auto& l : links)
    if (l.name == name) return &l;
  return nullptr;
}

const KernelLink* KernelSnapshot::link(int index) const {
  for (const auto& l : links)
    if (l.index == index) return &l;
  return nullptr;
}

bool link_running(const KernelLink& l) { return (l.flags & IFF_UP) && (l.flags & IFF_RUNNING); }

bool usable_link(unsigned flags, unsigned short type) {
  if (!(flags & IFF_UP) || !(flags & IFF_RUNNING)) return false;
  if (flags & IFF_LOOPBACK) return false;
  return type == ARPHRD_ETHER;
}

bool usable_address(uint32_t addr, uint8_t prefix_len) {
  if (prefix_len > 32) return false;
  const uint8_t first = uint8_t(addr >> 24);
  if (first == 0 || first == 127) return false;         // "this network", loopback
  if ((addr & 0xffff0000u) == 0xa9fe0000u) return false;  // 169.254/16: auto-configured
  if (first >= 224) return false;                       // multicast, reserved, broadcast
  const config::Prefix p{addr, prefix_len};
  if (prefix_len <= 30 && addr == p.broadcast()) return false;
  return true;
}

std::vector<Observation> kernel_observations(const KernelSnapshot& snap) {
  std::vector<Observation> out;
  for (const auto& a : snap.addrs) {
    if (a.flags & (IFA_F_TENTATIVE | IFA_F_DADFAILED)) continue;
    const KernelLink* l = snap.link(a.index);
    if (l == nullptr || !usable_link(l->flags, l->type) || !usable_address(a.addr, a.prefix_len)) continue;
    const config::Prefix p{a.addr, a.prefix_len};
    out.push_back({config::Prefix{p.network(), p.len}, l->name, Source::kernel});
  }
  return out;
}

namespace {

int link_cb(const nlmsghdr* nlh, void* data) {
  auto* snap = static_cast<KernelSnapshot*>(data);
  if (nlh->nlmsg_type != RTM_NEWLINK) return MNL_CB_OK;
  const auto* ifm = static_cast<const ifinfomsg*>(mnl_nlmsg_get_payload(nlh));
  KernelLink l;
  l.index = ifm->ifi_index;
  l.flags = ifm->ifi_flags;
  l.type = ifm->ifi_type;
  mnl_attr_parse(
      nlh, sizeof(*ifm),
      [](const nlattr* attr, void* d) {
        if (mnl_attr_get_type(attr) == IFLA_IFNAME && mnl_attr_validate(attr, MNL_TYPE_NUL_STRING) >= 0)
          static_cast<KernelLink*>(d)->name = mnl_attr_get_str(attr);
        return MNL_CB_OK;
      },
      &l);
  snap->links.push_back(std::move(l));
  return MNL_CB_OK;
}

int addr_cb(const nlmsghdr* nlh, void* data) {
  auto* snap = static_cast<KernelSnapshot*>(data);
  if (nlh->nlmsg_type != RTM_NEWADDR) return MNL_CB_OK;
  const auto* ifa = static_cast<const ifaddrmsg*>(mnl_nlmsg_get_payload(nlh));
  if (ifa->ifa_family != AF_INET) return MNL_CB_OK;
  KernelAddr a;
  a.index = int(ifa->ifa_index);
  a.prefix_len = ifa->ifa_prefixlen;
  a.flags = ifa->ifa_flags;
  struct Attrs {
    bool have_local = false, have_address = false, have_flags = false;
    uint32_t local = 0, address = 0, flags = 0;
  } at;
  mnl_attr_parse(
      nlh, sizeof(*ifa),
      [](const nlattr* attr, void* d) {
        auto* x = static_cast<Attrs*>(d);
        const int type = mnl_attr_get_type(attr);
        if ((type == IFA_LOCAL || type == IFA_ADDRESS) && mnl_attr_validate(attr, MNL_TYPE_U32) >= 0) {
          const uint32_t v = ntohl(mnl_attr_get_u32(attr));
          if (type == IFA_LOCAL) x->local = v, x->have_local = true;
          else x->address = v, x->have_address = true;
        } else if (type == IFA_FLAGS && mnl_attr_validate(attr, MNL_TYPE_U32) >= 0) {
          x->flags = mnl_attr_get_u32(attr), x->have_flags = true;
        }
        return MNL_CB_OK;
      },
      &at);
  // On point-to-point links IFA_ADDRESS is the far end; IFA_LOCAL is always ours.
  if (!at.have_local && !at.have_address) return MNL_CB_OK;
  a.addr = at.have_local ? at.local : at.address;
  if (at.have_flags) a.flags = at.flags;  // the 32-bit flags, when the kernel sends them
  snap->addrs.push_back(a);
  return MNL_CB_OK;
}

bool dump_one(mnl_socket* nl, uint16_t type, mnl_cb_t cb, KernelSnapshot* out, std::string* err) {
  std::vector<char> buf(std::max<size_t>(MNL_SOCKET_BUFFER_SIZE, 32768));
  nlmsghdr* nlh = mnl_nlmsg_put_header(buf.data());
  nlh->nlmsg_type = type;
  nlh->nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP;
  const uint32_t seq = uint32_t(time(nullptr)) ^ type;
  nlh->nlmsg_seq = seq;
  if (type == RTM_GETLINK) {
    auto* ifm = static_cast<ifinfomsg*>(mnl_nlmsg_put_extra_header(nlh, sizeof(ifinfomsg)));
    ifm->ifi_family = AF_UNSPEC;
  } else {
    auto* ifa = static_cast<ifaddrmsg*>(mnl_nlmsg_put_extra_header(nlh, sizeof(ifaddrmsg)));
    ifa->ifa_family = AF_INET;
  }
  if (mnl_socket_sendto(nl, nlh, nlh->nlmsg_len) < 0) {
    *err = std::string("netlink send: ") + std::strerror(errno);
    return false;
  }
  const unsigned portid = mnl_socket_get_portid(nl);
  while (true) {
    const ssize_t n = mnl_socket_recvfrom(nl, buf.data(), buf.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      *err = std::string("netlink receive: ") + std::strerror(errno);
      return false;
    }
    const int rc = mnl_cb_run(buf.data(), size_t(n), seq, portid, cb, out);
    if (rc == MNL_CB_STOP) return true;  // NLMSG_DONE
    if (rc < 0) {
      *err = std::string("netlink dump: ") + std::strerror(errno);
      return false;
    }
  }
}

}  // namespace

KernelWatcher::~KernelWatcher() {
  if (events_) mnl_socket_close(events_);
}

bool KernelWatcher::open(std::string* err) {
  mnl_socket* nl = mnl_socket_open2(NETLINK_ROUTE, SOCK_NONBLOCK | SOCK_CLOEXEC);
  if (nl == nullptr) {
    *err = std::string("netlink socket: ") + std::strerror(errno);
    return false;
  }
  if (mnl_socket_bind(nl, RTMGRP_LINK | RTMGRP_IPV4_IFADDR, MNL_SOCKET_AUTOPID) < 0) {
    *err = std::string("netlink bind: ") + std::strerror(errno);
    mnl_socket_close(nl);
    return false;
  }
  if (events_) mnl_socket_close(events_);
  events_ = nl;
  return true;
}

bool KernelWatcher::drain() {
  if (events_ == nullptr) return false;
  char buf[8192];
  bool any = false;
  while (true) {
    const ssize_t n = mnl_socket_recvfrom(events_, buf, sizeof(buf));
    if (n > 0) {
      any = true;
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    // ENOBUFS: the kernel dropped events; only a dump can tell what changed.
    if (n < 0 && errno == ENOBUFS) {
      any = true;
      continue;
    }
    return any;  // EAGAIN, or an error that a dump will report
  }
}

namespace {

bool dump_once(KernelSnapshot* out, std::string* err) {
  mnl_socket* nl = mnl_socket_open2(NETLINK_ROUTE, SOCK_CLOEXEC);
  if (nl == nullptr) {
    *err = std::string("netlink socket: ") + std::strerror(errno);
    return false;
  }
  timeval tv{1, 0};
  setsockopt(mnl_socket_get_fd(nl), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  KernelSnapshot snap;
  bool ok = mnl_socket_bind(nl, 0, MNL_SOCKET_AUTOPID) >= 0;
  if (!ok) *err = std::string("netlink bind: ") + std::strerror(errno);
  ok = ok && dump_one(nl, RTM_GETLINK, link_cb, &snap, err) && dump_one(nl, RTM_GETADDR, addr_cb, &snap, err);
  mnl_socket_close(nl);
  if (ok) *out = std::move(snap);
  return ok;
}

}  // namespace

bool KernelWatcher::dump(KernelSnapshot* out, std::string* err) {
  // A dump that a change interrupted (NLM_F_DUMP_INTR, which libmnl reports as EINTR) may be
  // inconsistent: take it again.
  for (int attempt = 0;; ++attempt) {
    errno = 0;
    if (dump_once(out, err)) return true;
    if (errno != EINTR || attempt == 2) return false;
  }
}

}  // namespace sluice::discovery
