#include "dataplane/dataplane.h"

#include <rte_cycles.h>
#include <rte_eal.h>
#include <rte_errno.h>
#include <rte_ethdev.h>
#include <rte_launch.h>
#include <rte_lcore.h>

#include <net/if.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>

#include "dataplane/mbuf_meta.h"
#include "dataplane/worker.h"

namespace sluice::dp {

RouteTable::~RouteTable() {
  if (lpm != nullptr) rte_lpm_free(lpm);
}

namespace {

bool has_arg(const std::vector<std::string>& args, std::initializer_list<const char*> names) {
  for (const auto& a : args)
    for (const char* n : names)
      if (a == n || a.rfind(std::string(n) + "=", 0) == 0) return true;
  return false;
}

// "net_af_packet0,iface=x" -> "net_af_packet0"; "0000:03:00.0" stays as it is.
std::string device_name(const std::string& devargs) { return devargs.substr(0, devargs.find(',')); }

bool is_vdev(const std::string& devargs) {
  const std::string n = device_name(devargs);
  return n.rfind("net_", 0) == 0 || n.rfind("eth_", 0) == 0;
}

// The value of `key=` in a devargs string ("net_af_packet0,iface=x,framesz=4096"), or 0.
unsigned devarg_uint(const std::string& devargs, const std::string& key) {
  const size_t at = devargs.find(',' + key + '=');
  if (at == std::string::npos) return 0;
  return unsigned(std::strtoul(devargs.c_str() + at + key.size() + 2, nullptr, 10));
}

// The value of `key=` in a devargs string, up to the next comma ("" when absent).
std::string devarg_str(const std::string& devargs, const std::string& key) {
  const size_t at = devargs.find(',' + key + '=');
  if (at == std::string::npos) return "";
  const size_t from = at + key.size() + 2;
  return devargs.substr(from, devargs.find(',', from) - from);
}

bool is_af_packet(const std::string& devargs) {
  const std::string n = device_name(devargs);
  return n.rfind("net_af_packet", 0) == 0 || n.rfind("eth_af_packet", 0) == 0;
}

// The MTU the kernel has for an interface, or 0.
unsigned kernel_mtu(const std::string& ifname) {
  if (ifname.empty() || ifname.size() >= IFNAMSIZ) return 0;
  const int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return 0;
  ifreq ifr{};
  memcpy(ifr.ifr_name, ifname.c_str(), ifname.size() + 1);
  const int rc = ioctl(fd, SIOCGIFMTU, &ifr);
  close(fd);
  return rc == 0 && ifr.ifr_mtu > 0 ? unsigned(ifr.ifr_mtu) : 0;
}

// The CPUs this process may run on, in order (empty if unknown).
std::vector<unsigned> allowed_cpus() {
  std::vector<unsigned> cpus;
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof set, &set) != 0) return cpus;
  for (unsigned c = 0; c < CPU_SETSIZE; ++c)
    if (CPU_ISSET(c, &set)) cpus.push_back(c);
  return cpus;
}

int worker_main(void* arg) { return static_cast<Worker*>(arg)->run(); }

std::string rte_err() { return rte_strerror(rte_errno); }

}  // namespace

std::vector<std::string> eal_argv(const Settings& s) {
  std::vector<std::string> a{"sluiced"};
  a.insert(a.end(), s.eal_args.begin(), s.eal_args.end());
  // The control thread is the main lcore; one lcore per worker after it, each on its own CPU
  // of those the process may use. With fewer CPUs than lcores (a small VM, a container's
  // cpuset), lcores share CPUs round-robin (--lcores 0@0,1@1,2@0): it runs, slower, and
  // dataplane.idle_sleep_us keeps idle workers from starving the others.
  if (!has_arg(a, {"-l", "-c", "--lcores"})) {
    const std::vector<unsigned> cpus = allowed_cpus();
    bool identity = cpus.size() > s.workers;
    for (unsigned i = 0; identity && i <= s.workers; ++i) identity = cpus[i] == i;
    if (cpus.empty() || identity) {
      a.push_back("-l");
      a.push_back(s.workers > 0 ? "0-" + std::to_string(s.workers) : "0");
    } else {
      std::string map;
      for (unsigned i = 0; i <= s.workers; ++i)
        map += (i ? "," : "") + std::to_string(i) + "@" + std::to_string(cpus[i % cpus.size()]);
      a.push_back("--lcores");
      a.push_back(map);
    }
  }
  // Without a file prefix several gateways (and tests) on one host would share DPDK's runtime
  // directory. In-memory mode keeps each process to itself; it needs hugepages, so without
  // them a per-process prefix and no shared config do the same.
  if (!has_arg(a, {"--in-memory", "--file-prefix"})) {
    if (has_arg(a, {"--no-huge"})) {
      a.push_back("--file-prefix=sluice-" + std::to_string(getpid()));
      if (!has_arg(a, {"--no-shconf"})) a.push_back("--no-shconf");
    } else {
      a.push_back("--in-memory");
    }
  }
  for (const auto& p : s.ports) {
    a.push_back(is_vdev(p.device) ? "--vdev" : "-a");
    a.push_back(p.device);
  }
  return a;
}

bool eal_init(const Settings& s, std::string* err) {
  static bool ready = false;
  if (ready) return true;
  std::vector<std::string> args = eal_argv(s);
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  if (rte_eal_init(int(args.size()), argv.data()) < 0) {
    *err = "EAL initialisation failed: " + rte_err();
    return false;
  }
  ready = true;
  return true;
}

Dataplane::Dataplane() = default;

Dataplane::~Dataplane() {
  stop();
  if (pool == nullptr) return;  // init never got far
  // Every worker is off-line: run all deferred frees, then release ports and memory.
  rcu.synchronize();
  delete routes.exchange(nullptr);
  NeighTable::Io io;
  io.drop = [](rte_mbuf* m, bool) { rte_pktmbuf_free(m); };
  neigh.flush(io);
  for (auto& p : ports) {
    rte_eth_dev_stop(p.port_id);
    rte_eth_dev_close(p.port_id);
  }
  auto drain = [](rte_ring* r) {
    if (r == nullptr) return;
    void* m;
    while (rte_ring_dequeue(r, &m) == 0) rte_pktmbuf_free(static_cast<rte_mbuf*>(m));
    rte_ring_free(r);
  };
  drain(to_cp_packets);
  for (auto* r : handoff) drain(r);
  if (to_cp_events != nullptr) rte_ring_free(to_cp_events);
  rte_mempool_free(pool);
}

bool Dataplane::init(const Settings& s, std::string* err) {
  settings = s;
  if (s.workers == 0 || s.workers >= RTE_MAX_LCORE) {
    *err = "dataplane.workers must be between 1 and " + std::to_string(RTE_MAX_LCORE - 1);
    return false;
  }
  if (s.ports.empty() || s.ports.size() > kMaxPorts) {
    *err = "dataplane.ports: between 1 and " + std::to_string(kMaxPorts) + " ports";
    return false;
  }
  if (s.burst == 0 || s.burst > kMaxBurst) {
    *err = "dataplane.burst_size must be between 1 and " + std::to_string(kMaxBurst);
    return false;
  }

  if (!eal_init(s, err)) return false;
  tsc_hz = rte_get_tsc_hz();
  if (rte_lcore_count() < s.workers + 1) {
    *err = "EAL has " + std::to_string(rte_lcore_count()) + " lcores; " + std::to_string(s.workers) +
           " workers need " + std::to_string(s.workers + 1) + " (-l in dataplane.eal_args)";
    return false;
  }

  const unsigned nports = unsigned(s.ports.size());
  uint32_t nb_mbufs = s.mbuf_pool_size;
  if (nb_mbufs == 0) {
    // Every RX and TX descriptor can hold one, plus per-lcore caches, bursts in flight,
    // the inter-thread rings' working set and packets held for ARP.
    nb_mbufs = nports * s.workers * (uint32_t(s.rx_queue_size) + s.tx_queue_size) +
               (s.workers + 1) * (256 + 2 * kMaxBurst) + 4096;
  }
  // net_af_packet copies each frame into one mbuf and refuses mbufs smaller than its frames
  // (framesz=, default 2048). Larger frames matter: the kernel reassembles IP fragments for
  // AF_PACKET fanout groups, so a LAN host's 4000-byte datagram arrives whole.
  uint32_t room = s.mbuf_data_room != 0 ? s.mbuf_data_room : RTE_MBUF_DEFAULT_DATAROOM;
  for (const auto& p : s.ports)
    if (is_af_packet(p.device)) room = std::max<uint32_t>(room, devarg_uint(p.device, "framesz"));
  if (room + RTE_PKTMBUF_HEADROOM > UINT16_MAX) {
    *err = "mbufs of " + std::to_string(room) + " bytes are too large (framesz= in a port's devargs)";
    return false;
  }
  pool = rte_pktmbuf_pool_create("sluice_mbufs", nb_mbufs, 256, kMetaPrivSize, uint16_t(room + RTE_PKTMBUF_HEADROOM),
                                 int(rte_socket_id()));
  if (pool == nullptr) {
    *err = "cannot create a pool of " + std::to_string(nb_mbufs) + " mbufs: " + rte_err() +
           " (dataplane.mbuf_pool_size, or more memory with -m in eal_args)";
    return false;
  }

  for (const auto& ps : s.ports) {
    Port p;
    p.cfg = ps;
    if (ps.role == PortRole::underlay) underlay = int(ports.size());
    ports.push_back(p);
  }
  if (underlay < 0) {
    *err = "dataplane.ports: no port has role underlay";
    return false;
  }
  for (auto& p : ports)
    if (!init_port(p, err)) return false;

  to_cp_packets = rte_ring_create("sluice_to_cp", 4096, int(rte_socket_id()), RING_F_SC_DEQ);
  to_cp_events = rte_ring_create_elem("sluice_cp_ev", sizeof(CpEvent), 4096, int(rte_socket_id()), RING_F_SC_DEQ);
  if (to_cp_packets == nullptr || to_cp_events == nullptr) {
    *err = "cannot create control rings: " + rte_err();
    return false;
  }
  for (unsigned w = 0; w < s.workers; ++w) {
    std::string name = "sluice_handoff" + std::to_string(w);
    rte_ring* r = rte_ring_create(name.c_str(), 4096, int(rte_socket_id()), RING_F_SC_DEQ);
    if (r == nullptr) {
      *err = "cannot create handoff ring: " + rte_err();
      return false;
    }
    handoff.push_back(r);
  }

  if (!rcu.init(RTE_MAX_LCORE)) {
    *err = "cannot create the RCU variable";
    return false;
  }
  if (!peers.init(s.max_peers, &rcu, "sluice_peers")) {
    *err = "cannot create peer tables for " + std::to_string(s.max_peers) + " peers: " + rte_err();
    return false;
  }
  if (!neigh.init(s.neigh, tsc_hz, &rcu, "sluice_neigh")) {
    *err = "cannot create the neighbour table: " + rte_err();
    return false;
  }
  auto rt = build_routes(err);
  if (rt == nullptr) return false;
  publish_routes(std::move(rt));

  unsigned lcore = rte_get_next_lcore(-1, 1, 0);
  for (unsigned w = 0; w < s.workers; ++w) {
    workers.push_back(std::make_unique<Worker>(*this, w, lcore));
    if (!workers.back()->init(err)) return false;
    lcore = rte_get_next_lcore(lcore, 1, 0);
  }
  return true;
}

bool Dataplane::init_port(Port& p, std::string* err) {
  const std::string name = device_name(p.cfg.device);
  const std::string what = "port " + p.cfg.name + " (" + p.cfg.device + "): ";
  if (rte_eth_dev_get_port_by_name(name.c_str(), &p.port_id) != 0) {
    *err = what + "no such DPDK device";
    return false;
  }
  rte_eth_dev_info info;
  if (rte_eth_dev_info_get(p.port_id, &info) != 0) {
    *err = what + "cannot read device info";
    return false;
  }
  const uint16_t nq = uint16_t(settings.workers);
  if (info.max_rx_queues < nq || info.max_tx_queues < nq) {
    *err = what + "supports " + std::to_string(info.max_rx_queues) + " queue pairs but " +
           std::to_string(nq) + " workers need one each (net_af_packet: add qpairs=" + std::to_string(nq) + ")";
    return false;
  }
  rte_eth_conf conf{};
  if (nq > 1) {
    // Spread flows over workers; a peer's tunnel packets all hash to one queue.
    conf.rxmode.mq_mode = RTE_ETH_MQ_RX_RSS;
    conf.rx_adv_conf.rss_conf.rss_hf = (RTE_ETH_RSS_IP | RTE_ETH_RSS_UDP | RTE_ETH_RSS_TCP) & info.flow_type_rss_offloads;
  }
  if (int rc = rte_eth_dev_configure(p.port_id, nq, nq, &conf); rc != 0) {
    *err = what + "configure failed: " + rte_strerror(-rc);
    return false;
  }
  uint16_t nb_rxd = settings.rx_queue_size, nb_txd = settings.tx_queue_size;
  rte_eth_dev_adjust_nb_rx_tx_desc(p.port_id, &nb_rxd, &nb_txd);
  const int socket = rte_eth_dev_socket_id(p.port_id);
  for (uint16_t q = 0; q < nq; ++q) {
    if (int rc = rte_eth_rx_queue_setup(p.port_id, q, nb_rxd, socket, nullptr, pool); rc != 0) {
      *err = what + "RX queue setup failed: " + rte_strerror(-rc);
      return false;
    }
    if (int rc = rte_eth_tx_queue_setup(p.port_id, q, nb_txd, socket, nullptr); rc != 0) {
      *err = what + "TX queue setup failed: " + rte_strerror(-rc);
      return false;
    }
  }
  if (int rc = rte_eth_dev_start(p.port_id); rc != 0) {
    *err = what + "start failed: " + rte_strerror(-rc);
    return false;
  }
  rte_ether_addr mac;
  rte_eth_macaddr_get(p.port_id, &mac);
  memcpy(p.mac.b, mac.addr_bytes, 6);
  uint16_t mtu = 1500;
  if (rte_eth_dev_get_mtu(p.port_id, &mtu) == 0 && mtu >= 576) p.l3_mtu = mtu;
  if (is_af_packet(p.cfg.device)) {
    // net_af_packet reports DPDK's default whatever its interface has: ask the kernel (a LAN
    // with a smaller MTU gets frag-needed and fragments, not silent loss), within what one ring
    // frame holds (framesz= less the TPACKET header and Ethernet).
    const unsigned frame = devarg_uint(p.cfg.device, "framesz");
    const unsigned frame_l3 = (frame != 0 ? frame : 2048) - 32 - RTE_ETHER_HDR_LEN;
    const unsigned kmtu = kernel_mtu(devarg_str(p.cfg.device, "iface"));
    if (kmtu >= 576) p.l3_mtu = uint16_t(std::min(kmtu, 65535u));
    p.l3_mtu = uint16_t(std::min<unsigned>(p.l3_mtu, frame_l3));
  }
  return true;
}

std::unique_ptr<RouteTable> Dataplane::build_routes(std::string* err) const {
  auto t = std::make_unique<RouteTable>();
  static unsigned generation = 0;
  const std::string name = "sluice_rt" + std::to_string(generation++);
  rte_lpm_config cfg{};
  cfg.max_rules = 1024;
  cfg.number_tbl8s = 256;
  t->lpm = rte_lpm_create(name.c_str(), int(rte_socket_id()), &cfg);
  if (t->lpm == nullptr) {
    *err = "cannot create the route table: " + rte_err();
    return nullptr;
  }
  for (uint16_t i = 0; i < ports.size(); ++i) {
    const PortSettings& c = ports[i].cfg;
    const uint32_t mask = c.prefix_len == 0 ? 0 : ~0u << (32 - c.prefix_len);
    t->hops.push_back({i, 0});
    rte_lpm_add(t->lpm, c.address & mask, c.prefix_len, uint32_t(t->hops.size() - 1));
    if (c.gateway != 0 && c.role == PortRole::underlay) {
      t->hops.push_back({i, c.gateway});
      rte_lpm_add(t->lpm, 0, 0, uint32_t(t->hops.size() - 1));
    }
  }
  return t;
}

void Dataplane::publish_routes(std::unique_ptr<RouteTable> t) {
  RouteTable* old = routes.exchange(t.release(), std::memory_order_acq_rel);
  if (old != nullptr) rcu.retire([old] { delete old; });
}

bool Dataplane::hand_to_worker(unsigned w, rte_mbuf* m) {
  if (rte_ring_mp_enqueue(handoff[w], m) == 0) return true;
  rte_pktmbuf_free(m);
  return false;
}

bool Dataplane::start(std::string* err) {
  running.store(true);
  for (auto& w : workers) {
    if (rte_eal_remote_launch(worker_main, w.get(), w->lcore_id) != 0) {
      *err = "cannot launch worker on lcore " + std::to_string(w->lcore_id);
      stop();
      return false;
    }
  }
  started_ = true;
  return true;
}

void Dataplane::stop() {
  if (!started_) return;
  running.store(false);
  rte_eal_mp_wait_lcore();
  started_ = false;
}

}  // namespace sluice::dp
