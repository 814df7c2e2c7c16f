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
  if (a.metrics.listen != b.metrics.listen) return "metrics.listen";
  return "";
}

bool Gateway::reload(std::vector<std::string>* errors) {
  auto loaded = config::load_file(config_path_);
  for (const auto& e : loaded.errors) errors->push_back(e.to_string());
  std::string why;
  if (loaded.config) {
    why = restart_needed(cfg_, *loaded.config);
    if (!why.empty()) errors->push_back(config_path_ + ": changing " + why + " needs a restart of sluiced");
  }
  if (errors->empty()) {
    std::string err;
    if (!publish_policy(*loaded.config, policy_generation_ + 1, &err)) errors->push_back(config_path_ + ": " + err);
  }
  if (!errors->empty()) {
    ++reload_failures_;
    log::warn("reload_rejected", {{"errors", std::to_string(errors->size())}, {"first", errors->front()}});
    return false;
  }
  // Peers keep their sessions; tags and attributes take effect through the new policy.
  for (size_t i = 0; i < peers_.size() && i < loaded.config->peers.size(); ++i)
    if (peers_[i]) peers_[i]->cfg = loaded.config->peers[i];
  cfg_ = std::move(*loaded.config);
  ++reloads_;
  log::info("reloaded", {{"policy_generation", std::to_string(policy_generation_)},
                         {"policies", std::to_string(cfg_.policies.size())}});
  return true;
}


}  // namespace sluice::cp
