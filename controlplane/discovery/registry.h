// Known subnets: what discovery saw on the gateway's interfaces, merged with the subnets the
// configuration lists (custom subnets). A discovered subnet that goes away stays known and is
// shown unavailable, across restarts too (the registry is saved in gateway.state_dir).
//
// The registry is plain data: the control thread feeds it complete observations (every subnet
// seen right now, from the kernel's interfaces and the DPDK ports) and saves it when update()
// says something worth keeping changed. Nothing here talks to the kernel or to DPDK.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "controlplane/config/address.h"

namespace sluice::discovery {

// Where a subnet was seen.
enum class Source { kernel, port };
const char* to_string(Source s);

// One subnet seen right now on one interface. prefix: the network (no host bits).
struct Observation {
  config::Prefix prefix;
  std::string interface;  // kernel interface name, or the DPDK port's name
  Source source = Source::kernel;
};

// A subnet of the configuration (config.subnets).
struct CustomSubnet {
  config::Prefix prefix;  // no host bits
  std::string name;       // empty: the prefix as text
  bool preferred = false;
};

enum class Origin { discovered, custom };
const char* to_string(Origin o);

// One row of `sluicectl subnets`.
struct KnownSubnet {
  config::Prefix prefix;
  std::string name;
  Origin origin = Origin::discovered;
  bool preferred = false;
  // Discovered subnets: seen now or not. Custom subnets that no interface carries: unknown (the
  // gateway does not judge the viability of subnets that are not on its interfaces).
  std::optional<bool> available;
  std::vector<std::string> interfaces;  // now when available, else where it was last seen
  std::vector<Source> sources;          // alongside `interfaces`
  int64_t first_seen = 0;               // unix seconds; 0 = never seen on an interface
  int64_t last_seen = 0;                // unix seconds it was last seen available; 0 = never
};

class SubnetRegistry {
 public:
  // Replaces the custom subnets (start and reload).
  void set_custom(std::vector<CustomSubnet> custom);

  // Takes the complete set of subnets seen now. Returns true when what is saved changed: a
  // subnet appeared, went away, came back or moved interfaces (not on a mere refresh).
  bool update(const std::vector<Observation>& seen, int64_t now_s);

  // Forgets a discovered subnet. An unavailable one is dropped (it is discovered afresh when it
  // comes back); an available one is hidden until rediscover() (else the next update would bring
  // it straight back). Custom subnets cannot be forgotten: they live in the configuration.
  enum class ForgetResult { forgotten, hidden, custom, unknown };
  ForgetResult forget(const config::Prefix& prefix);

  // Shows hidden subnets again (the caller then feeds a fresh observation to update()).
  // Returns how many were hidden.
  size_t unhide_all();

  // Every subnet: custom ones in configuration order, then discovered ones by address.
  std::vector<KnownSubnet> list() const;

  // The persisted form: discovered subnets and hidden prefixes, no custom ones.
  nlohmann::json to_json() const;
  // Replaces the discovered subnets and hidden prefixes with the saved ones, all unavailable
  // until the next update(). Entries it cannot read are skipped and counted in *skipped.
  bool from_json(const nlohmann::json& j, std::string* err, size_t* skipped = nullptr);

  // Atomic save (temporary file in the same directory, fsync, rename) and load. load() of a
  // missing file is success with nothing known.
  bool save(const std::string& path, std::string* err) const;
  bool load(const std::string& path, std::string* err, size_t* skipped = nullptr);

  size_t discovered_count() const { return discovered_.size(); }
  size_t hidden_count() const { return hidden_.size(); }

 private:
  struct Seen {
    std::string interface;
    Source source;
    friend bool operator==(const Seen&, const Seen&) = default;
  };
  struct Entry {
    bool available = false;
    std::vector<Seen> seen;  // sorted, no duplicates
    int64_t first_seen = 0;
    int64_t last_seen = 0;
  };
  static uint64_t key(const config::Prefix& p) { return (uint64_t(p.network()) << 8) | p.len; }

  std::vector<CustomSubnet> custom_;
  std::map<uint64_t, Entry> discovered_;  // by key(prefix): address order, then length
  std::set<uint64_t> hidden_;
};

// Creates the directory and its parents (mode 0750) when missing.
bool ensure_directory(const std::string& path, std::string* err);

// The known-subnets file inside gateway.state_dir.
std::string state_file(const std::string& state_dir);

}  // namespace sluice::discovery
