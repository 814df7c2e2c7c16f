#include "controlplane/gateway.h"

#include "controlplane/log.h"

namespace sluice::cp {

using config::to_string;

bool Gateway::publish_policy(const config::Config& c, uint64_t generation, std::string* err) {
  auto pol = policy::CompiledPolicy::build(c, trust_applies(c), generation, err);
  if (pol == nullptr) return false;
  metrics_new_policy(c, generation);  // its rule-hit counters, published before the policy
  const policy::CompiledPolicy* old = dp_.policy.exchange(pol.release(), std::memory_order_acq_rel);
  // Workers may still classify with the old tables: free them after a grace period. Flows it
  // decided are re-classified on their next packet (their generation is older).
  if (old != nullptr) dp_.rcu.retire([old] { delete old; });
  policy_generation_ = generation;
  return true;
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

bool Gateway::reload(std::vector<std::string>* errors) {
  reload_file_hash_ = file_hash(config_path_);
  auto loaded = config::load_file(config_path_);
  for (const auto& e : loaded.errors) errors->push_back(e.to_string());
  std::string why;
  if (loaded.config) {
    why = restart_needed(cfg_, *loaded.config);
    if (!why.empty()) errors->push_back(config_path_ + ": changing " + why + " needs a restart of sluiced");
  }
  // Peers: matched by public key against the running ones (gateway_peers.cpp). The file is
  // the source of truth: peers added or changed at run time (sluicectl peers) that the file
  // does not have are dropped or reverted here.
  PeerLayout layout;
  if (errors->empty()) {
    std::string err;
    if (!plan_peers(loaded.config->peers, &layout, &err)) errors->push_back(config_path_ + ": " + err);
  }
  if (errors->empty()) {
    std::string err;
    if (!publish_policy(policy_view(*loaded.config, layout), policy_generation_ + 1, &err))
      errors->push_back(config_path_ + ": " + err);
  }
  if (!errors->empty()) {
    ++reload_failures_;
    log::warn("reload_rejected", {{"errors", std::to_string(errors->size())}, {"first", errors->front()}});
    return false;
  }
  // Unchanged peers keep their sessions; tags and attributes take effect through the new policy.
  apply_peers(loaded.config->peers, layout);
  cfg_ = std::move(*loaded.config);
  ++reloads_;
  log::info("reloaded", {{"policy_generation", std::to_string(policy_generation_)},
                         {"policies", std::to_string(cfg_.policies.size())},
                         {"peers_added", std::to_string(layout.diff.add.size())},
                         {"peers_removed", std::to_string(layout.diff.remove.size())}});
  return true;
}


}  // namespace sluice::cp
