// control.watch_config: the configuration file's directory is watched with inotify (a file
// replaced by rename, as editors and config-management tools do, is seen too). Changes are
// debounced (kWatchDebounceNs of quiet), then reloaded exactly as SIGHUP and `sluicectl reload`
// do. The descriptor is non-blocking and polled from the control loop.
#include <sys/inotify.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>

#include "controlplane/gateway.h"
#include "controlplane/log.h"

namespace sluice::cp {

uint64_t file_hash(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return 0;
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  return uint64_t(std::hash<std::string>{}(bytes)) | 1;  // never 0
}

void Gateway::watch_config() {
  if (!cfg_.control.watch_config || config_path_.empty()) return;
  const std::filesystem::path path = std::filesystem::absolute(config_path_);
  const std::string dir = path.parent_path().string();
  watch_name_ = path.filename().string();
  watch_fd_ = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
  if (watch_fd_ < 0) {
    log::warn("config_watch_failed", {{"error", strerror(errno)}});
    return;
  }
  watch_wd_ = inotify_add_watch(watch_fd_, dir.c_str(),
                                IN_CLOSE_WRITE | IN_MOVED_TO | IN_CREATE | IN_MODIFY | IN_DELETE | IN_ATTRIB);
  if (watch_wd_ < 0) {
    log::warn("config_watch_failed", {{"directory", dir}, {"error", strerror(errno)}});
    close(watch_fd_);
    watch_fd_ = -1;
    return;
  }
  reload_file_hash_ = file_hash(config_path_);  // what start() loaded
  log::info("config_watch", {{"directory", dir}, {"file", watch_name_}});
}

void Gateway::poll_config_watch(uint64_t now) {
  if (watch_fd_ < 0) return;
  alignas(inotify_event) char buf[4096];
  for (;;) {
    const ssize_t n = read(watch_fd_, buf, sizeof buf);
    if (n <= 0) break;  // EAGAIN: nothing more
    for (ssize_t off = 0; off < n;) {
      const auto* ev = reinterpret_cast<const inotify_event*>(buf + off);
      off += ssize_t(sizeof(inotify_event) + ev->len);
      // Lost events (queue overflow): reload to be safe. Each change restarts the quiet period.
      const bool ours = (ev->mask & IN_Q_OVERFLOW) || (ev->len > 0 && watch_name_ == ev->name);
      if (!ours) continue;
      if (watch_due_ns_ == 0) watch_first_ns_ = now;
      watch_due_ns_ = now + kWatchDebounceNs;
    }
  }
  if (watch_due_ns_ == 0 || now < watch_due_ns_) return;
  watch_due_ns_ = 0;
  if (access(config_path_.c_str(), R_OK) != 0) return;  // deleted (or mid-rename): wait for it
  if (file_hash(config_path_) == reload_file_hash_) {
    log::debug("config_unchanged", {{"file", config_path_}});
    return;
  }
  ++watch_reloads_;
  log::info("config_changed", {{"file", config_path_},
                               {"since_change_ms", std::to_string((now - watch_first_ns_) / 1'000'000)}});
  std::vector<std::string> errors;
  begin_reload(&errors, 0);  // the same path as SIGHUP: errors and the outcome are logged
}

}  // namespace sluice::cp
