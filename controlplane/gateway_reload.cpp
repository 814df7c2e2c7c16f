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
  auto pol = policy::CompiledPolicy::build(c, {}, generation, err);
  if (pol == nullptr) return false;
  const policy::CompiledPolicy* old = dp_.policy.exchange(pol.release(), std::memory_order_acq_rel);
  // Workers may still classify with the old tables: free them after a grace period. Flows it
  // decided are re-classified on their next packet (their generation is older).
  if (old != nullptr) dp_.rcu.retire([old] { delete old; });
  policy_generation_ = generation;
  return true;
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
  if (a.peers.size() != b.peers.size()) return "the list of peers";
  for (size_t i = 0; i < a.peers.size(); ++i) {
    const auto& pa = a.peers[i];
    const auto& pb = b.peers[i];
    if (pa.name != pb.name || pa.public_key != pb.public_key || pa.virtual_address != pb.virtual_address ||
        pa.preshared_key != pb.preshared_key)
      return "peer " + pa.name + " (name, key or virtual address)";
  }
  if (a.control.socket != b.control.socket) return "control.socket";
  return "";
}

// --- Reload: validate, compile in the background, commit ---------------------------------

namespace {

std::string rejected_message(const std::vector<std::string>& errors) {
  std::string msg = "configuration rejected, the running one stays:";
  for (const auto& e : errors) msg += "\n" + e;
  return msg;
}

}  // namespace

void* Gateway::compile_policy(void* arg) {
  auto* job = static_cast<PolicyJob*>(arg);
  // Below the control thread when they share a CPU: handshakes first.
  ::setpriority(PRIO_PROCESS, static_cast<id_t>(::gettid()), 10);
  const auto t0 = std::chrono::steady_clock::now();
  job->result = policy::CompiledPolicy::build(job->cfg, {}, job->generation, &job->err);
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
  auto loaded = config::load_file(config_path_);
  for (const auto& e : loaded.errors) errors->push_back(e.to_string());
  if (loaded.config) {
    const std::string why = restart_needed(cfg_, *loaded.config);
    if (!why.empty()) errors->push_back(config_path_ + ": changing " + why + " needs a restart of sluiced");
  }
  if (errors->empty() && !loaded.config) errors->push_back(config_path_ + ": no configuration loaded");
  if (!errors->empty()) {
    ++reload_failures_;
    log::warn("reload_rejected", {{"errors", std::to_string(errors->size())}, {"first", errors->front()}});
    for (const auto& e : *errors) log::warn("reload_error", {{"error", e}});
    return ReloadStart::kFailed;
  }
  auto job = std::make_unique<PolicyJob>();
  job->cfg = std::move(*loaded.config);
  job->generation = policy_generation_ + 1;
  if (waiter != 0) job->waiters.push_back(waiter);
  // A control thread: on the CPUs no lcore uses (or the main lcore's), never a worker's.
  if (int rc = rte_ctrl_thread_create(&job->thread, "sluice-compile", nullptr, compile_policy, job.get());
      rc != 0) {
    errors->push_back(config_path_ + ": cannot start the policy compile thread: " + std::strerror(rc));
    ++reload_failures_;
    log::warn("reload_rejected", {{"errors", "1"}, {"first", errors->front()}});
    return ReloadStart::kFailed;
  }
  log::info("reload_compiling", {{"policy_generation", std::to_string(job->generation)},
                                 {"policies", std::to_string(job->cfg.policies.size())}});
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
    ++reload_failures_;
    log::warn("reload_rejected", {{"errors", "1"}, {"first", errors.front()}});
    finish_reload(job->waiters, false, errors);
  } else {
    log::info("policy_compiled", {{"policy_generation", std::to_string(job->generation)},
                                  {"seconds", std::to_string(job->seconds)},
                                  {"rte_rules", std::to_string(job->result->stats().rte_rules)}});
    commit_reload(std::move(job->cfg), std::move(job->result));
    finish_reload(job->waiters, true, errors);
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

void Gateway::commit_reload(config::Config next, std::unique_ptr<policy::CompiledPolicy> pol) {
  const uint64_t generation = pol->generation();
  const policy::CompiledPolicy* old = dp_.policy.exchange(pol.release(), std::memory_order_acq_rel);
  // Workers may still classify with the old tables: free them after a grace period. Flows it
  // decided are re-classified on their next packet (their generation is older).
  if (old != nullptr) dp_.rcu.retire([old] { delete old; });
  policy_generation_ = generation;
  // Peers keep their sessions; tags and attributes take effect through the new policy.
  for (size_t i = 0; i < peers_.size() && i < next.peers.size(); ++i)
    if (peers_[i]) peers_[i]->cfg = next.peers[i];
  cfg_ = std::move(next);
  ++reloads_;
  log::info("reloaded", {{"policy_generation", std::to_string(policy_generation_)},
                         {"policies", std::to_string(cfg_.policies.size())}});
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
