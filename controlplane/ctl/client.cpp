#include "controlplane/ctl/client.h"

#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <utility>

#include "controlplane/ctl/protocol.h"

namespace sluice::ctl {

namespace {

using Clock = std::chrono::steady_clock;

struct Deadline {
  explicit Deadline(int timeout_ms)
      : infinite(timeout_ms < 0), at(Clock::now() + std::chrono::milliseconds(timeout_ms)) {}
  // Milliseconds left for poll(): -1 when infinite, 0 once expired.
  int left_ms() const {
    if (infinite) return -1;
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(at - Clock::now()).count();
    return left <= 0 ? 0 : static_cast<int>(left);
  }
  bool infinite;
  Clock::time_point at;
};

// Waits for `events` on `fd`; false with `err` set on timeout or error.
bool wait_for(int fd, short events, const Deadline& deadline, const char* what, std::string* err) {
  for (;;) {
    pollfd p{fd, events, 0};
    const int n = ::poll(&p, 1, deadline.left_ms());
    if (n > 0) return true;
    if (n == 0) {
      if (err) *err = std::string("timed out ") + what;
      return false;
    }
    if (errno != EINTR) {
      if (err) *err = std::string("poll: ") + std::strerror(errno);
      return false;
    }
  }
}

}  // namespace

Connection::~Connection() { close(); }

Connection::Connection(Connection&& other) noexcept
    : fd_(std::exchange(other.fd_, -1)), buffer_(std::move(other.buffer_)) {}

Connection& Connection::operator=(Connection&& other) noexcept {
  if (this != &other) {
    close();
    fd_ = std::exchange(other.fd_, -1);
    buffer_ = std::move(other.buffer_);
  }
  return *this;
}

void Connection::close() {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
  buffer_.clear();
}

bool Connection::connect(const std::string& socket_path, std::string* err, int timeout_ms) {
  close();
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (socket_path.empty() || socket_path.size() >= sizeof(addr.sun_path)) {
    if (err) *err = "invalid socket path '" + socket_path + "'";
    return false;
  }
  std::memcpy(addr.sun_path, socket_path.data(), socket_path.size());
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    if (err) *err = std::string("socket: ") + std::strerror(errno);
    return false;
  }
  const Deadline deadline(timeout_ms);
  // A Unix socket connect fails with EAGAIN (not EINPROGRESS) while the backlog is full: retry.
  for (;;) {
    if (::connect(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)) == 0) break;
    const int e = errno;
    if (e == EINTR) continue;
    if (e == EAGAIN && deadline.left_ms() != 0) {
      ::usleep(10'000);
      continue;
    }
    if (e == EINPROGRESS) {
      if (!wait_for(fd, POLLOUT, deadline, "connecting", err)) {
        ::close(fd);
        return false;
      }
      int so_error = 0;
      socklen_t len = sizeof(so_error);
      ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &so_error, &len);
      if (so_error == 0) break;
      errno = so_error;
    } else {
      errno = e;
    }
    if (err) {
      *err = "cannot connect to " + socket_path + ": " + std::strerror(errno);
      if (errno == ENOENT || errno == ECONNREFUSED) *err += " (is sluiced running?)";
      if (errno == EACCES) *err += " (the control socket is for root only)";
    }
    ::close(fd);
    return false;
  }
  fd_ = fd;
  return true;
}

std::optional<nlohmann::json> Connection::request(const nlohmann::json& req, std::string* err,
                                                  int timeout_ms) {
  if (fd_ < 0) {
    if (err) *err = "not connected";
    return std::nullopt;
  }
  const Deadline deadline(timeout_ms);
  const std::string line = encode_line(req);
  std::size_t sent = 0;
  while (sent < line.size()) {
    const ssize_t n = ::send(fd_, line.data() + sent, line.size() - sent, MSG_NOSIGNAL);
    if (n > 0) {
      sent += static_cast<std::size_t>(n);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      if (!wait_for(fd_, POLLOUT, deadline, "sending the request", err)) return std::nullopt;
      continue;
    }
    if (err) *err = std::string("sending the request: ") + std::strerror(errno);
    close();
    return std::nullopt;
  }

  std::size_t nl;
  while ((nl = buffer_.find('\n')) == std::string::npos) {
    if (buffer_.size() > kMaxResponseBytes) {
      if (err) *err = "response too large";
      close();
      return std::nullopt;
    }
    char buf[64 * 1024];
    const ssize_t n = ::recv(fd_, buf, sizeof(buf), 0);
    if (n > 0) {
      buffer_.append(buf, static_cast<std::size_t>(n));
      continue;
    }
    if (n == 0) {
      if (err) *err = "the gateway closed the connection without answering";
      close();
      return std::nullopt;
    }
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
      if (!wait_for(fd_, POLLIN, deadline, "waiting for the gateway's answer", err)) {
        return std::nullopt;
      }
      continue;
    }
    if (err) *err = std::string("reading the response: ") + std::strerror(errno);
    close();
    return std::nullopt;
  }
  const std::string response_line = buffer_.substr(0, nl);
  buffer_.erase(0, nl + 1);
  nlohmann::json response;
  try {
    response = nlohmann::json::parse(response_line);
  } catch (const nlohmann::json::exception& e) {
    if (err) *err = std::string("malformed response: ") + e.what();
    return std::nullopt;
  }
  if (!response.is_object() || !response.contains("ok") || !response["ok"].is_boolean()) {
    if (err) *err = "malformed response: no boolean 'ok'";
    return std::nullopt;
  }
  return response;
}

std::optional<nlohmann::json> request(const std::string& socket_path, const nlohmann::json& req,
                                      std::string* err, int timeout_ms) {
  const Deadline deadline(timeout_ms);
  Connection conn;
  if (!conn.connect(socket_path, err, timeout_ms)) return std::nullopt;
  return conn.request(req, err, deadline.left_ms());
}

}  // namespace sluice::ctl
