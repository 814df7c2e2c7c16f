#include "controlplane/gateway.h"

#include <pthread.h>
#include <sys/resource.h>
#include <unistd.h>

#include <rte_lcore.h>

#include <chrono>
#include <cstring>

#include "controlplane/log.h"

namespace sluice::cp {

using config::to_string;

bool Gateway::publish_policy(const config::Config& c, uint64_t generation, std::string* err) {
  auto pol = policy::CompiledPolicy::build(c, trust_applies(c), generation, err);
  if (pol == nullptr) return false;
  install_policy(std::move(pol), c);
  last_load_unix_s_ = double(unix_now_ns()) / 1e9;
  return true;
}

void Gateway::install_policy(std::unique_ptr<policy::CompiledPolicy> pol, const config::Config& c) {
  const uint64_t generation = pol->generation();
  metrics_new_policy(c, generation);  // its rule-hit counters, published before the policy
  // Workers may still classify with the old tables: free them after a grace period. Flows it
  // decided are re-classified on their next packet (their generation is older).
  retire_policy(dp_.policy.exchange(pol.release(), std::memory_order_acq_rel));
  policy_generation_ = generation;
}

void Gateway::reject_reload(const std::vector<std::string>& errors) {
  ++reload_failures_;
  log::warn("reload_rejected", {{"errors", std::to_string(errors.size())}, {"first", errors.front()}});
}

void Gateway::retire_policy(const policy::CompiledPolicy* old) {
  if (old == nullptr) return;
  // The callback owns a reference: it may run from the dataplane's teardown, after ~Gateway.
  dp_.rcu.retire([old, reaper = reaper_] {
    if (reaper) reaper->free(old);
    else delete old;
  });
}

config::Config Gateway::running_view(const config::Config& c) const {
  config::Config v = c;
  v.peers.clear();
  for (const auto& p : peers_) {
    if (p) {
      if (p->id >= v.peers.size()) v.peers.resize(p->id + 1);
      v.peers[p->id] = p->cfg;
    }
  }
  return v;
}

std::string restart_needed(const config::Config& a, const config::Config& b) {
  const auto& ga = a.gateway;
  const auto& gb = b.gateway;
  if (ga.private_key != gb.private_key || ga.listen_port != gb.listen_port ||
      ga.virtual_address != gb.virtual_address || ga.mtu != gb.mtu)
    return "gateway keys, listen_port, virtual_address or mtu";
  const auto& da = a.dataplane;
  const auto& db = b.dataplane;
  if (da.eal_args != db.eal_args || da.workers != db.workers || da.ports.size() != db.ports.size())
    return "dataplane";
  for (size_t i = 0; i < da.ports.size(); ++i) {
    const auto& pa = da.ports[i];
    const auto& pb = db.ports[i];
    if (pa.name != pb.name || pa.device != pb.device || pa.address.addr != pb.address.addr ||
        pa.address.len != pb.address.len || pa.role != pb.role || pa.gateway != pb.gateway)
      return "dataplane.ports";
  }
  if (a.control.socket != b.control.socket) return "control.socket";
  if (a.metrics.listen != b.metrics.listen) return "metrics.listen";
  return "";
}

// --- Reload: validate, compile in the background, commit ---------------------------------

namespace {

std::string rejected_message(const std::vector<std::string>& errors) {
  std::string msg = "configuration rejected, the running one stays:";
  for (const auto& e : errors) msg += "\n" + e;
  return msg;
}

// Which public key each peer slot of a layout holds (empty slots: an all-zero key).
std::vector<config::Key> slot_keys(const PeerLayout& l) {
  std::vector<config::Key> keys;
  keys.reserve(l.by_slot.size());
  for (const auto& p : l.by_slot) keys.push_back(p.public_key);
  return keys;
}

}  // namespace

void* Gateway::compile_policy(void* arg) {
  auto* job = static_cast<PolicyJob*>(arg);
  // Below the control thread when they share a CPU: handshakes first.
  ::setpriority(PRIO_PROCESS, static_cast<id_t>(::gettid()), 10);
  const auto t0 = std::chrono::steady_clock::now();
  job->result = policy::CompiledPolicy::build(job->view, job->applies, job->generation, &job->err);
  job->seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  job->done.store(true, std::memory_order_release);
  return nullptr;
}

Gateway::ReloadStart Gateway::begin_reload(std::vector<std::string>* errors, uint64_t waiter) {
  if (policy_job_ != nullptr) {
    // One compile at a time: this request joins the single queued reload, which reads the file
    // again once the running one is done.
    reload_queued_ = true;
    if (waiter != 0) queued_waiters_.push_back(waiter);
    log::info("reload_queued", {{"behind_generation", std::to_string(policy_job_->generation)}});
    return ReloadStart::kQueued;
  }
  reload_file_hash_ = file_hash(config_path_);
  auto loaded = config::load_file(config_path_);
  for (const auto& e : loaded.errors) errors->push_back(e.to_string());
  if (loaded.config) {
    const std::string why = restart_needed(cfg_, *loaded.config);
    if (!why.empty()) errors->push_back(config_path_ + ": changing " + why + " needs a restart of sluiced");
  }
  if (errors->empty() && !loaded.config) errors->push_back(config_path_ + ": no configuration loaded");
  // Peers: matched by public key against the running ones (gateway_peers.cpp). The file is
  // the source of truth: peers added or changed at run time (sluicectl peers) that the file
  // does not have are dropped or reverted when this reload commits.
  PeerLayout layout;
  if (errors->empty()) {
    std::string err;
    if (!plan_peers(loaded.config->peers, &layout, &err)) errors->push_back(config_path_ + ": " + err);
  }
  if (!errors->empty()) {
    reject_reload(*errors);
    for (const auto& e : *errors) log::warn("reload_error", {{"error", e}});
    return ReloadStart::kFailed;
  }
  auto job = std::make_unique<PolicyJob>();
  job->view = policy_view(*loaded.config, layout);  // peers in slot order: the policy's peer index
  job->applies = trust_applies(job->view);           // a snapshot: safe on the compile thread
  job->slots = slot_keys(layout);
  job->cfg = std::move(*loaded.config);
  // Provisional: the generation is assigned when the policy is published (trust re-points may
  // publish generations meanwhile).
  job->generation = policy_generation_ + 1;
  if (waiter != 0) job->waiters.push_back(waiter);
  // A control thread: on the CPUs no lcore uses (or the main lcore's), never a worker's.
  if (int rc = rte_ctrl_thread_create(&job->thread, "sluice-compile", nullptr, compile_policy, job.get());
      rc != 0) {
    errors->push_back(config_path_ + ": cannot start the policy compile thread: " + std::strerror(rc));
    reject_reload(*errors);
    return ReloadStart::kFailed;
  }
  log::info("reload_compiling", {{"policies", std::to_string(job->cfg.policies.size())},
                                 {"peers", std::to_string(job->cfg.peers.size())}});
  policy_job_ = std::move(job);
  return ReloadStart::kStarted;
}

void Gateway::poll_reload() {
  if (policy_job_ == nullptr || !policy_job_->done.load(std::memory_order_acquire)) return;
  std::unique_ptr<PolicyJob> job = std::move(policy_job_);
  pthread_join(job->thread, nullptr);
  std::vector<std::string> errors;
  if (job->result == nullptr) {
    errors.push_back(config_path_ + ": " + job->err);
    reject_reload(errors);
    finish_reload(job->waiters, false, errors);
  } else {
    log::info("policy_compiled", {{"seconds", std::to_string(job->seconds)},
                                  {"rte_rules", std::to_string(job->result->stats().rte_rules)}});
    // Peers changed at run time while it compiled (sluicectl peers): the slots it was compiled
    // for are no longer the ones the peers would take. Compile again, for the same clients.
    PeerLayout layout;
    std::string err;
    if (!plan_peers(job->cfg.peers, &layout, &err)) {
      errors.push_back(config_path_ + ": " + err);
      reject_reload(errors);
      finish_reload(job->waiters, false, errors);
    } else if (slot_keys(layout) != job->slots) {
      log::info("reload_recompiling", {{"reason", "peers changed at run time during the compile"}});
      reload_queued_ = true;
      queued_waiters_.insert(queued_waiters_.begin(), job->waiters.begin(), job->waiters.end());
    } else {
      commit_reload(std::move(job->cfg), std::move(job->view), layout, std::move(job->result));
      finish_reload(job->waiters, true, errors);
    }
  }
  if (reload_queued_) {
    reload_queued_ = false;
    std::vector<uint64_t> waiters = std::move(queued_waiters_);
    queued_waiters_.clear();
    std::vector<std::string> queued_errors;
    if (begin_reload(&queued_errors, 0) == ReloadStart::kFailed) {
      finish_reload(waiters, false, queued_errors);
    } else {
      policy_job_->waiters = std::move(waiters);
    }
  }
}

void Gateway::commit_reload(config::Config next, const config::Config& view, const PeerLayout& layout,
                            std::unique_ptr<policy::CompiledPolicy> pol) {
  const uint64_t generation = policy_generation_ + 1;
  pol->set_generation(generation);
  install_policy(std::move(pol), view);
  last_load_unix_s_ = double(unix_now_ns()) / 1e9;
  // Unchanged peers keep their sessions; tags and attributes take effect through the new policy.
  apply_peers(next.peers, layout);
  cfg_ = std::move(next);
  ++reloads_;
  log::info("reloaded", {{"policy_generation", std::to_string(policy_generation_)},
                         {"policies", std::to_string(cfg_.policies.size())},
                         {"peers_added", std::to_string(layout.diff.add.size())},
                         {"peers_removed", std::to_string(layout.diff.remove.size())}});
}

void Gateway::finish_reload(const std::vector<uint64_t>& waiters, bool ok, const std::vector<std::string>& errors) {
  const ctl::Reply reply =
      ok ? ctl::Reply::success({{"policy_generation", policy_generation_}, {"reloads", reloads_}})
         : ctl::Reply::failure(rejected_message(errors));
  for (uint64_t token : waiters) ctl_.complete(token, reply);
}

void Gateway::wait_policy_job() {
  if (policy_job_ == nullptr) return;
  pthread_join(policy_job_->thread, nullptr);
  finish_reload(policy_job_->waiters, false, {config_path_ + ": sluiced is stopping"});
  policy_job_.reset();
  reload_queued_ = false;
  queued_waiters_.clear();
}

}  // namespace sluice::cp
