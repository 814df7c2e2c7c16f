#include "controlplane/ctl/protocol.h"

#include <utility>

namespace sluice::ctl {

Reply Reply::success(nlohmann::json result) {
  Reply r;
  r.ok = true;
  r.result = std::move(result);
  return r;
}

Reply Reply::failure(std::string message) {
  Reply r;
  r.ok = false;
  r.error = std::move(message);
  return r;
}

Reply Reply::deferred(uint64_t token) {
  Reply r;
  r.pending = token;
  return r;
}

nlohmann::json Reply::to_json() const {
  if (ok) return {{"ok", true}, {"result", result}};
  return {{"ok", false}, {"error", error}};
}

std::string encode_line(const nlohmann::json& message) {
  std::string line = message.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  line.push_back('\n');
  return line;
}

}  // namespace sluice::ctl
