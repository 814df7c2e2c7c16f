// sluiced: the Sluice gateway. `sluiced --config FILE` runs in the foreground and logs to
// stderr; `sluiced --check --config FILE` validates the file and exits.
#include <csignal>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <string>

#include <rte_eal.h>

#include "controlplane/config/config.h"
#include "controlplane/gateway.h"
#include "controlplane/log.h"

namespace {

void usage(FILE* f) {
  fprintf(f,
          "usage: sluiced --config FILE [--check] [--log-level debug|info|warn|error]\n"
          "  --config FILE   the gateway configuration (gateway.yaml)\n"
          "  --check         validate FILE and exit: 0 when valid, 1 with FILE:LINE:COL errors\n");
}

void on_signal(int) { sluice::cp::Gateway::request_stop(); }
void on_hangup(int) { sluice::cp::Gateway::request_reload(); }

}  // namespace

int main(int argc, char** argv) {
  std::string config_path;
  bool check = false;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--config" && i + 1 < argc) {
      config_path = argv[++i];
    } else if (a == "--check") {
      check = true;
    } else if (a == "--log-level" && i + 1 < argc) {
      std::string l = argv[++i];
      using sluice::log::Level;
      if (l == "debug") sluice::log::set_level(Level::debug);
      else if (l == "info") sluice::log::set_level(Level::info);
      else if (l == "warn") sluice::log::set_level(Level::warn);
      else if (l == "error") sluice::log::set_level(Level::error);
      else { usage(stderr); return 2; }
    } else if (a == "--help" || a == "-h") {
      usage(stdout);
      return 0;
    } else {
      usage(stderr);
      return 2;
    }
  }
  if (config_path.empty()) {
    usage(stderr);
    return 2;
  }

  auto loaded = sluice::config::load_file(config_path);
  for (const auto& e : loaded.errors) fprintf(stderr, "%s\n", e.to_string().c_str());
  if (!loaded.config) return 1;
  if (check) {
    printf("%s: OK\n", config_path.c_str());
    return 0;
  }

  struct sigaction sa{};
  sa.sa_handler = on_signal;
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
  struct sigaction hup{};
  hup.sa_handler = on_hangup;
  sigaction(SIGHUP, &hup, nullptr);

  int rc = 0;
  {
    sluice::cp::Gateway gw(std::move(*loaded.config), config_path);
    std::string err;
    if (!gw.start(&err)) {
      sluice::log::error("start_failed", {{"error", err}});
      rc = 1;
    } else {
      gw.run();
    }
  }
  // Our runtime directory (per-process file prefix) holds only sockets and locks by now.
  const std::string runtime_dir = rte_eal_get_runtime_dir();
  rte_eal_cleanup();
  if (runtime_dir.find("/sluice-") != std::string::npos) {
    std::error_code ec;
    std::filesystem::remove_all(runtime_dir, ec);
  }
  return rc;
}
