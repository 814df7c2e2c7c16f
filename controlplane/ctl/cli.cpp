#include "controlplane/ctl/cli.h"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cstddef>
#include <fstream>
#include <map>
#include <string_view>

#include <yaml-cpp/yaml.h>

#include "controlplane/ctl/protocol.h"

namespace sluice::ctl {

namespace {

struct CommandSpec {
  std::vector<std::string> words;        // what the user types
  std::vector<std::string> required;     // command options that must be given
  std::vector<std::string> optional;
  const char* synopsis;
  const char* help;
  std::vector<std::string> operands{};  // positional arguments after the words, all required
};

// Options that take no value: sent as `true`.
bool is_flag(const std::string& name) { return name == "revoke"; }

const std::vector<CommandSpec>& commands() {
  static const std::vector<CommandSpec> kCommands = {
      {{"status"}, {}, {}, "status", "gateway, ports, peers and counters"},
      {{"peers"}, {}, {}, "peers", "one line per peer: state, endpoint, handshake, transfer"},
      {{"subnets"}, {}, {}, "subnets", "known subnets: discovered and configured, available or not"},
      {{"subnets", "rediscover"}, {}, {}, "subnets rediscover",
       "discover the subnets of the gateway's interfaces again (brings back forgotten ones)"},
      {{"subnets", "forget"}, {"prefix"}, {}, "subnets forget --prefix PREFIX",
       "forget a discovered subnet (one still present stays hidden until rediscover)"},
      {{"policies"}, {}, {}, "policies", "access policies and the peers they admit"},
      {{"conntrack"}, {}, {"peer"}, "conntrack [--peer NAME]", "tracked connections"},
      {{"explain"}, {"peer", "to", "proto"}, {}, "explain --peer NAME --to ADDR[:PORT] --proto P",
       "which policy and ACL decide a flow, and why"},
      {{"reload"}, {}, {}, "reload", "apply the configuration file again"},
      {{"dns", "log"}, {}, {"limit"}, "dns log [--limit N]", "recent DNS queries and verdicts"},
      {{"firewall", "show"}, {}, {}, "firewall show", "the host firewall as applied"},
      {{"firewall", "reset"}, {}, {}, "firewall reset",
       "apply the host firewall from the configuration again"},
      {{"rekey"}, {"peer"}, {}, "rekey --peer NAME", "initiate a new handshake with a peer"},
      {{"peers", "add"}, {"name", "public-key", "virtual-address"},
       {"tags", "endpoint", "keepalive", "preshared-key-file", "attribute"},
       "peers add --name N --public-key K --virtual-address A",
       "add a peer now, until the next reload of the file; also [--tags a,b] [--endpoint IP:PORT] "
       "[--keepalive S] [--preshared-key-file F] [--attribute k=v,...]"},
      {{"peers", "remove"}, {}, {}, "peers remove NAME", "remove a peer now (until the next reload)", {"name"}},
      {{"peers", "set"}, {}, {"tags", "attribute"}, "peers set NAME [--tags a,b] [--attribute k=v,...]",
       "change a peer's tags or attributes now (until the next reload)", {"name"}},
      {{"neighbors"}, {}, {}, "neighbors", "the ARP table of the gateway's ports"},
      {{"attest"}, {}, {"until", "for", "revoke"}, "attest PEER NAME [--until RFC3339 | --for DURATION | --revoke]",
       "attest (or revoke) a peer's attribute for trust requirements; no expiry without --until/--for",
       {"peer", "name"}},
      {{"attestations"}, {}, {}, "attestations", "attested peer attributes and when they expire"},
  };
  return kCommands;
}

bool parse_uint(std::string_view s, unsigned long max, unsigned long* out) {
  if (s.empty()) return false;
  unsigned long v = 0;
  const auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || p != s.data() + s.size() || v > max) return false;
  *out = v;
  return true;
}

// ADDR, ADDR:PORT, [V6ADDR]:PORT or a bare IPv6 address.
bool parse_destination(const std::string& to, nlohmann::json& args, std::string* err) {
  std::string address = to, port;
  bool has_port = false;
  if (!to.empty() && to.front() == '[') {
    const auto close = to.find(']');
    const std::string rest = close == std::string::npos ? "" : to.substr(close + 1);
    if (close == std::string::npos || (!rest.empty() && rest.front() != ':')) {
      *err = "--to '" + to + "': expected [ADDRESS]:PORT";
      return false;
    }
    address = to.substr(1, close - 1);
    if (!rest.empty()) {
      port = rest.substr(1);
      has_port = true;
    }
  } else if (std::count(to.begin(), to.end(), ':') == 1) {
    const auto colon = to.find(':');
    address = to.substr(0, colon);
    port = to.substr(colon + 1);
    has_port = true;
  }
  if (address.empty()) {
    *err = "--to '" + to + "': missing address";
    return false;
  }
  args["address"] = address;
  if (has_port) {
    unsigned long p = 0;
    if (!parse_uint(port, 65535, &p) || p == 0) {
      *err = "--to '" + to + "': port must be 1-65535";
      return false;
    }
    args["port"] = p;
  }
  return true;
}

}  // namespace

std::optional<Invocation> parse_command_line(const std::vector<std::string>& argv,
                                             std::string* err) {
  Invocation inv;
  bool timeout_given = false;
  std::vector<std::string> words;
  std::map<std::string, std::string> options;  // command options, without "--"
  for (std::size_t i = 0; i < argv.size(); ++i) {
    std::string arg = argv[i];
    if (arg == "-h" || arg == "--help") {
      inv.help = true;
      return inv;
    }
    if (arg == "--json") {
      inv.json_output = true;
      continue;
    }
    if (arg.rfind("--", 0) != 0 || arg == "--") {
      if (arg.size() > 1 && arg[0] == '-') {
        *err = "unknown option '" + arg + "'";
        return std::nullopt;
      }
      words.push_back(arg);
      continue;
    }
    std::string name = arg.substr(2), value;
    if (is_flag(name)) {
      if (options.count(name)) {
        *err = "option '--" + name + "' given twice";
        return std::nullopt;
      }
      options[name] = "true";
      continue;
    }
    bool has_value = false;
    if (const auto eq = name.find('='); eq != std::string::npos) {
      value = name.substr(eq + 1);
      name.resize(eq);
      has_value = true;
    }
    if (!has_value) {
      if (i + 1 >= argv.size()) {
        *err = "option '--" + name + "' needs a value";
        return std::nullopt;
      }
      value = argv[++i];
    }
    if (name == "socket") {
      inv.socket_path = value;
    } else if (name == "config") {
      inv.config_path = value;
    } else if (name == "timeout") {
      unsigned long s = 0;
      if (!parse_uint(value, 3600, &s) || s == 0) {
        *err = "--timeout: expected whole seconds, 1-3600";
        return std::nullopt;
      }
      inv.timeout_ms = static_cast<int>(s * 1000);
      timeout_given = true;
    } else {
      if (options.count(name)) {
        *err = "option '--" + name + "' given twice";
        return std::nullopt;
      }
      options[name] = value;
    }
  }
  if (!inv.socket_path.empty() && !inv.config_path.empty()) {
    *err = "--socket and --config exclude each other";
    return std::nullopt;
  }
  if (words.empty()) {
    *err = "no command given";
    return std::nullopt;
  }

  // The longest command whose words start the positional arguments.
  const CommandSpec* spec = nullptr;
  for (const auto& c : commands()) {
    if (c.words.size() <= words.size() && std::equal(c.words.begin(), c.words.end(), words.begin()) &&
        (!spec || c.words.size() > spec->words.size())) {
      spec = &c;
    }
  }
  if (!spec) {
    const bool group = words[0] == "dns" || words[0] == "firewall";
    *err = group ? "'" + words[0] + "' needs a subcommand" : "unknown command '" + words[0] + "'";
    if (group && words.size() > 1) *err = "unknown command '" + words[0] + " " + words[1] + "'";
    return std::nullopt;
  }
  const std::size_t nwords = spec->words.size(), noperands = spec->operands.size();
  if (words.size() > nwords + noperands) {
    *err = "unexpected argument '" + words[nwords + noperands] + "' for '" +
           std::string(spec->synopsis) + "'";
    return std::nullopt;
  }
  if (words.size() < nwords + noperands) {
    std::string what = spec->operands[words.size() - nwords];
    std::transform(what.begin(), what.end(), what.begin(),
                   [](unsigned char c) { return static_cast<char>(std::toupper(c)); });
    *err = "'" + std::string(spec->synopsis) + "': missing " + what;
    return std::nullopt;
  }
  for (std::size_t k = 0; k < noperands; ++k) inv.args[spec->operands[k]] = words[nwords + k];
  for (const auto& word : spec->words) {
    if (!inv.command.empty()) inv.command += '_';
    inv.command += word;
  }
  for (const auto& [name, value] : options) {
    const auto allowed = [&](const std::vector<std::string>& v) {
      return std::find(v.begin(), v.end(), name) != v.end();
    };
    if (!allowed(spec->required) && !allowed(spec->optional)) {
      *err = "unknown option '--" + name + "' for '" + inv.command + "'";
      return std::nullopt;
    }
    if (value.empty()) {
      *err = "option '--" + name + "' needs a value";
      return std::nullopt;
    }
  }
  for (const auto& name : spec->required) {
    if (!options.count(name)) {
      *err = "'" + std::string(spec->synopsis) + "': missing --" + name;
      return std::nullopt;
    }
  }
  for (const auto& [name, value] : options) {
    if (name == "limit") {
      unsigned long n = 0;
      if (!parse_uint(value, 1'000'000, &n) || n == 0) {
        *err = "--limit: expected a positive number";
        return std::nullopt;
      }
      inv.args["limit"] = n;
    } else if (name == "proto") {
      std::string proto = value;
      std::transform(proto.begin(), proto.end(), proto.begin(),
                     [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
      inv.args["proto"] = proto;
    } else if (is_flag(name)) {
      inv.args[name] = true;
    } else if (name == "to") {
      inv.args["to"] = value;
      if (!parse_destination(value, inv.args, err)) return std::nullopt;
    } else if (name == "preshared-key-file") {
      // Read here: the gateway may not see the caller's files.
      std::ifstream f(value);
      std::string key;
      if (!f || !(f >> key)) {
        *err = "--preshared-key-file: cannot read '" + value + "'";
        return std::nullopt;
      }
      inv.args["preshared_key"] = key;
    } else {
      std::string wire = name;  // --public-key -> public_key
      std::replace(wire.begin(), wire.end(), '-', '_');
      inv.args[wire] = value;
    }
  }
  // A reload answers when its policy has compiled: allow a big one on a busy machine.
  if (inv.command == "reload" && !timeout_given) inv.timeout_ms = kReloadTimeoutMs;
  return inv;
}

std::string usage() {
  std::string out =
      "usage: sluicectl [--socket PATH | --config FILE] [--timeout SECONDS] COMMAND [ARGS] "
      "[--json]\n"
      "\n"
      "Talks to a running sluiced over its control socket (default ";
  out += kDefaultSocketPath;
  out +=
      ").\n"
      "\n"
      "commands:\n";
  std::size_t width = 0;
  for (const auto& c : commands()) width = std::max(width, std::string_view(c.synopsis).size());
  for (const auto& c : commands()) {
    const std::string synopsis = c.synopsis;
    out += "  " + synopsis + std::string(width - synopsis.size() + 2, ' ') + c.help + "\n";
  }
  out +=
      "\n"
      "options:\n"
      "  --socket PATH       the gateway's control socket\n"
      "  --config FILE       take the socket from control.socket of this gateway.yaml\n"
      "  --timeout SECONDS   how long to wait for the gateway (default 5; reload: 120)\n"
      "  --json              print the result as JSON\n"
      "  -h, --help          print this help\n"
      "\n"
      "exit status: 0 success, 1 refused or unreachable, 2 usage error\n";
  return out;
}

std::optional<std::string> socket_from_config(const std::string& config_path, std::string* err) {
  YAML::Node root;
  try {
    root = YAML::LoadFile(config_path);
  } catch (const YAML::BadFile&) {
    *err = config_path + ": cannot read the file";
    return std::nullopt;
  } catch (const YAML::Exception& e) {
    *err = config_path + ":" + std::to_string(e.mark.line + 1) + ":" +
           std::to_string(e.mark.column + 1) + ": " + e.msg;
    return std::nullopt;
  }
  if (root.IsMap()) {
    const YAML::Node control = root["control"];
    if (control && control.IsMap()) {
      const YAML::Node socket = control["socket"];
      if (socket && socket.IsScalar() && !socket.Scalar().empty()) return socket.Scalar();
      if (socket && !socket.IsNull()) {
        *err = config_path + ":" + std::to_string(socket.Mark().line + 1) + ":" +
               std::to_string(socket.Mark().column + 1) + ": control.socket must be a path";
        return std::nullopt;
      }
    }
  }
  return std::string(kDefaultSocketPath);
}

}  // namespace sluice::ctl
