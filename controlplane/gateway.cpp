#include "controlplane/gateway.h"

#include <rte_arp.h>
#include <rte_cycles.h>
#include <rte_ethdev.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <thread>

#include <unistd.h>

#include "controlplane/config/keys.h"
#include "controlplane/gateway_util.h"
#include "controlplane/log.h"
#include "dataplane/mbuf_meta.h"
#include "dataplane/packet.h"
#include "dataplane/worker.h"

namespace sluice::cp {

using nlohmann::json;
using config::to_string;

std::atomic<bool> Gateway::stop_{false};
std::atomic<bool> Gateway::reload_{false};


dp::Settings dataplane_settings(const config::Config& c) {
  dp::Settings s;
  s.eal_args = c.dataplane.eal_args;
  s.workers = c.dataplane.workers;
  for (const auto& p : c.dataplane.ports) {
    dp::PortSettings ps;
    ps.name = p.name;
    ps.role = p.role == config::PortRole::underlay ? dp::PortRole::underlay : dp::PortRole::lan;
    ps.device = p.device;
    ps.address = p.address.addr;
    ps.prefix_len = p.address.len;
    ps.gateway = p.gateway.value_or(0);
    s.ports.push_back(ps);
  }
  s.virtual_address = c.gateway.virtual_address;
  s.listen_port = c.gateway.listen_port;
  s.mtu = c.gateway.mtu;
  s.rx_queue_size = c.dataplane.rx_queue_size;
  s.tx_queue_size = c.dataplane.tx_queue_size;
  s.burst = c.dataplane.burst_size;
  s.mbuf_pool_size = c.dataplane.mbuf_pool_size;
  s.idle_sleep_us = c.dataplane.idle_sleep_us;
  switch (c.dataplane.aead_backend) {
    case config::AeadBackend::automatic: s.aead = crypto::default_backend(); break;
    case config::AeadBackend::openssl: s.aead = crypto::AeadBackend::openssl; break;
    case config::AeadBackend::sodium: s.aead = crypto::AeadBackend::sodium; break;
  }
  // Room for peers added at run time (sluicectl peers add, reloads) and freed slots in quarantine.
  s.max_peers = std::max<uint32_t>(256, uint32_t(c.peers.size()) * 2);
  s.neigh.timeout_s = c.dataplane.neighbor_timeout;
  s.neigh.queue_per_entry = c.dataplane.neighbor_queue;
  return s;
}

Gateway::Gateway(config::Config cfg, std::string config_path)
    : cfg_(std::move(cfg)), config_path_(std::move(config_path)) {}

Gateway::~Gateway() {
  wait_policy_job();  // a compile cannot be interrupted: let it end, drop its result
  dp_.stop();
  // Workers are stopped: nobody reads the policy any more.
  delete dp_.policy.exchange(nullptr);
  if (reaper_) reaper_->close();  // before EAL goes: what is still retired is freed here
  for (auto& p : peers_) {
    if (p) drop_staged(*p);
  }
  ctl_.close();
  if (watch_fd_ >= 0) close(watch_fd_);
}

uint64_t Gateway::now_ns() {
  return uint64_t(std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch()).count());
}

void Gateway::request_stop() { stop_.store(true); }
void Gateway::request_reload() { reload_.store(true); }

bool Gateway::start(std::string* err) {
  started_ns_ = now_ns();
  if (!dp_.init(dataplane_settings(cfg_), err)) return false;
  reaper_ = std::make_shared<PolicyReaper>();  // after EAL init: it inherits the main lcore's CPU
  neigh_io_ = make_neigh_io();
  if (!publish_policy(cfg_, 1, err)) {
    *err = "policies: " + *err;
    return false;
  }
  noise_ = std::make_unique<wg::Noise>(cfg_.gateway.private_key);
  // Slot i = cfg_.peers[i], as the policy just published assumes.
  for (size_t i = 0; i < cfg_.peers.size(); ++i) add_peer(cfg_.peers[i], uint32_t(i));
  watch_config();

  if (!ctl_.listen(cfg_.control.socket, err)) {
    *err = "control socket " + cfg_.control.socket + ": " + *err;
    return false;
  }
  register_handlers();
  if (!start_metrics(err)) return false;
  if (!dp_.start(err)) return false;
  start_discovery();

  for (const auto& port : dp_.ports)
    log::info("port_up", {{"port", port.cfg.name},
                          {"device", port.cfg.device},
                          {"address", to_string(config::Prefix{port.cfg.address, port.cfg.prefix_len})},
                          {"mac", mac_text(port.mac)}});
  log::info("gateway_started", {{"name", cfg_.gateway.name},
                                 {"public_key", config::encode_key(cfg_.gateway.public_key)},
                                 {"listen_port", std::to_string(cfg_.gateway.listen_port)},
                                 {"virtual_address", to_string(cfg_.gateway.virtual_address)},
                                 {"workers", std::to_string(dp_.settings.workers)},
                                 {"aead", crypto::backend_name(dp_.settings.aead)},
                                 {"peers", std::to_string(peers_.size())}});
  started_ = true;
  return true;
}

// --- The loop -------------------------------------------------------------------------------

void Gateway::run() {
  uint64_t next_tick = 0;
  while (!stop_.load(std::memory_order_relaxed)) {
    const uint64_t now = now_ns();
    if (reload_.exchange(false)) {
      std::vector<std::string> errors;
      begin_reload(&errors, 0);  // SIGHUP: errors and the outcome are logged
    }
    poll_reload();
    unsigned work = drain_events(now) + drain_packets(now);
    metrics_tick(now);
    if (now >= next_tick) {
      tick_peers(now);
      refresh_trust();
      dp_.neigh.tick(rte_rdtsc(), neigh_io_);
      dp_.rcu.reclaim();
      poll_discovery(now);
      poll_config_watch(now);
      next_tick = now + kTickNs;
    }
    // Sleep in poll(2) on the control socket only when there was nothing to do; the rings are
    // polled, so keep the wait short.
    ctl_.poll(work > 0 ? 0 : 1);
  }
  log::info("gateway_stopping");
  wait_policy_job();
  dp_.stop();
}

unsigned Gateway::drain_packets(uint64_t now) {
  rte_mbuf* pkts[kDrainBatch];
  unsigned n = rte_ring_sc_dequeue_burst(dp_.to_cp_packets, reinterpret_cast<void**>(pkts), kDrainBatch, nullptr);
  const uint64_t tsc = rte_rdtsc();
  for (unsigned i = 0; i < n; ++i) {
    rte_mbuf* m = pkts[i];
    dp::PktMeta* md = dp::meta(m);
    switch (md->cp_kind) {
      case dp::CpKind::handshake: on_handshake(m, now); break;
      case dp::CpKind::neigh_wait: dp_.neigh.resolve(md->port, md->nexthop, m, tsc, neigh_io_); break;
      case dp::CpKind::peer_wait: on_peer_wait(m, now); break;
    }
  }
  return n;
}

unsigned Gateway::drain_events(uint64_t now) {
  dp::CpEvent ev[kDrainBatch];
  unsigned n = rte_ring_sc_dequeue_burst_elem(dp_.to_cp_events, ev, sizeof(dp::CpEvent), kDrainBatch, nullptr);
  const uint64_t tsc = rte_rdtsc();
  for (unsigned i = 0; i < n; ++i) {
    const dp::CpEvent& e = ev[i];
    switch (e.type) {
      case dp::CpEvent::neigh_learn:
      case dp::CpEvent::neigh_learn_create: {
        dp::MacAddr mac;
        memcpy(mac.b, e.mac, 6);
        dp_.neigh.learn(e.port, e.ip, mac, e.type == dp::CpEvent::neigh_learn_create, tsc, neigh_io_);
        break;
      }
      case dp::CpEvent::want_handshake:
        if (e.peer < peers_.size() && peers_[e.peer]) peers_[e.peer]->timers.request_handshake(now);
        break;
      case dp::CpEvent::keypair_confirmed:
        if (e.peer < peers_.size() && peers_[e.peer]) confirm_keypair(*peers_[e.peer], e.ip, now);
        break;
    }
  }
  return n;
}

// --- Handshakes -----------------------------------------------------------------------------

bool Gateway::under_load(uint64_t now) {
  // As wireguard-go: under load while the handshake queue backs up, or (our addition) while
  // handshake messages arrive faster than gateway.under_load_threshold per second; it stays
  // on for a second after the condition ends.
  if (now - load_window_start_ >= wg::kNsPerSecond) {
    load_window_start_ = now;
    load_window_count_ = 0;
  }
  ++load_window_count_;
  if (load_window_count_ > cfg_.gateway.under_load_threshold || rte_ring_count(dp_.to_cp_packets) >= 4096 / 8)
    under_load_until_ = now + wg::kNsPerSecond;
  return now < under_load_until_;
}

void Gateway::on_handshake(rte_mbuf* m, uint64_t now) {
  const dp::PktMeta* md = dp::meta(m);
  const wg::Endpoint src{md->src_addr, md->src_port};
  const uint64_t src_ep = dp::pack_endpoint(md->src_addr, md->src_port);
  const wg::Bytes msg(dp::at<uint8_t>(m), m->data_len);
  const bool load = under_load(now);
  const auto type = wg::message_type(msg.data());
  wg::MessageCookieReply cookie{};
  wg::Outcome rc = wg::Outcome::malformed;
  uint32_t peer_id = UINT32_MAX;

  if (type == wg::MessageType::initiation) {
    rc = noise_->consume_initiation(msg, src, load, now, peer_id, cookie);
    if (rc == wg::Outcome::ok) {
      Peer& p = *peers_[peer_id];
      wg::MessageResponse resp;
      wg::SessionKeys keys;
      if (noise_->create_response(peer_id, now, resp, keys) == wg::Outcome::ok) {
        dp_.peers.slot(p.id).endpoint.store(src_ep, std::memory_order_relaxed);
        install_keys(p, keys);
        wg::secure_zero(&keys, sizeof keys);
        const unsigned owner = dp_.peers.slot(p.id).owner.load(std::memory_order_relaxed);
        if (send_udp(src_ep, &resp, sizeof resp, owner)) {
          ++response_sent_;
          p.timers.authenticated_packet_sent(now);
        }
        p.timers.authenticated_packet_received(now);
        p.timers.session_derived(now);
        ++initiation_ok_;
        log::info("handshake_responded", {{"peer", p.cfg.name}, {"endpoint", endpoint_text(src_ep)}});
      }
    }
  } else if (type == wg::MessageType::response) {
    wg::SessionKeys keys;
    rc = noise_->consume_response(msg, src, load, now, keys, cookie);
    if (rc == wg::Outcome::ok) {
      Peer& p = *peers_[keys.peer_id];
      dp_.peers.slot(p.id).endpoint.store(src_ep, std::memory_order_relaxed);
      install_keys(p, keys);
      wg::secure_zero(&keys, sizeof keys);
      p.timers.authenticated_packet_received(now);
      p.timers.session_derived(now);
      p.timers.handshake_complete(now);
      p.last_handshake_ns = now;
      ++p.handshakes;
      ++response_ok_;
      log::info("handshake_complete", {{"peer", p.cfg.name}, {"role", "initiator"}, {"endpoint", endpoint_text(src_ep)}});
      // Confirm the session to the responder at once: staged data, or else a keepalive.
      if (p.staged.empty())
        send_keepalive(p);
      else
        flush_staged(p);
    }
  } else if (type == wg::MessageType::cookie_reply) {
    rc = noise_->consume_cookie_reply(msg, now, peer_id);
    if (rc == wg::Outcome::ok) ++cookie_reply_ok_;
  }

  if (rc == wg::Outcome::cookie_needed) {
    if (send_udp(src_ep, &cookie, sizeof cookie, 0)) ++cookie_reply_sent_;
  }
  ++outcomes_[size_t(rc)];
  if (rc != wg::Outcome::ok && rc != wg::Outcome::cookie_needed)
    log::debug("handshake_rejected", {{"reason", std::string(wg::outcome_name(rc))}, {"source", endpoint_text(src_ep)}});
  rte_pktmbuf_free(m);
}

bool Gateway::send_udp(uint64_t ep, const void* payload, size_t len, unsigned worker) {
  if (ep == 0) return false;
  rte_mbuf* m = dp_.alloc();
  if (m == nullptr) {
    ++send_failed_;
    return false;
  }
  void* d = rte_pktmbuf_append(m, uint16_t(len));
  if (d == nullptr) {
    rte_pktmbuf_free(m);
    ++send_failed_;
    return false;
  }
  memcpy(d, payload, len);
  const dp::Port& under = dp_.ports[dp_.underlay];
  dp::push_udp_ip(m, under.cfg.address, dp_.settings.listen_port, dp::endpoint_addr(ep), dp::endpoint_port(ep),
                  uint16_t(len));
  dp::PktMeta* md = dp::meta(m);
  md->stage = dp::Stage::ip_output;
  md->nexthop = 0;
  if (!dp_.hand_to_worker(worker, m)) {
    ++send_failed_;
    return false;
  }
  return true;
}

void Gateway::send_initiation(Peer& p, uint64_t now) {
  const uint64_t ep = dp_.peers.slot(p.id).endpoint.load(std::memory_order_relaxed);
  // Counted as attempted either way, so the retransmission timer keeps its rhythm.
  p.timers.handshake_initiated(now);
  if (ep == 0) return;  // nowhere to send it; the peer has to reach us first
  wg::MessageInitiation init;
  if (noise_->create_initiation(p.id, now, init) != wg::Outcome::ok) return;
  const unsigned owner = dp_.peers.slot(p.id).owner.load(std::memory_order_relaxed);
  if (send_udp(ep, &init, sizeof init, owner)) {
    ++initiation_sent_;
    p.timers.authenticated_packet_sent(now);
    log::debug("handshake_initiated", {{"peer", p.cfg.name}, {"endpoint", endpoint_text(ep)}});
  }
}

void Gateway::send_keepalive(Peer& p) {
  rte_mbuf* m = dp_.alloc();
  if (m == nullptr) return;
  dp::PktMeta* md = dp::meta(m);
  md->stage = dp::Stage::wg_output;
  md->peer = p.id;
  if (dp_.hand_to_worker(dp_.peers.slot(p.id).owner.load(std::memory_order_relaxed), m)) ++keepalive_sent_;
}

void Gateway::install_keys(Peer& p, wg::SessionKeys& keys) {
  dp::Keypair* kp = dp::PeerTable::new_keypair();
  if (kp == nullptr) {
    noise_->release_index(keys.local_index);
    log::error("keypair_alloc_failed", {{"peer", p.cfg.name}});
    return;
  }
  memcpy(kp->send_key, keys.send_key.data(), sizeof kp->send_key);
  memcpy(kp->recv_key, keys.recv_key.data(), sizeof kp->recv_key);
  kp->local_index = keys.local_index;
  kp->remote_index = keys.remote_index;
  kp->peer = p.id;
  kp->initiator = keys.initiator;
  kp->birth_tsc = rte_rdtsc();
  if (!dp_.peers.add_index(kp)) {
    noise_->release_index(keys.local_index);
    dp::PeerTable::delete_keypair(kp);
    log::error("keypair_index_full", {{"peer", p.cfg.name}});
    return;
  }
  dp::PeerSlot& s = dp_.peers.slot(p.id);
  // The rotation of wireguard-go's BeginSymmetricSession, with one pointer store each.
  if (keys.initiator) {
    dp::Keypair* next = s.next.load();
    dp::Keypair* prev = s.previous.load();
    dp::Keypair* cur = s.current.load();
    if (next != nullptr) {
      s.next.store(nullptr, std::memory_order_release);
      s.previous.store(next, std::memory_order_release);
      retire_keypair(cur);
    } else {
      s.previous.store(cur, std::memory_order_release);
    }
    retire_keypair(prev);
    s.current.store(kp, std::memory_order_release);
  } else {
    dp::Keypair* old_next = s.next.exchange(kp, std::memory_order_acq_rel);
    retire_keypair(old_next);
    retire_keypair(s.previous.exchange(nullptr, std::memory_order_acq_rel));
  }
}

void Gateway::confirm_keypair(Peer& p, uint32_t local_index, uint64_t now) {
  dp::PeerSlot& s = dp_.peers.slot(p.id);
  dp::Keypair* next = s.next.load();
  if (next == nullptr || next->local_index != local_index) return;
  dp::Keypair* old_prev = s.previous.exchange(s.current.load(), std::memory_order_acq_rel);
  s.current.store(next, std::memory_order_release);
  s.next.store(nullptr, std::memory_order_release);
  retire_keypair(old_prev);
  p.timers.handshake_complete(now);
  p.last_handshake_ns = now;
  ++p.handshakes;
  log::info("handshake_complete", {{"peer", p.cfg.name}, {"role", "responder"},
                                   {"endpoint", endpoint_text(s.endpoint.load(std::memory_order_relaxed))}});
  flush_staged(p);
}

void Gateway::retire_keypair(dp::Keypair* kp) {
  if (kp == nullptr) return;
  noise_->release_index(kp->local_index);
  dp_.peers.retire_keypair(kp);
}

void Gateway::zero_keys(Peer& p) {
  dp::PeerSlot& s = dp_.peers.slot(p.id);
  retire_keypair(s.next.exchange(nullptr));
  retire_keypair(s.current.exchange(nullptr));
  retire_keypair(s.previous.exchange(nullptr));
  noise_->clear_handshake(p.id);
  log::info("session_expired", {{"peer", p.cfg.name}});
}

bool Gateway::has_sending_keypair(const Peer& p) const {
  const dp::PeerSlot& s = dp_.peers.slot(p.id);
  const dp::Keypair* cur = s.current.load(std::memory_order_acquire);
  if (cur == nullptr) return false;
  return rte_rdtsc() - cur->birth_tsc < uint64_t(wg::kRejectAfterTime) * dp_.tsc_hz;
}

void Gateway::on_peer_wait(rte_mbuf* m, uint64_t now) {
  const uint32_t id = dp::meta(m)->peer;
  if (id >= peers_.size() || !peers_[id]) {
    ++cp_drops_[unsigned(dp::Drop::peer_removed)];
    rte_pktmbuf_free(m);
    return;
  }
  Peer& p = *peers_[id];
  if (has_sending_keypair(p)) {
    // Installed since the worker looked: send it on.
    dp::meta(m)->stage = dp::Stage::wg_output;
    dp_.hand_to_worker(dp_.peers.slot(id).owner.load(std::memory_order_relaxed), m);
    return;
  }
  if (p.staged.size() >= kMaxStagedPackets) {
    rte_pktmbuf_free(p.staged.front());
    p.staged.pop_front();
    ++staged_dropped_;
  }
  p.staged.push_back(m);
  p.timers.request_handshake(now);
}

void Gateway::flush_staged(Peer& p) {
  const unsigned owner = dp_.peers.slot(p.id).owner.load(std::memory_order_relaxed);
  while (!p.staged.empty()) {
    rte_mbuf* m = p.staged.front();
    p.staged.pop_front();
    dp::PktMeta* md = dp::meta(m);
    md->stage = dp::Stage::wg_output;
    md->peer = p.id;
    dp_.hand_to_worker(owner, m);
  }
}

void Gateway::drop_staged(Peer& p) {
  staged_dropped_ += p.staged.size();
  for (auto* m : p.staged) rte_pktmbuf_free(m);
  p.staged.clear();
}

// --- Timers ---------------------------------------------------------------------------------

void Gateway::feed_timer_events(Peer& p, uint64_t now) {
  // Workers count per packet; the timers want events. Turn what changed since the last tick
  // into events, in the order they happened (receive before send when a reply went out).
  const dp::PeerSlot& s = dp_.peers.slot(p.id);
  const uint64_t rx = s.rx_packets.get(), tx = s.tx_packets.get();
  const uint64_t rx_data = s.last_rx_data_tsc.get(), tx_data = s.last_tx_data_tsc.get();
  const bool got = rx != p.seen_rx_packets, sent = tx != p.seen_tx_packets;
  auto on_rx = [&] {
    if (!got) return;
    p.timers.authenticated_packet_received(now);
    if (rx_data != p.seen_rx_data_tsc) p.timers.data_received(now);
  };
  auto on_tx = [&] {
    if (!sent) return;
    p.timers.authenticated_packet_sent(now);
    if (tx_data != p.seen_tx_data_tsc) p.timers.data_sent(now);
  };
  if (s.last_tx_tsc.get() >= s.last_rx_tsc.get()) {
    on_rx();
    on_tx();
  } else {
    on_tx();
    on_rx();
  }
  p.seen_rx_packets = rx;
  p.seen_tx_packets = tx;
  p.seen_rx_data_tsc = rx_data;
  p.seen_tx_data_tsc = tx_data;
}

void Gateway::tick_peers(uint64_t now) {
  for (auto& pp : peers_) {
    if (!pp) continue;
    Peer& p = *pp;
    feed_timer_events(p, now);
    if (now < p.timers.next_deadline()) continue;
    act(p, p.timers.poll(now), now);
  }
}

void Gateway::act(Peer& p, const wg::TimerActions& a, uint64_t now) {
  if (a.zero_keys) {
    zero_keys(p);
    drop_staged(p);
  }
  if (a.handshake_gave_up) {
    drop_staged(p);
    log::info("handshake_gave_up", {{"peer", p.cfg.name}});
  }
  if (a.send_keepalive) {
    if (has_sending_keypair(p))
      send_keepalive(p);
    else
      p.timers.request_handshake(now);
  }
  if (a.send_initiation) send_initiation(p, now);
}

// --- Neighbours -----------------------------------------------------------------------------

dp::NeighTable::Io Gateway::make_neigh_io() {
  dp::NeighTable::Io io;
  io.send_request = [this](uint16_t port, uint32_t ip, const dp::MacAddr* unicast) {
    send_arp_request(port, ip, unicast);
  };
  io.drop = [this](rte_mbuf* m, bool unreachable) {
    ++cp_drops_[unsigned(unreachable ? dp::Drop::neigh_unreachable : dp::Drop::neigh_queue_full)];
    rte_pktmbuf_free(m);
  };
  io.send_held = [this](rte_mbuf* m, const dp::MacAddr& mac) {
    const uint16_t port = dp::meta(m)->port;
    auto* eth = reinterpret_cast<rte_ether_hdr*>(rte_pktmbuf_prepend(m, dp::kEthLen));
    if (eth == nullptr) {
      rte_pktmbuf_free(m);
      return;
    }
    memcpy(eth->dst_addr.addr_bytes, mac.b, 6);
    memcpy(eth->src_addr.addr_bytes, dp_.ports[port].mac.b, 6);
    eth->ether_type = RTE_BE16(RTE_ETHER_TYPE_IPV4);
    dp::meta(m)->stage = dp::Stage::tx;
    dp_.hand_to_worker(0, m);
  };
  return io;
}

void Gateway::send_arp_request(uint16_t port, uint32_t ip, const dp::MacAddr* unicast) {
  rte_mbuf* m = dp_.alloc();
  if (m == nullptr) return;
  auto* eth = reinterpret_cast<rte_ether_hdr*>(rte_pktmbuf_append(m, dp::kEthLen + sizeof(rte_arp_hdr)));
  auto* arp = reinterpret_cast<rte_arp_hdr*>(eth + 1);
  const dp::Port& p = dp_.ports[port];
  if (unicast != nullptr)
    memcpy(eth->dst_addr.addr_bytes, unicast->b, 6);
  else
    memset(eth->dst_addr.addr_bytes, 0xff, 6);
  memcpy(eth->src_addr.addr_bytes, p.mac.b, 6);
  eth->ether_type = RTE_BE16(RTE_ETHER_TYPE_ARP);
  arp->arp_hardware = RTE_BE16(RTE_ARP_HRD_ETHER);
  arp->arp_protocol = RTE_BE16(RTE_ETHER_TYPE_IPV4);
  arp->arp_hlen = RTE_ETHER_ADDR_LEN;
  arp->arp_plen = 4;
  arp->arp_opcode = RTE_BE16(RTE_ARP_OP_REQUEST);
  memcpy(arp->arp_data.arp_sha.addr_bytes, p.mac.b, 6);
  arp->arp_data.arp_sip = rte_cpu_to_be_32(p.cfg.address);
  memset(arp->arp_data.arp_tha.addr_bytes, 0, 6);
  arp->arp_data.arp_tip = rte_cpu_to_be_32(ip);
  dp::PktMeta* md = dp::meta(m);
  md->stage = dp::Stage::tx;
  md->port = port;
  dp_.hand_to_worker(0, m);
}

}  // namespace sluice::cp
