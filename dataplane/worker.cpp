#include "dataplane/worker.h"

#include <rte_cycles.h>
#include <rte_ethdev.h>

#include "dataplane/dataplane.h"
#include "dataplane/mbuf_meta.h"

namespace sluice::dp {

Worker::Worker(Dataplane& d, unsigned idx, unsigned lcore)
    : dp(d), index(idx), lcore_id(lcore), aead(d.settings.aead) {}

bool Worker::init(std::string* err) {
  ConnTable::Config c;
  c.capacity = dp.settings.conn_capacity;
  c.worker = index;
  c.n_workers = dp.settings.workers;
  c.ticks_per_sec = dp.tsc_hz;
  if (!ct.init(c)) {
    *err = "cannot allocate a connection table of " + std::to_string(c.capacity) + " entries";
    return false;
  }
  // Fragments of one datagram arrive within milliseconds; 2 s bounds what a lost one pins.
  if (!frags_out.init(4096, 2 * dp.tsc_hz) || !frags_in.init(4096, 2 * dp.tsc_hz) ||
      !frags_steer.init(4096, 2 * dp.tsc_hz)) {
    *err = "cannot allocate fragment trackers";
    return false;
  }
  return true;
}

void Worker::to_control(rte_mbuf* m, Drop if_full) {
  if (rte_ring_mp_enqueue(dp.to_cp_packets, m) != 0) drop(m, if_full);
}

void Worker::event(const CpEvent& e) {
  // Events are hints (learn a neighbour, start a handshake): losing one under overload only
  // delays something the control thread's timers will redo.
  CpEvent copy = e;  // the ring API takes a non-const pointer
  if (rte_ring_mp_enqueue_elem(dp.to_cp_events, &copy, sizeof copy) != 0)
    drops[static_cast<unsigned>(Drop::control_queue_full)].add();
}

bool Worker::hand_off(unsigned owner, rte_mbuf* m) {
  if (rte_ring_mp_enqueue(dp.handoff[owner], m) != 0) {
    drop(m, Drop::handoff_queue_full);
    return false;
  }
  handed_off.add();
  return true;
}

void Worker::tx_stage(uint16_t port, rte_mbuf* m) {
  TxBuffer& b = tx_[port];
  b.pkts[b.n++] = m;
  if (b.n == kMaxBurst) tx_flush();
}

void Worker::tx_flush() {
  for (uint16_t p = 0; p < dp.ports.size(); ++p) {
    TxBuffer& b = tx_[p];
    if (b.n == 0) continue;
    uint16_t sent = rte_eth_tx_burst(dp.ports[p].port_id, uint16_t(index), b.pkts, b.n);
    tx_packets.add(sent);
    for (uint16_t i = sent; i < b.n; ++i) drop(b.pkts[i], Drop::tx_full);
    b.n = 0;
  }
}

unsigned Worker::poll_once() {
  now_tsc = rte_rdtsc();
  unsigned handled = 0;
  rte_mbuf* pkts[kMaxBurst];
  const uint16_t burst = dp.settings.burst;

  for (uint16_t p = 0; p < dp.ports.size(); ++p) {
    uint16_t n = rte_eth_rx_burst(dp.ports[p].port_id, uint16_t(index), pkts, burst);
    if (n == 0) continue;
    rx_packets.add(n);
    handled += n;
    eth_input(p, pkts, n);
  }

  // Packets other threads handed to us: handshake replies and ARP from the control thread,
  // tunnel packets of peers we own that arrived on another worker.
  unsigned n = rte_ring_sc_dequeue_burst(dp.handoff[index], reinterpret_cast<void**>(pkts), burst, nullptr);
  if (n > 0) {
    handled += n;
    handoffs.add(n);
    for (unsigned i = 0; i < n; ++i) {
      rte_mbuf* m = pkts[i];
      PktMeta* md = meta(m);
      switch (md->stage) {
        case Stage::ip_output: ip_output(&m, 1); break;
        case Stage::wg_input: wg_input(&m, 1); break;
        case Stage::wg_output: wg_output(md->peer, &m, 1); break;
        case Stage::tx: tx_stage(md->port, m); break;
        case Stage::nat_input: nat_input(&m, 1, true); break;
      }
    }
  }

  tx_flush();

  // Housekeeping with bounded work per iteration: expire connections, answer a snapshot request.
  ct.expire(now_tsc, 128);
  if (snapshot.state.load(std::memory_order_acquire) == ConnSnapshot::requested) ct.serve_snapshot(snapshot, now_tsc);
  return handled;
}

int Worker::run() {
  dp.rcu.register_reader(lcore_id);
  uint64_t last = rte_rdtsc();
  const unsigned sleep_us = dp.settings.idle_sleep_us;
  while (dp.running.load(std::memory_order_relaxed)) {
    unsigned n = poll_once();
    dp.rcu.quiescent(lcore_id);
    uint64_t t = rte_rdtsc();
    if (n > 0) {
      busy_cycles.add(t - last);
      idle_loops_ = 0;
    } else {
      idle_cycles.add(t - last);
      // Optional back-off for small shared machines; an appliance busy-polls (idle_sleep_us 0).
      if (sleep_us > 0 && ++idle_loops_ > 100) rte_delay_us_sleep(sleep_us);
    }
    last = t;
  }
  tx_flush();
  dp.rcu.unregister_reader(lcore_id);
  return 0;
}

}  // namespace sluice::dp
