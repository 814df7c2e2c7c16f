// Control socket protocol: one JSON object per line in each direction.
//
//   request:  {"command": "status", "args": {...}}            ("id" is optional and echoed back)
//   response: {"ok": true, "result": <json>} | {"ok": false, "error": "message"}
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include <nlohmann/json.hpp>

namespace sluice::ctl {

// The default control socket, as in gateway.yaml `control.socket`.
inline constexpr const char* kDefaultSocketPath = "/run/sluice/sluice.sock";

// A request line longer than this is answered with an error and the connection closed.
inline constexpr std::size_t kMaxRequestBytes = 64 * 1024;

// A response line longer than this is refused by the client (conntrack dumps can be large).
inline constexpr std::size_t kMaxResponseBytes = 64 * 1024 * 1024;

// What a handler answers.
struct Reply {
  bool ok = true;
  nlohmann::json result;  // meaningful when ok
  std::string error;      // meaningful when !ok
  // Non-zero: no answer yet. The server sends the reply when its owner calls
  // Server::complete(token, reply) (a reload waits for its policy compile that way).
  uint64_t pending = 0;

  static Reply success(nlohmann::json result = nlohmann::json::object());
  static Reply failure(std::string message);
  // `token`: non-zero, chosen by the handler's owner, unique among the replies it defers.
  static Reply deferred(uint64_t token);

  // The wire form: {"ok": true, "result": ...} or {"ok": false, "error": "..."}.
  nlohmann::json to_json() const;
};

// Serialises one protocol line (with its trailing '\n'). Invalid UTF-8 in strings (names taken
// from packets, say) is replaced rather than thrown on.
std::string encode_line(const nlohmann::json& message);

}  // namespace sluice::ctl
