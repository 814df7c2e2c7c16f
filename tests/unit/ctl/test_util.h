// Shared fixtures of the ctl unit tests: a temporary directory and a server polled by a thread.
#pragma once

#include <stdlib.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <filesystem>
#include <string>
#include <thread>

#include "controlplane/ctl/server.h"

namespace sluice::ctl::testing {

class TempDir {
 public:
  TempDir() {
    char tmpl[] = "/tmp/sluice-ctl-XXXXXX";
    path_ = ::mkdtemp(tmpl);
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  const std::string& path() const { return path_; }
  std::string file(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

// Polls a server (already listening, handlers added) until destroyed. The server is touched only
// by this thread while it runs.
class ServerThread {
 public:
  explicit ServerThread(Server& server)
      : thread_([this, &server] {
          while (!stop_) server.poll(10);
        }) {}
  ~ServerThread() { stop(); }
  void stop() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
  }

 private:
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

// A raw blocking connection, for what the Connection class would never send.
inline int raw_connect(const std::string& path) {
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, path.c_str(), sizeof(addr.sun_path) - 1);
  if (::connect(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)) != 0) {
    ::close(fd);
    return -1;
  }
  timeval tv{5, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  return fd;
}

inline bool send_all(int fd, const std::string& data) {
  std::size_t sent = 0;
  while (sent < data.size()) {
    const ssize_t n = ::send(fd, data.data() + sent, data.size() - sent, MSG_NOSIGNAL);
    if (n <= 0) return false;
    sent += static_cast<std::size_t>(n);
  }
  return true;
}

// Reads one line (without '\n'); empty when the connection closes first.
inline std::string read_line(int fd) {
  std::string line;
  char ch;
  while (::recv(fd, &ch, 1, 0) == 1) {
    if (ch == '\n') return line;
    line.push_back(ch);
  }
  return {};
}

// True when the peer closed the connection (recv returns 0) within the socket's timeout.
inline bool closed_by_peer(int fd) {
  char ch;
  return ::recv(fd, &ch, 1, 0) == 0;
}

}  // namespace sluice::ctl::testing
