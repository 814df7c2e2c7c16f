// sluicectl: asks a running sluiced over its control socket and prints the answer.
// Exit status: 0 success, 1 refused or unreachable, 2 usage error.
#include <cstdio>
#include <iostream>
#include <string>
#include <vector>

#include "controlplane/ctl/cli.h"
#include "controlplane/ctl/client.h"
#include "controlplane/ctl/format.h"
#include "controlplane/ctl/protocol.h"

namespace {

constexpr int kExitOk = 0;
constexpr int kExitFailed = 1;
constexpr int kExitUsage = 2;

int fail(const std::string& message) {
  std::cerr << "sluicectl: " << message << "\n";
  return kExitFailed;
}

}  // namespace

int main(int argc, char** argv) {
  using namespace sluice::ctl;
  std::string err;
  const auto inv = parse_command_line(std::vector<std::string>(argv + 1, argv + argc), &err);
  if (!inv) {
    std::cerr << "sluicectl: " << err << "\n\n" << usage();
    return kExitUsage;
  }
  if (inv->help) {
    std::cout << usage();
    return kExitOk;
  }

  std::string socket_path = inv->socket_path;
  if (socket_path.empty()) {
    if (inv->config_path.empty()) {
      socket_path = kDefaultSocketPath;
    } else if (auto from_config = socket_from_config(inv->config_path, &err)) {
      socket_path = *from_config;
    } else {
      return fail(err);
    }
  }

  const auto response = request(socket_path, inv->request(), &err, inv->timeout_ms);
  if (!response) return fail(err);
  if (!(*response)["ok"].get<bool>()) {
    const auto& e = (*response)["error"];
    return fail(e.is_string() ? e.get<std::string>() : std::string("request refused"));
  }
  const nlohmann::json result = response->value("result", nlohmann::json());
  std::string text;
  if (inv->json_output) {
    text = result.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
  } else {
    text = format_result(inv->command, result);
    if (!text.empty() && text.back() != '\n') text += '\n';
  }
  std::fwrite(text.data(), 1, text.size(), stdout);
  return std::fflush(stdout) == 0 ? kExitOk : kExitFailed;
}
