#include "controlplane/ctl/cli.h"

#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "controlplane/ctl/format.h"
#include "controlplane/ctl/protocol.h"
#include "controlplane/ctl/server.h"
#include "tests/unit/ctl/test_util.h"

extern char** environ;

namespace sluice::ctl {
namespace {

using nlohmann::json;
using testing::ServerThread;
using testing::TempDir;

Invocation parse_ok(const std::vector<std::string>& argv) {
  std::string err;
  auto inv = parse_command_line(argv, &err);
  EXPECT_TRUE(inv) << err;
  return inv.value_or(Invocation{});
}

std::string parse_error(const std::vector<std::string>& argv) {
  std::string err;
  const auto inv = parse_command_line(argv, &err);
  EXPECT_FALSE(inv);
  return err;
}

TEST(CommandLine, PeersAddRemoveSet) {
  const Invocation add = parse_ok({"peers", "add", "--name", "b", "--public-key", "K", "--virtual-address",
                                   "100.64.0.3", "--tags", "x,y", "--keepalive", "25"});
  EXPECT_EQ(add.command, "peers_add");
  EXPECT_EQ(add.args, (json{{"name", "b"},
                            {"public_key", "K"},
                            {"virtual_address", "100.64.0.3"},
                            {"tags", "x,y"},
                            {"keepalive", "25"}}));
  EXPECT_NE(parse_error({"peers", "add", "--name", "b"}).find("missing --public-key"), std::string::npos);
  const Invocation rm = parse_ok({"peers", "remove", "b"});
  EXPECT_EQ(rm.command, "peers_remove");
  EXPECT_EQ(rm.args, (json{{"name", "b"}}));
  EXPECT_NE(parse_error({"peers", "remove"}).find("missing NAME"), std::string::npos);
  EXPECT_NE(parse_error({"peers", "remove", "a", "b"}).find("unexpected argument 'b'"), std::string::npos);
  const Invocation set = parse_ok({"peers", "set", "a", "--tags", "ops", "--attribute", "managed=true"});
  EXPECT_EQ(set.command, "peers_set");
  EXPECT_EQ(set.args, (json{{"name", "a"}, {"tags", "ops"}, {"attribute", "managed=true"}}));
  EXPECT_NE(parse_error({"peers", "set", "a", "--endpoint", "x"}).find("unknown option"), std::string::npos);
  EXPECT_NE(parse_error({"peers", "add", "--name", "b", "--public-key", "K", "--virtual-address", "1.2.3.4",
                         "--preshared-key-file", "/nonexistent/psk"})
                .find("cannot read"),
            std::string::npos);
  EXPECT_EQ(parse_ok({"peers"}).command, "peers");
}

TEST(CommandLine, CommandsAndWireNames) {
  EXPECT_EQ(parse_ok({"status"}).command, "status");
  EXPECT_EQ(parse_ok({"peers"}).command, "peers");
  EXPECT_EQ(parse_ok({"subnets"}).command, "subnets");
  EXPECT_EQ(parse_ok({"subnets", "rediscover"}).command, "subnets_rediscover");
  EXPECT_EQ(parse_ok({"policies"}).command, "policies");
  EXPECT_EQ(parse_ok({"conntrack"}).command, "conntrack");
  EXPECT_EQ(parse_ok({"reload"}).command, "reload");
  EXPECT_EQ(parse_ok({"dns", "log"}).command, "dns_log");
  EXPECT_EQ(parse_ok({"firewall", "show"}).command, "firewall_show");
  EXPECT_EQ(parse_ok({"firewall", "reset"}).command, "firewall_reset");
  const Invocation rekey = parse_ok({"rekey", "--peer", "laptop-1"});
  EXPECT_EQ(rekey.command, "rekey");
  EXPECT_EQ(rekey.args, (json{{"peer", "laptop-1"}}));
  EXPECT_EQ(rekey.request(), (json{{"command", "rekey"}, {"args", {{"peer", "laptop-1"}}}}));
  EXPECT_EQ(parse_ok({"status"}).request(), (json{{"command", "status"}, {"args", json::object()}}));
}

TEST(CommandLine, GlobalOptionsAnywhere) {
  const Invocation a = parse_ok({"--socket", "/tmp/s.sock", "status", "--json"});
  EXPECT_EQ(a.socket_path, "/tmp/s.sock");
  EXPECT_TRUE(a.json_output);
  const Invocation b = parse_ok({"--json", "peers", "--config=/etc/sluice/gateway.yaml"});
  EXPECT_EQ(b.config_path, "/etc/sluice/gateway.yaml");
  EXPECT_EQ(b.command, "peers");
  EXPECT_EQ(parse_ok({"--timeout", "30", "reload"}).timeout_ms, 30000);
  // reload waits for the policy compile: a longer default.
  EXPECT_EQ(parse_ok({"reload"}).timeout_ms, kReloadTimeoutMs);
  EXPECT_EQ(parse_ok({"status"}).timeout_ms, 5000);
  EXPECT_TRUE(parse_ok({"status", "--help"}).help);
  EXPECT_TRUE(parse_ok({"-h"}).help);
}

// --json is global: every command takes it, before or after its words and options, and it never reaches
// the request.
TEST(CommandLine, EveryCommandTakesJson) {
  const std::vector<std::vector<std::string>> commands = {
      {"status"}, {"peers"}, {"subnets"}, {"subnets", "rediscover"}, {"policies"}, {"conntrack"},
      {"conntrack", "--peer", "laptop-1"}, {"explain", "--peer", "p", "--to", "198.51.100.10:22", "--proto", "tcp"},
      {"reload"}, {"neighbors"}, {"dns", "log"}, {"firewall", "show"}, {"firewall", "reset"},
      {"rekey", "--peer", "p"}};
  for (const auto& words : commands) {
    std::vector<std::string> after = words, before = words;
    after.push_back("--json");
    before.insert(before.begin(), "--json");
    const Invocation plain = parse_ok(words), a = parse_ok(after), b = parse_ok(before);
    EXPECT_FALSE(plain.json_output) << words[0];
    EXPECT_TRUE(a.json_output) << words[0];
    EXPECT_TRUE(b.json_output) << words[0];
    EXPECT_EQ(a.request(), plain.request()) << words[0];
    EXPECT_EQ(b.request(), plain.request()) << words[0];
  }
  EXPECT_EQ(parse_ok({"policies", "--json"}).request(), (json{{"command", "policies"}, {"args", json::object()}}));
  EXPECT_EQ(parse_error({"policies", "--peer", "x"}), "unknown option '--peer' for 'policies'");
  EXPECT_EQ(parse_error({"policies", "extra"}), "unexpected argument 'extra' for 'policies'");
}

TEST(CommandLine, Explain) {
  const Invocation inv =
      parse_ok({"explain", "--peer", "laptop-1", "--to", "198.51.100.10:443", "--proto", "TCP"});
  EXPECT_EQ(inv.command, "explain");
  EXPECT_EQ(inv.args, (json{{"peer", "laptop-1"}, {"to", "198.51.100.10:443"},
                            {"address", "198.51.100.10"}, {"port", 443}, {"proto", "tcp"}}));
  const Invocation noport =
      parse_ok({"explain", "--peer", "p", "--to", "198.51.100.10", "--proto", "icmp"});
  EXPECT_EQ(noport.args["address"], "198.51.100.10");
  EXPECT_FALSE(noport.args.contains("port"));
  const Invocation v6 = parse_ok({"explain", "--peer=p", "--to=[2001:db8::1]:53", "--proto=udp"});
  EXPECT_EQ(v6.args["address"], "2001:db8::1");
  EXPECT_EQ(v6.args["port"], 53);
  const Invocation bare_v6 = parse_ok({"explain", "--peer", "p", "--to", "2001:db8::1", "--proto", "udp"});
  EXPECT_EQ(bare_v6.args["address"], "2001:db8::1");
  EXPECT_FALSE(bare_v6.args.contains("port"));
}

TEST(CommandLine, OptionalCommandOptions) {
  EXPECT_EQ(parse_ok({"dns", "log", "--limit", "20"}).args, (json{{"limit", 20}}));
  EXPECT_EQ(parse_ok({"conntrack", "--peer", "laptop-1"}).args, (json{{"peer", "laptop-1"}}));
}

TEST(CommandLine, UsageErrors) {
  EXPECT_EQ(parse_error({}), "no command given");
  EXPECT_EQ(parse_error({"frobnicate"}), "unknown command 'frobnicate'");
  EXPECT_EQ(parse_error({"firewall"}), "'firewall' needs a subcommand");
  EXPECT_EQ(parse_error({"dns"}), "'dns' needs a subcommand");
  EXPECT_EQ(parse_error({"firewall", "burn"}), "unknown command 'firewall burn'");
  EXPECT_EQ(parse_error({"status", "extra"}), "unexpected argument 'extra' for 'status'");
  EXPECT_EQ(parse_error({"status", "--peer", "x"}), "unknown option '--peer' for 'status'");
  EXPECT_EQ(parse_error({"rekey"}), "'rekey --peer NAME': missing --peer");
  EXPECT_NE(parse_error({"explain", "--peer", "p", "--proto", "tcp"}).find("missing --to"),
            std::string::npos);
  EXPECT_NE(parse_error({"explain", "--peer", "p", "--to", "198.51.100.1:99999", "--proto", "tcp"})
                .find("port must be 1-65535"),
            std::string::npos);
  EXPECT_EQ(parse_error({"--socket", "a", "--config", "b", "status"}),
            "--socket and --config exclude each other");
  EXPECT_EQ(parse_error({"status", "--socket"}), "option '--socket' needs a value");
  EXPECT_EQ(parse_error({"-x", "status"}), "unknown option '-x'");
  EXPECT_NE(parse_error({"dns", "log", "--limit", "lots"}).find("--limit"), std::string::npos);
  EXPECT_NE(parse_error({"rekey", "--peer", "a", "--peer", "b"}).find("twice"), std::string::npos);
}

TEST(CommandLine, AttestTakesPeerAndNameAndARevokeFlag) {
  const Invocation a = parse_ok({"attest", "laptop", "mfa", "--for", "15m"});
  EXPECT_EQ(a.command, "attest");
  EXPECT_EQ(a.args, (json{{"peer", "laptop"}, {"name", "mfa"}, {"for", "15m"}}));
  const Invocation u = parse_ok({"attest", "laptop", "mfa", "--until=2026-11-21T23:00:00Z"});
  EXPECT_EQ(u.args["until"], "2026-11-21T23:00:00Z");
  const Invocation r = parse_ok({"attest", "laptop", "mfa", "--revoke", "--json"});
  EXPECT_EQ(r.args, (json{{"peer", "laptop"}, {"name", "mfa"}, {"revoke", true}}));
  EXPECT_TRUE(r.json_output);
  EXPECT_EQ(parse_ok({"attestations"}).command, "attestations");
  EXPECT_NE(parse_error({"attest", "laptop"}).find("missing NAME"), std::string::npos);
  EXPECT_NE(parse_error({"attest"}).find("missing PEER"), std::string::npos);
  EXPECT_NE(parse_error({"attest", "a", "b", "c"}).find("unexpected argument 'c'"), std::string::npos);
  EXPECT_NE(parse_error({"status", "--revoke"}).find("unknown option '--revoke'"), std::string::npos);
}

TEST(CommandLine, UsageListsEveryCommand) {
  const std::string text = usage();
  for (const char* c : {"status", "peers", "subnets", "subnets rediscover", "policies", "conntrack",
                        "explain --peer NAME --to ADDR[:PORT] --proto P", "reload", "dns log",
                        "firewall show", "firewall reset", "rekey --peer NAME", "--json",
                        "--socket PATH", "--config FILE"}) {
    EXPECT_NE(text.find(c), std::string::npos) << c;
  }
}

TEST(ConfigFile, ReadsOnlyControlSocket) {
  TempDir dir;
  const std::string path = dir.file("gateway.yaml");
  // Invalid elsewhere (no gateway section, odd peers): only control.socket matters here.
  std::ofstream(path) << "peers: 3\ncontrol:\n  socket: /tmp/x/ctl.sock\n";
  std::string err;
  EXPECT_EQ(socket_from_config(path, &err).value_or(err), "/tmp/x/ctl.sock");

  std::ofstream(path) << "gateway:\n  name: gw\n";
  EXPECT_EQ(socket_from_config(path, &err).value_or(err), kDefaultSocketPath);

  std::ofstream(path) << "control:\n  socket: [a, b]\n";
  EXPECT_FALSE(socket_from_config(path, &err));
  EXPECT_EQ(err, path + ":2:11: control.socket must be a path");

  std::ofstream(path) << "control: {socket: \"unterminated\n";
  EXPECT_FALSE(socket_from_config(path, &err));
  EXPECT_EQ(err.rfind(path + ":", 0), 0u) << err;

  EXPECT_FALSE(socket_from_config(dir.file("missing.yaml"), &err));
  EXPECT_NE(err.find("cannot read"), std::string::npos) << err;
}

// Runs the built sluicectl binary.
struct RunResult {
  int status = -1;
  std::string out;
  std::string err;
};

std::string slurp(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

class SluicectlBinary : public ::testing::Test {
 protected:
  void SetUp() override {
    const char* bin = std::getenv("SLUICECTL");
    if (!bin || !*bin) GTEST_SKIP() << "SLUICECTL is not set (run through meson test)";
    binary_ = bin;
  }

  RunResult run(const std::vector<std::string>& args) {
    const std::string out_path = dir_.file("stdout"), err_path = dir_.file("stderr");
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, 1, out_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    posix_spawn_file_actions_addopen(&actions, 2, err_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    std::vector<char*> argv;
    argv.push_back(binary_.data());
    std::vector<std::string> copies = args;
    for (auto& a : copies) argv.push_back(a.data());
    argv.push_back(nullptr);
    pid_t pid = 0;
    RunResult r;
    const int rc = posix_spawn(&pid, binary_.c_str(), &actions, nullptr, argv.data(), environ);
    posix_spawn_file_actions_destroy(&actions);
    if (rc != 0) {
      ADD_FAILURE() << "posix_spawn " << binary_ << ": " << rc;
      return r;
    }
    int wstatus = 0;
    waitpid(pid, &wstatus, 0);
    r.status = WIFEXITED(wstatus) ? WEXITSTATUS(wstatus) : -1;
    r.out = slurp(out_path);
    r.err = slurp(err_path);
    return r;
  }

  // A gateway stand-in answering status, explain (echoing its args) and refusing rekey.
  void start_server() {
    socket_ = dir_.file("sluice.sock");
    server_.add_handler("status", [](const json&) {
      return Reply::success(json::parse(R"({
        "gateway": {"name": "menlo-park-1", "public_key": "R2F0ZXdheUtleQ==", "listen_port": 51820,
                    "virtual_address": "100.64.0.1", "uptime_s": 12.5, "workers": 1},
        "ports": [],
        "peers": [{"name": "laptop-1", "state": "up", "endpoint": "192.0.2.10:40000",
                   "latest_handshake_age_s": null, "rx_bytes": 3545, "tx_bytes": 4169}],
        "handshakes": {}, "drops": {}})"));
    });
    server_.add_handler("explain", [](const json& args) { return Reply::success(args); });
    server_.add_handler("policies", [](const json&) {
      return Reply::success(json::parse(R"({"policy_generation": 2, "policies": [
        {"index": 0, "name": "office", "senders": ["users"],
         "subnets": [{"name": "Office LAN", "prefix": "198.51.100.0/24"}], "filter": [],
         "acl": [{"index": 0, "action": "deny", "protocol": "tcp", "ports": ["22"], "text": "deny tcp 22"},
                 {"index": 1, "action": "allow", "protocol": "any", "ports": [], "text": "allow any"}],
         "require": {"source_ips": [], "attributes": []}, "gateway_priority": "balanced",
         "peers": ["laptop-1"], "peers_failing_require": []}]})"));
    });
    server_.add_handler("rekey", [](const json& args) {
      return Reply::failure("no peer named '" + args.value("peer", std::string()) + "'");
    });
    std::string err;
    ASSERT_TRUE(server_.listen(socket_, &err)) << err;
    thread_ = std::make_unique<ServerThread>(server_);
  }

  void TearDown() override { thread_.reset(); }

  TempDir dir_;
  std::string binary_;
  std::string socket_;
  Server server_;
  std::unique_ptr<ServerThread> thread_;
};

TEST_F(SluicectlBinary, UsageErrorsExitTwo) {
  for (const std::vector<std::string>& args :
       std::vector<std::vector<std::string>>{{},
                                             {"frobnicate"},
                                             {"firewall"},
                                             {"explain", "--peer", "p"},
                                             {"--socket", "a", "--config", "b", "status"}}) {
    const RunResult r = run(args);
    EXPECT_EQ(r.status, 2);
    EXPECT_NE(r.err.find("usage: sluicectl"), std::string::npos) << r.err;
    EXPECT_EQ(r.out, "");
  }
}

TEST_F(SluicectlBinary, HelpExitsZero) {
  const RunResult r = run({"--help"});
  EXPECT_EQ(r.status, 0);
  EXPECT_EQ(r.out, usage());
}

TEST_F(SluicectlBinary, UnreachableSocketExitsOne) {
  const RunResult r = run({"--socket", dir_.file("nobody.sock"), "status"});
  EXPECT_EQ(r.status, 1);
  EXPECT_EQ(r.err.rfind("sluicectl: cannot connect to " + dir_.file("nobody.sock"), 0), 0u) << r.err;
  EXPECT_EQ(r.out, "");
}

TEST_F(SluicectlBinary, UnreadableConfigExitsOne) {
  const RunResult r = run({"--config", dir_.file("missing.yaml"), "status"});
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.err.find("cannot read"), std::string::npos) << r.err;
}

TEST_F(SluicectlBinary, StatusFormatted) {
  start_server();
  const RunResult r = run({"--socket", socket_, "status"});
  EXPECT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.err, "");
  EXPECT_EQ(r.out,
            "Gateway: menlo-park-1\n"
            "   Public key. . . . . : R2F0ZXdheUtleQ==\n"
            "   Listening . . . . . : udp/51820\n"
            "   Virtual address . . : 100.64.0.1\n"
            "   Uptime. . . . . . . : 12 seconds\n"
            "   Workers . . . . . . : 1\n"
            "\n"
            "Peer: laptop-1\n"
            "   Peer state. . . . . : Up\n"
            "   Endpoint. . . . . . : Udp/192.0.2.10:40000\n"
            "   Latest handshake. . : never\n"
            "   Transfer. . . . . . : 3.462 KB received, 4.071 KB sent\n");
}

TEST_F(SluicectlBinary, StatusJson) {
  start_server();
  const RunResult r = run({"status", "--json", "--socket", socket_});
  EXPECT_EQ(r.status, 0) << r.err;
  const json result = json::parse(r.out);
  EXPECT_EQ(result["gateway"]["name"], "menlo-park-1");
  EXPECT_EQ(r.out, result.dump(2) + "\n");
}

TEST_F(SluicectlBinary, Policies) {
  start_server();
  const RunResult r = run({"--socket", socket_, "policies"});
  EXPECT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.out,
            "Policy: office\n"
            "   Senders . . . . . . : users\n"
            "   Subnets . . . . . . : 198.51.100.0/24 (Office LAN)\n"
            "   Filter. . . . . . . : none (the whole subnets)\n"
            "   ACL . . . . . . . . : 0: deny tcp 22\n"
            "                         1: allow any\n"
            "   Require . . . . . . : none\n"
            "   Gateway priority. . : balanced\n"
            "   Peers . . . . . . . : laptop-1\n");
  const RunResult j = run({"--socket", socket_, "policies", "--json"});
  EXPECT_EQ(j.status, 0) << j.err;
  const json result = json::parse(j.out);
  EXPECT_EQ(result["policies"][0]["acl"][1]["index"], 1);
  EXPECT_EQ(result["policies"][0]["peers"], (json{"laptop-1"}));
}

TEST_F(SluicectlBinary, SocketFromConfig) {
  start_server();
  const std::string config = dir_.file("gateway.yaml");
  std::ofstream(config) << "gateway: {name: x}\ncontrol:\n  socket: " << socket_ << "\n";
  const RunResult r = run({"--config", config, "explain", "--peer", "laptop-1", "--to",
                           "198.51.100.10:443", "--proto", "tcp", "--json"});
  EXPECT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(json::parse(r.out), (json{{"peer", "laptop-1"}, {"to", "198.51.100.10:443"},
                                      {"address", "198.51.100.10"}, {"port", 443},
                                      {"proto", "tcp"}}));
}

TEST_F(SluicectlBinary, RefusedRequestExitsOne) {
  start_server();
  const RunResult r = run({"--socket", socket_, "rekey", "--peer", "ghost"});
  EXPECT_EQ(r.status, 1);
  EXPECT_EQ(r.err, "sluicectl: no peer named 'ghost'\n");
  EXPECT_EQ(r.out, "");
  const RunResult unknown = run({"--socket", socket_, "firewall", "show"});
  EXPECT_EQ(unknown.status, 1);
  EXPECT_EQ(unknown.err, "sluicectl: unknown command 'firewall_show'\n");
}

}  // namespace
}  // namespace sluice::ctl
