// The control socket server. It lives in the gateway's control thread and is driven by that
// thread's loop through poll(): single-threaded, non-blocking, no threads of its own.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstddef>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "controlplane/ctl/protocol.h"

namespace sluice::ctl {

using Handler = std::function<Reply(const nlohmann::json& args)>;

struct ServerLimits {
  std::size_t max_clients = 64;                   // further connections get an error line and are closed
  std::size_t max_request_bytes = kMaxRequestBytes;
  int idle_timeout_ms = 30'000;                   // a client silent this long is disconnected
  std::size_t max_pending_output = 64 * 1024 * 1024;  // stop reading a client that does not read its replies
};

class Server {
 public:
  explicit Server(ServerLimits limits = {});
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Binds and listens on a Unix stream socket at `path` (mode 0600: root only). Creates missing
  // parent directories (0755). Refuses when another live server answers on `path` or when `path`
  // exists and is not a socket; a stale socket file is replaced.
  bool listen(const std::string& path, std::string* err);

  // Registers the handler of `command`; a second registration replaces the first. Handlers run in
  // the thread that calls poll(); an exception they throw becomes a failure reply.
  void add_handler(std::string command, Handler handler);

  // Waits up to `timeout_ms` (0: do not wait, negative: until something happens) for activity,
  // then accepts connections, reads, dispatches complete request lines and writes replies.
  void poll(int timeout_ms);

  // Closes every connection and the listening socket, and removes the socket file this server
  // created (unless something else has replaced it since).
  void close();

  bool listening() const { return listen_fd_ >= 0; }
  const std::string& path() const { return path_; }
  int listen_fd() const { return listen_fd_; }
  std::size_t client_count() const { return clients_.size(); }

  // Answers one request line as the server would (without a connection); exposed for tests and
  // for callers that carry requests some other way. A deferred reply (Reply::deferred) gives ""
  // here: only connections get the completion.
  std::string handle_line(const std::string& line);

  // Deferred replies. A handler that returns Reply::deferred(token) leaves its client waiting:
  // the server reads no further request from that client (replies stay in request order) until
  // complete(token, reply) queues the answer (with the request's "id"), then carries on with the
  // client's next requests. False when no client waits on `token` (it disconnected meanwhile).
  bool complete(uint64_t token, const Reply& reply);
  std::size_t pending_count() const;

 private:
  using Clock = std::chrono::steady_clock;

  struct Client {
    int fd = -1;
    uint64_t waiting = 0;         // token of the deferred reply it waits for; 0: none
    nlohmann::json waiting_id;    // that request's "id", echoed in the reply (null: none)
    std::string in;
    std::string out;
    std::size_t out_offset = 0;
    bool closing = false;  // no more reading; close once `out` is flushed
    bool eof_seen = false;  // the client closed its side (its last requests may still wait)
    Clock::time_point last_activity;
  };

  // handle_line for a connection: sets *pending (and *id) when the reply is deferred.
  std::string dispatch(const std::string& line, uint64_t* pending, nlohmann::json* id);
  void accept_clients();
  void reject_client(int fd, const std::string& message);
  void read_client(Client& c);
  void process_input(Client& c, bool eof);
  void flush_client(Client& c);
  bool wants_read(const Client& c) const;
  bool wants_write(const Client& c) const { return c.out_offset < c.out.size(); }
  int effective_timeout(int timeout_ms, Clock::time_point now) const;
  void expire_idle(Clock::time_point now);
  void close_client(Client& c);
  void reap_closed();

  ServerLimits limits_;
  std::map<std::string, Handler, std::less<>> handlers_;
  std::vector<Client> clients_;
  int listen_fd_ = -1;
  std::string path_;
  dev_t socket_dev_ = 0;  // identity of the socket file we created, so we unlink only our own
  ino_t socket_ino_ = 0;
};

}  // namespace sluice::ctl
