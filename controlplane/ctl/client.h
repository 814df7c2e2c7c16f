// The client side of the control socket (sluicectl, tests, scripts).
#pragma once

#include <optional>
#include <string>

#include <nlohmann/json.hpp>

namespace sluice::ctl {

// One connection; several requests may be sent on it in turn. Timeouts are in milliseconds
// (negative: wait forever).
class Connection {
 public:
  Connection() = default;
  ~Connection();
  Connection(Connection&& other) noexcept;
  Connection& operator=(Connection&& other) noexcept;
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  bool connect(const std::string& socket_path, std::string* err, int timeout_ms = 5000);
  // Sends `req` as one line and returns the parsed response object.
  std::optional<nlohmann::json> request(const nlohmann::json& req, std::string* err,
                                        int timeout_ms = 5000);
  void close();
  bool connected() const { return fd_ >= 0; }

 private:
  int fd_ = -1;
  std::string buffer_;  // bytes received past the last response line
};

// Connects, sends one request and returns the parsed response object
// ({"ok": true, "result": ...} or {"ok": false, "error": ...}); nullopt with `err` set when the
// server cannot be reached or answers something that is not a response.
std::optional<nlohmann::json> request(const std::string& socket_path, const nlohmann::json& req,
                                      std::string* err, int timeout_ms = 5000);

}  // namespace sluice::ctl
