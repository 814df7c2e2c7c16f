// sluicectl's command line: which request to send, where, and how to print the answer.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace sluice::ctl {

// `reload` waits for the policy compile unless --timeout says otherwise.
inline constexpr int kReloadTimeoutMs = 120'000;

struct Invocation {
  std::string socket_path;   // --socket; empty: take it from --config or the default
  std::string config_path;   // --config
  std::string command;       // the wire name: "status", "subnets_rediscover", "dns_log", ...
  nlohmann::json args = nlohmann::json::object();
  bool json_output = false;  // --json
  bool help = false;         // --help: print usage() and exit 0
  int timeout_ms = 5000;     // --timeout SECONDS

  nlohmann::json request() const { return {{"command", command}, {"args", args}}; }
};

// Parses argv[1..]; nullopt with `err` set on a usage error (exit status 2).
std::optional<Invocation> parse_command_line(const std::vector<std::string>& argv,
                                             std::string* err);

// The usage text, every command included.
std::string usage();

// `control.socket` of a gateway.yaml (the default socket when it is not set); nothing else of the
// file is read or validated. nullopt with `err` ("FILE:LINE:COL: message") when it cannot be read.
std::optional<std::string> socket_from_config(const std::string& config_path, std::string* err);

}  // namespace sluice::ctl
