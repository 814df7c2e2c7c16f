#include "controlplane/ctl/server.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <exception>
#include <optional>
#include <utility>

namespace sluice::ctl {

namespace {

constexpr int kListenBacklog = 16;
// Per poll() call and client: bounds the time one busy client can hold the control thread.
constexpr std::size_t kMaxReadPerPoll = 256 * 1024;
constexpr std::size_t kMaxAcceptPerPoll = 16;

std::string errno_text(int e) { return std::strerror(e); }

bool fill_sockaddr(const std::string& path, sockaddr_un* addr, std::string* err) {
  std::memset(addr, 0, sizeof(*addr));
  addr->sun_family = AF_UNIX;
  if (path.empty() || path.size() >= sizeof(addr->sun_path)) {
    if (err) *err = "socket path '" + path + "' is empty or longer than " +
                    std::to_string(sizeof(addr->sun_path) - 1) + " bytes";
    return false;
  }
  std::memcpy(addr->sun_path, path.data(), path.size());
  return true;
}

// mkdir -p for the socket's directory; directories we create get 0755 whatever the umask.
bool make_parent_dirs(const std::string& path, std::string* err) {
  const auto slash = path.rfind('/');
  if (slash == std::string::npos || slash == 0) return true;
  const std::string dir = path.substr(0, slash);
  std::size_t pos = 0;
  while (pos != std::string::npos) {
    pos = dir.find('/', pos + 1);
    const std::string prefix = dir.substr(0, pos);
    if (prefix.empty()) continue;
    if (::mkdir(prefix.c_str(), 0755) == 0) {
      ::chmod(prefix.c_str(), 0755);
      continue;
    }
    if (errno == EEXIST) {
      struct stat st {};
      if (::stat(prefix.c_str(), &st) == 0 && S_ISDIR(st.st_mode)) continue;
      if (err) *err = "'" + prefix + "' exists and is not a directory";
      return false;
    }
    if (err) *err = "cannot create directory '" + prefix + "': " + errno_text(errno);
    return false;
  }
  return true;
}

// Is a server accepting connections on `addr`? A socket file nobody listens on refuses.
bool live_server_answers(const sockaddr_un& addr) {
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  const int rc = ::connect(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof(addr));
  const int e = errno;
  ::close(fd);
  // EAGAIN: the listener's backlog is full, which still means someone is listening.
  return rc == 0 || e == EAGAIN || e == EINPROGRESS;
}

}  // namespace

Server::Server(ServerLimits limits) : limits_(limits) {}

Server::~Server() { close(); }

bool Server::listen(const std::string& path, std::string* err) {
  if (listen_fd_ >= 0) {
    if (err) *err = "already listening on '" + path_ + "'";
    return false;
  }
  sockaddr_un addr{};
  if (!fill_sockaddr(path, &addr, err)) return false;
  if (!make_parent_dirs(path, err)) return false;

  struct stat st {};
  if (::lstat(path.c_str(), &st) == 0) {
    if (!S_ISSOCK(st.st_mode)) {
      if (err) *err = "'" + path + "' exists and is not a socket";
      return false;
    }
    if (live_server_answers(addr)) {
      if (err) *err = "another server is already listening on '" + path + "'";
      return false;
    }
    if (::unlink(path.c_str()) != 0 && errno != ENOENT) {
      if (err) *err = "cannot remove stale socket '" + path + "': " + errno_text(errno);
      return false;
    }
  }

  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    if (err) *err = "socket: " + errno_text(errno);
    return false;
  }
  // On Linux the socket inode's mode (masked by the umask) becomes the file's mode at bind():
  // setting it first leaves no window in which the file is reachable by others.
  ::fchmod(fd, 0600);
  if (::bind(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)) != 0) {
    if (err) *err = "bind '" + path + "': " + errno_text(errno);
    ::close(fd);
    return false;
  }
  if (::chmod(path.c_str(), 0600) != 0 || ::lstat(path.c_str(), &st) != 0) {
    if (err) *err = "chmod '" + path + "': " + errno_text(errno);
    ::unlink(path.c_str());
    ::close(fd);
    return false;
  }
  if (::listen(fd, kListenBacklog) != 0) {
    if (err) *err = "listen '" + path + "': " + errno_text(errno);
    ::unlink(path.c_str());
    ::close(fd);
    return false;
  }
  listen_fd_ = fd;
  path_ = path;
  socket_dev_ = st.st_dev;
  socket_ino_ = st.st_ino;
  return true;
}

void Server::add_handler(std::string command, Handler handler) {
  handlers_[std::move(command)] = std::move(handler);
}

std::string Server::handle_line(const std::string& line) {
  uint64_t pending = 0;
  nlohmann::json id;
  return dispatch(line, &pending, &id);
}

std::string Server::dispatch(const std::string& line, uint64_t* pending, nlohmann::json* id) {
  *pending = 0;
  nlohmann::json request;
  try {
    request = nlohmann::json::parse(line);
  } catch (const nlohmann::json::exception& e) {
    return encode_line(Reply::failure(std::string("malformed request: ") + e.what()).to_json());
  }
  Reply reply;
  if (!request.is_object()) {
    reply = Reply::failure("malformed request: expected a JSON object");
  } else if (!request.contains("command") || !request["command"].is_string()) {
    reply = Reply::failure("malformed request: missing string 'command'");
  } else {
    const auto& command = request["command"].get_ref<const std::string&>();
    const nlohmann::json args = request.value("args", nlohmann::json::object());
    if (!args.is_object() && !args.is_null()) {
      reply = Reply::failure("malformed request: 'args' must be an object");
    } else if (auto it = handlers_.find(command); it == handlers_.end()) {
      reply = Reply::failure("unknown command '" + command + "'");
    } else {
      try {
        reply = it->second(args.is_null() ? nlohmann::json::object() : args);
      } catch (const std::exception& e) {
        reply = Reply::failure(command + ": " + e.what());
      } catch (...) {
        reply = Reply::failure(command + ": internal error");
      }
    }
  }
  if (request.is_object() && request.contains("id")) *id = request["id"];
  if (reply.pending != 0) {
    *pending = reply.pending;
    return "";
  }
  nlohmann::json response = reply.to_json();
  if (request.is_object() && request.contains("id")) response["id"] = request["id"];
  return encode_line(response);
}

bool Server::complete(uint64_t token, const Reply& reply) {
  if (token == 0) return false;
  for (auto& c : clients_) {
    if (c.fd < 0 || c.waiting != token) continue;
    nlohmann::json response = reply.to_json();
    if (!c.waiting_id.is_null()) response["id"] = c.waiting_id;
    c.out += encode_line(response);
    c.waiting = 0;
    c.waiting_id = nullptr;
    c.last_activity = Clock::now();
    // Requests that arrived meanwhile, then the end of input if the client had closed its side.
    process_input(c, c.eof_seen);
    if (c.fd >= 0) flush_client(c);
    return true;
  }
  return false;
}

std::size_t Server::pending_count() const {
  return static_cast<std::size_t>(
      std::count_if(clients_.begin(), clients_.end(), [](const Client& c) { return c.fd >= 0 && c.waiting != 0; }));
}

void Server::poll(int timeout_ms) {
  if (listen_fd_ < 0 && clients_.empty()) return;

  std::vector<pollfd> pfds;
  pfds.reserve(clients_.size() + 1);
  pfds.push_back({listen_fd_, static_cast<short>(listen_fd_ >= 0 ? POLLIN : 0), 0});
  for (const auto& c : clients_) {
    short events = 0;
    if (wants_read(c)) events |= POLLIN;
    if (wants_write(c)) events |= POLLOUT;
    pfds.push_back({c.fd, events, 0});
  }

  const int n = ::poll(pfds.data(), pfds.size(), effective_timeout(timeout_ms, Clock::now()));
  if (n > 0) {
    const std::size_t existing = clients_.size();  // accept_clients() appends
    for (std::size_t i = 0; i < existing; ++i) {
      Client& c = clients_[i];
      const short rev = pfds[i + 1].revents;
      if (c.fd < 0 || rev == 0) continue;
      if (rev & POLLNVAL) {
        close_client(c);
        continue;
      }
      if (rev & (POLLIN | POLLHUP | POLLERR)) {
        if (wants_read(c)) {
          read_client(c);  // recv() reports the hang-up or the error
        } else if (rev & (POLLHUP | POLLERR)) {
          if (wants_write(c)) flush_client(c);
          else close_client(c);
        }
      }
      if (c.fd >= 0 && (rev & POLLOUT) && wants_write(c)) flush_client(c);
    }
    if (pfds[0].revents & POLLIN) accept_clients();
  }
  expire_idle(Clock::now());
  reap_closed();
}

void Server::close() {
  for (auto& c : clients_) close_client(c);
  clients_.clear();
  if (listen_fd_ < 0) return;
  ::close(listen_fd_);
  listen_fd_ = -1;
  struct stat st {};
  if (::lstat(path_.c_str(), &st) == 0 && st.st_dev == socket_dev_ && st.st_ino == socket_ino_) {
    ::unlink(path_.c_str());
  }
  path_.clear();
}

void Server::accept_clients() {
  for (std::size_t i = 0; i < kMaxAcceptPerPoll; ++i) {
    const int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) return;  // EAGAIN, or a transient error (EMFILE, ECONNABORTED): try next poll
    if (clients_.size() >= limits_.max_clients) {
      reject_client(fd, "too many control connections (limit " +
                            std::to_string(limits_.max_clients) + ")");
      continue;
    }
    Client c;
    c.fd = fd;
    c.last_activity = Clock::now();
    clients_.push_back(std::move(c));
  }
}

void Server::reject_client(int fd, const std::string& message) {
  // Best effort: a fresh socket's buffer takes one short line without blocking.
  const std::string line = encode_line(Reply::failure(message).to_json());
  [[maybe_unused]] const ssize_t n = ::send(fd, line.data(), line.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
  ::close(fd);
}

bool Server::wants_read(const Client& c) const {
  // A client waiting for a deferred reply is not read: its next requests wait in the socket.
  return !c.closing && c.waiting == 0 && c.out.size() - c.out_offset < limits_.max_pending_output;
}

void Server::read_client(Client& c) {
  char buf[16 * 1024];
  std::size_t total = 0;
  bool eof = false;
  while (total < kMaxReadPerPoll) {
    const ssize_t n = ::recv(c.fd, buf, sizeof(buf), MSG_DONTWAIT);
    if (n > 0) {
      c.in.append(buf, static_cast<std::size_t>(n));
      total += static_cast<std::size_t>(n);
      continue;
    }
    if (n == 0) {
      eof = true;
      break;
    }
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) break;
    close_client(c);  // ECONNRESET and the like: nobody left to answer
    return;
  }
  if (total > 0) c.last_activity = Clock::now();
  process_input(c, eof);
  if (c.fd >= 0) flush_client(c);
}

void Server::process_input(Client& c, bool eof) {
  const auto too_large = [&] {
    c.out += encode_line(Reply::failure("request too large (limit " +
                                        std::to_string(limits_.max_request_bytes) + " bytes)")
                             .to_json());
    c.closing = true;
    c.in.clear();
  };
  std::size_t start = 0;
  bool backpressure = false;
  if (eof) c.eof_seen = true;
  while (!c.closing && c.waiting == 0) {
    const auto nl = c.in.find('\n', start);
    if (nl == std::string::npos) break;
    if (nl - start > limits_.max_request_bytes) {
      too_large();
      return;
    }
    std::string line = c.in.substr(start, nl - start);
    start = nl + 1;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.find_first_not_of(" \t") == std::string::npos) continue;
    c.out += dispatch(line, &c.waiting, &c.waiting_id);
    if (c.out.size() - c.out_offset >= limits_.max_pending_output) {
      backpressure = true;  // the rest waits until the client has read its replies
      break;
    }
  }
  c.in.erase(0, start);
  if (backpressure || c.waiting != 0) return;  // the rest (and the end of input) waits
  // Only a partial line is left.
  if (c.in.size() > limits_.max_request_bytes) {
    too_large();
    return;
  }
  if (eof) {
    // A last request without its newline (`printf '{...}' | socat`) still gets an answer.
    if (c.in.find_first_not_of(" \t\r\n") != std::string::npos) c.out += dispatch(c.in, &c.waiting, &c.waiting_id);
    c.in.clear();
    c.closing = true;
  }
}

void Server::flush_client(Client& c) {
  for (;;) {
    while (c.out_offset < c.out.size()) {
      const ssize_t n = ::send(c.fd, c.out.data() + c.out_offset, c.out.size() - c.out_offset,
                               MSG_NOSIGNAL | MSG_DONTWAIT);
      if (n > 0) {
        c.out_offset += static_cast<std::size_t>(n);
        c.last_activity = Clock::now();
        continue;
      }
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
        // Partial write: keep the rest for POLLOUT, dropping what is sent once it dominates.
        if (c.out_offset > (1u << 20) && c.out_offset * 2 > c.out.size()) {
          c.out.erase(0, c.out_offset);
          c.out_offset = 0;
        }
        return;
      }
      close_client(c);  // EPIPE, ECONNRESET: the client went away
      return;
    }
    c.out.clear();
    c.out_offset = 0;
    if (c.waiting != 0) return;  // its reply comes with complete()
    if (c.closing) {
      close_client(c);
      return;
    }
    // Requests left waiting while the output was full.
    if (c.in.find('\n') == std::string::npos) return;
    process_input(c, false);
    if (c.out.empty() && !c.closing) return;
  }
}

int Server::effective_timeout(int timeout_ms, Clock::time_point now) const {
  if (limits_.idle_timeout_ms < 0) return timeout_ms;
  // Clients waiting for a deferred reply do not expire.
  std::optional<Clock::time_point> first;
  for (const auto& c : clients_) {
    if (c.waiting == 0) first = first ? std::min(*first, c.last_activity) : c.last_activity;
  }
  if (!first) return timeout_ms;
  const auto earliest = *first;
  const auto deadline = earliest + std::chrono::milliseconds(limits_.idle_timeout_ms);
  const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - now).count();
  const int until_idle = static_cast<int>(std::clamp<long long>(left + 1, 0, 1'000'000));
  return timeout_ms < 0 ? until_idle : std::min(timeout_ms, until_idle);
}

void Server::expire_idle(Clock::time_point now) {
  if (limits_.idle_timeout_ms < 0) return;
  const auto limit = std::chrono::milliseconds(limits_.idle_timeout_ms);
  for (auto& c : clients_) {
    if (c.fd >= 0 && c.waiting == 0 && now - c.last_activity >= limit) close_client(c);
  }
}

void Server::close_client(Client& c) {
  if (c.fd >= 0) ::close(c.fd);
  c.fd = -1;
}

void Server::reap_closed() {
  std::erase_if(clients_, [](const Client& c) { return c.fd < 0; });
}

}  // namespace sluice::ctl
